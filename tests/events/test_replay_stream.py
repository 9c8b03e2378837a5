"""Long replays stream through a server-side cursor; slow callers never hold one open."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from contextlib import aclosing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pydantic import SecretStr

from prefect_atlas import DatabaseBlock, EventStore, NewEvent, StoredEvent
from prefect_atlas.events import reader
from prefect_atlas.events.models import stored_event_of


async def _fill(store: EventStore, events: int) -> None:
    for start in range(0, events, 500):
        await store.aemit_many(
            [
                NewEvent("stream.filled", f"ent{i % 7}", {"i": i})
                for i in range(start, min(events, start + 500))
            ]
        )


async def _open_cursors(probe: psycopg.AsyncConnection[Any]) -> int:
    """Other sessions of this database idle inside a replay cursor's transaction."""
    cur = await probe.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND state = 'idle in transaction' "
        "AND query LIKE %s",
        [f'%"{reader._CURSOR}"%'],
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


def test_stored_event_of_builds_the_dataclass_it_replaces() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    values = (7, uuid.uuid4(), "a.b", "ent", 3, {"k": [1]}, when, when, 12)
    built = stored_event_of(*values)
    assert built == StoredEvent(*values)
    assert dataclasses.astuple(built) == values
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.position = 8  # type: ignore[misc]


async def test_a_long_replay_streams_through_cursors_in_commit_order(
    store: EventStore, db: DatabaseBlock, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reader, "_STREAM_EVENTS", 300)  # several cursors over 2,500 events
    await _fill(store, 2500)
    expected = [
        row[0]
        for row in await db.afetch_all("SELECT position FROM atlas.events ORDER BY xid, position")
    ]
    seen: list[int] = []
    streaming: list[int] = []
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as probe:
        async with aclosing(store.replay(batch_size=100)) as events:
            async for event in events:
                if len(seen) % 100 == 50:  # inside each batch
                    streaming.append(await _open_cursors(probe))
                seen.append(event.position)
        assert await _open_cursors(probe) == 0
    assert seen == expected
    assert streaming[0] == 0  # the first batch is a plain query
    assert streaming[1:] == [1] * 24  # then a cursor, reopened every 300 events


async def test_a_slow_caller_holds_no_cursor_while_it_works(
    store: EventStore, database_url: str
) -> None:
    await _fill(store, 400)
    open_at_batch: list[int] = []
    seen = 0
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as probe:
        async for _ in store.replay(batch_size=50):
            if seen % 50 == 0:
                batch = seen // 50
                open_at_batch.append(await _open_cursors(probe))
                if batch >= 3:  # quick for three batches, then slow
                    await asyncio.sleep(reader._SLOW_CALLER + 0.05)
            seen += 1
    assert seen == 400
    # The first batch is a plain query, the quick caller then streams; its first slow
    # batch still runs inside the cursor, which closes after it: from then on every batch
    # is read before it is handed over.
    assert open_at_batch == [0, 1, 1, 1, 0, 0, 0, 0]


async def test_leaving_a_stream_early_closes_its_cursor(
    store: EventStore, database_url: str
) -> None:
    await _fill(store, 1000)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as probe:
        async with aclosing(store.replay(batch_size=100)) as events:
            count = 0
            async for _ in events:
                count += 1
                if count == 250:
                    assert await _open_cursors(probe) == 1
                    break
        assert await _open_cursors(probe) == 0
    # The pool got its connection back, usable: a new replay reads everything.
    assert len([e async for e in store.replay(batch_size=100)]) == 1000


async def test_a_pool_of_one_never_streams_so_the_loop_can_query(
    database_url: str, tmp_path: Path
) -> None:
    single = DatabaseBlock(url=SecretStr(database_url), timeout=10, max_size=1)
    try:
        await single.asetup()
        store = EventStore(single, mode="strict", spool_path=str(tmp_path / "spool.sqlite"))
        try:
            await _fill(store, 300)
            async with await psycopg.AsyncConnection.connect(
                database_url, autocommit=True
            ) as probe:
                seen = 0
                async for event in store.replay(event_types=["stream.filled"], batch_size=50):
                    if seen % 50 == 10:  # the loop's own work on the one connection
                        assert await _open_cursors(probe) == 0
                        await store.aemit("stream.noted", "notes", {"after": event.position})
                    seen += 1
        finally:
            store.close()
        assert seen == 300
        rows = await single.afetch_all(
            "SELECT count(*) FROM atlas.events WHERE event_type = 'stream.noted'"
        )
        assert rows == [(6,)]
    finally:
        await single.aclose()
