"""store.subscribe(): LISTEN/NOTIFY as a wake-up, the table (with replay's rule) as the truth."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from contextlib import aclosing
from pathlib import Path

import psycopg
import pytest

from prefect_atlas import DatabaseBlock, EventStore, NewEvent, StoredEvent


async def _collect(
    store: EventStore,
    into: list[StoredEvent],
    count: int,
    *,
    poll_interval: float,
    entity_id: str | None = None,
    after_position: int | None = None,
) -> None:
    subscription = store.subscribe(
        poll_interval=poll_interval, entity_id=entity_id, after_position=after_position
    )
    async with aclosing(subscription) as events:
        async for event in events:
            into.append(event)
            if len(into) == count:
                return


async def _until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(60):  # a guard against hangs, not a timing assertion
        while not condition():
            await asyncio.sleep(0.01)


async def test_subscribe_yields_backlog_then_live_events_woken_by_notify(store: EventStore) -> None:
    before = await store.aemit("sub.before", "a", {"n": 0})
    got: list[StoredEvent] = []
    # A poll interval of an hour: only a NOTIFY can wake the subscriber within the guard.
    reader = asyncio.create_task(_collect(store, got, 1 + 3 + 5, poll_interval=3600))
    await _until(lambda: len(got) == 1)
    singles = [await store.aemit("sub.single", "a", {"n": n}) for n in (1, 2, 3)]
    await _until(lambda: len(got) == 4)
    batch = await store.aemit_many([NewEvent("sub.batch", f"b{i % 2}", {"i": i}) for i in range(5)])
    async with asyncio.timeout(60):
        await reader
    assert [e.event_id for e in got] == [before, *singles, *batch]
    assert [e.version for e in got if e.entity_id == "a"] == [1, 2, 3, 4]
    assert [e.version for e in got if e.entity_id == "b0"] == [1, 2, 3]


async def test_subscribe_filters_and_resumes_after_a_position(store: EventStore) -> None:
    await store.aemit("sub.x", "keep", {})
    second = await store.aemit("sub.x", "keep", {})
    await store.aemit("sub.x", "other", {})
    first_seen = await anext(store.replay(entity_id="keep"))
    got: list[StoredEvent] = []
    reader = asyncio.create_task(
        _collect(
            store, got, 2, entity_id="keep", after_position=first_seen.position, poll_interval=3600
        )
    )
    await _until(lambda: len(got) == 1)
    third = await store.aemit("sub.x", "keep", {})
    async with asyncio.timeout(60):
        await reader
    assert [e.event_id for e in got] == [second, third]


async def test_subscribe_waits_for_a_late_commit_and_polls_without_notify(
    db: DatabaseBlock, database_url: str, tmp_path: Path
) -> None:
    await db.asetup()
    quiet = EventStore(db, spool_path=str(tmp_path / "spool.sqlite"), notify=False)
    got: list[StoredEvent] = []
    reader = asyncio.create_task(_collect(quiet, got, 2, poll_interval=0.05))
    slow = await psycopg.AsyncConnection.connect(database_url)
    late_id = uuid.uuid4()
    try:
        # A writer that started first and commits last (and does not notify either).
        await slow.execute(
            "SELECT atlas.append_event(%s, 'race.late', 'a', '{}', now(), NULL, false)", [late_id]
        )
        quick = await quiet.aemit("race.quick", "b", {})
        await asyncio.sleep(0.3)  # several polls happen; none may yield past the open transaction
        assert got == []
        await slow.commit()
    finally:
        await slow.close()
    async with asyncio.timeout(60):
        await reader
    assert [e.event_id for e in got] == [late_id, quick]
    quiet.close()


async def test_subscribe_rejects_a_bad_poll_interval(store: EventStore) -> None:
    with pytest.raises(ValueError, match="poll_interval"):
        async for _ in store.subscribe(poll_interval=0):
            pass
