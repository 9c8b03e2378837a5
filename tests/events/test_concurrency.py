"""Concurrent writers and a paging reader, and the late-commit rule of replay."""

from __future__ import annotations

import asyncio
import uuid

import psycopg

from prefect_atlas import DatabaseBlock, EventStore, NewEvent, StoredEvent

WRITERS, PER_WRITER, ENTITIES = 10, 1000, 50


async def test_concurrent_writers_and_live_replay(store: EventStore, db: DatabaseBlock) -> None:
    done = asyncio.Event()

    async def writer(w: int) -> None:
        if w % 2:  # half write one event per call, half in batches through COPY
            for i in range(PER_WRITER):
                await store.aemit("load.single", f"ent{(w * 7 + i) % ENTITIES}", {"w": w, "i": i})
        else:
            for start in range(0, PER_WRITER, 50):
                await store.aemit_many(
                    [
                        NewEvent("load.batch", f"ent{(w * 7 + i) % ENTITIES}", {"w": w, "i": i})
                        for i in range(start, start + 50)
                    ]
                )

    seen: list[StoredEvent] = []

    async def reader() -> None:
        after: int | None = None
        while True:
            finished = done.is_set()
            async for event in store.replay(after_position=after, batch_size=97):
                seen.append(event)
                after = event.position
            if finished:
                return
            await asyncio.sleep(0.005)

    async with asyncio.timeout(240):
        reading = asyncio.create_task(reader())
        await asyncio.gather(*(writer(w) for w in range(WRITERS)))
        done.set()
        await reading

    total = WRITERS * PER_WRITER
    assert len(seen) == total
    assert len({e.event_id for e in seen}) == total
    per_entity: dict[str, list[int]] = {}
    for event in seen:
        per_entity.setdefault(event.entity_id, []).append(event.version)
    assert len(per_entity) == ENTITIES
    for versions in per_entity.values():
        assert versions == list(range(1, len(versions) + 1))  # replay order agrees with versions
    rows = await db.afetch_all(
        "SELECT entity_id, array_agg(version ORDER BY version) FROM atlas.events GROUP BY 1"
    )
    for entity, versions in rows:
        assert versions == list(range(1, len(versions) + 1)), entity


async def test_replay_waits_for_an_earlier_transaction_to_commit(
    store: EventStore, database_url: str
) -> None:
    slow = await psycopg.AsyncConnection.connect(database_url)
    late_id = uuid.uuid4()
    try:
        # A writer that started first and commits last.
        await slow.execute(
            "SELECT atlas.append_event(%s, 'race.late', 'a', '{}', now(), NULL)", [late_id]
        )
        quick = await store.aemit("race.quick", "b", {})
        before = [e async for e in store.replay()]
        assert before == []  # the quick event waits: an earlier transaction is in flight
        await slow.commit()
    finally:
        await slow.close()
    after = [e async for e in store.replay()]
    assert [e.event_id for e in after] == [late_id, quick]
