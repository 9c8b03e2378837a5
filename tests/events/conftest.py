"""Fixtures of the event-store tests: a migrated database and a store with its own spool."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from prefect_atlas import DatabaseBlock
from prefect_atlas.events import EventStore


@pytest.fixture
async def store(db: DatabaseBlock, tmp_path: Path) -> AsyncIterator[EventStore]:
    await db.asetup()
    event_store = EventStore(db, spool_path=str(tmp_path / "spool.sqlite"))
    try:
        yield event_store
    finally:
        event_store.close()
