"""Fixtures of the Discord tests: a fresh Discord-like server per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.discord._server import DiscordServer


@pytest.fixture
def discord_server() -> Iterator[DiscordServer]:
    server = DiscordServer().start()
    try:
        yield server
    finally:
        server.stop()
