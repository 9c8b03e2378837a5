"""One Discord budget for every process: the rate-limit state in the Atlas database.

Real child processes (``tests.discord._storm``) post to one webhook of the local server
(5 requests per 2 s) at the same instant. Without shared state each process respects only what
it saw, and together they provoke 429s; with ``state_database`` every request is made knowing
the previous answer, whichever process got it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path

import pytest
from prefect import flow
from pydantic import SecretStr

from prefect_atlas import Channel, DatabaseBlock, DiscordBlock
from prefect_atlas._blocks import resolve_block
from prefect_atlas.discord.shared_limits import SharedRateLimiter
from prefect_atlas.hooks import BLOCK_ENV, AlertMemory, discord_hook
from tests.discord._server import DiscordServer
from tests.discord._storm_run import run_storm


def test_three_processes_share_one_budget(discord_server: DiscordServer, database_url: str) -> None:
    hook = discord_server.add_webhook()
    result = run_storm(discord_server, hook, database_url, processes=3, per_process=5)
    assert [c["delivered"] for c in result.children] == [5, 5, 5], result.children
    assert result.lost == 0 and result.duplicates == 0 and len(hook.received) == 15
    assert result.rate_limited == 0
    assert sum(c["attempts"] for c in result.children) == 15  # not one request wasted
    assert result.seconds <= 1.15 * result.floor + 0.3, (result.seconds, result.floor)


async def test_budget_state_is_in_the_database(
    discord_server: DiscordServer, database_url: str
) -> None:
    hook = discord_server.add_webhook()
    db = DatabaseBlock(url=SecretStr(database_url))
    block = DiscordBlock(
        alerts=SecretStr(discord_server.url(hook)), allowed_hosts=["127.0.0.1"], state_database=db
    )
    async with block:
        deliveries = await asyncio.gather(
            *(block.asend(f"a{i}", channel=Channel.ALERTS) for i in range(7))
        )
        limiter = block._runtime().limiter
        assert isinstance(limiter, SharedRateLimiter) and limiter.shared_turns == 7
    assert all(d.delivered and d.attempts == 1 for d in deliveries)
    assert hook.rate_limited == 0
    row = await db.afetch_one(
        'SELECT remaining, "limit" FROM atlas.discord_ratelimits WHERE bucket = %s', [hook.id]
    )
    assert row == (3, 5)  # 7 sends: one full window of 5, then 2 of the next
    await db.aclose()


async def test_unreachable_state_database_falls_back_to_the_local_budget(
    discord_server: DiscordServer, caplog: pytest.LogCaptureFixture
) -> None:
    hook = discord_server.add_webhook()
    dead = DatabaseBlock(url=SecretStr("postgresql://u:rl-secret@127.0.0.1:1/x"), timeout=1)
    block = DiscordBlock(
        alerts=SecretStr(discord_server.url(hook)), allowed_hosts=["127.0.0.1"], state_database=dead
    )
    with caplog.at_level(logging.WARNING, logger="prefect_atlas"):
        async with block:
            deliveries = await asyncio.gather(
                *(block.asend(f"a{i}", channel=Channel.ALERTS) for i in range(6))
            )
    assert (
        all(d.delivered for d in deliveries) and len(hook.received) == 6 and hook.rate_limited == 0
    )
    warnings = [r.getMessage() for r in caplog.records if "rate-limit state" in r.getMessage()]
    assert len(warnings) == 1  # once, then the local limiter for 30 s
    assert all("rl-secret" not in r.getMessage() for r in caplog.records)


def test_the_alert_memory_database_setting_shares_the_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ATLAS_ALERT_MEMORY_DATABASE", "atlas-prod")
    assert DiscordBlock()._state_database() == "atlas-prod"
    monkeypatch.delenv("ATLAS_ALERT_MEMORY_DATABASE")
    assert DiscordBlock()._state_database() is None


async def test_saved_block_with_nested_state_database_shares_the_budget_in_hooks(
    discord_server: DiscordServer,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """The nested DatabaseBlock survives save and load, and the hook's alert goes through it."""
    hook = discord_server.add_webhook()
    name = f"shared-{uuid.uuid4().hex[:8]}"
    await DiscordBlock(
        alerts=SecretStr(discord_server.url(hook)),
        allowed_hosts=["127.0.0.1"],
        state_database=DatabaseBlock(url=SecretStr(database_url)),
    ).asave(name)
    loaded = await resolve_block(DiscordBlock, name)
    assert isinstance(loaded.state_database, DatabaseBlock)
    monkeypatch.setenv(BLOCK_ENV, name)
    flow_name = f"budget-{uuid.uuid4().hex[:6]}"

    @flow(name=flow_name, on_failure=[discord_hook(memory=AlertMemory(tmp_path / "m.sqlite3"))])
    async def failing() -> None:
        raise ValueError("x")

    await failing(return_state=True)
    assert len(hook.received) == 1
    async with DatabaseBlock(url=SecretStr(database_url)) as db:
        row = await db.afetch_one(
            'SELECT remaining, "limit" FROM atlas.discord_ratelimits WHERE bucket = %s', [hook.id]
        )
    assert row == (4, 5)
