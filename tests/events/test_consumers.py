"""Checkpointed consumers on a real PostgreSQL: exactly once across crashes, groups, dead
letters, late commits, lag."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection

from prefect_atlas import DatabaseBlock, EventStore, NewEvent
from prefect_atlas.events.consumers import ConsumeResult
from prefect_atlas.events.models import StoredEvent

PROJECTION = """
CREATE TABLE public.seen (
    event_id UUID PRIMARY KEY,
    entity_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    times INTEGER NOT NULL DEFAULT 1
)
"""


async def project(events: Sequence[StoredEvent], conn: AsyncConnection[Any]) -> None:
    """A projection in PostgreSQL: one row per event, `times` counts deliveries."""
    cur = conn.cursor()
    await cur.executemany(
        "INSERT INTO public.seen (event_id, entity_id, version) VALUES (%s, %s, %s) "
        "ON CONFLICT (event_id) DO UPDATE SET times = seen.times + 1",
        [(e.event_id, e.entity_id, e.version) for e in events],
    )


async def test_consume_processes_each_event_once_and_resumes_after_its_checkpoint(
    store: EventStore, db: DatabaseBlock
) -> None:
    await db.aexecute(PROJECTION)
    await store.aemit_many([NewEvent("c.made", f"e{i % 7}", {"i": i}) for i in range(1000)])
    first = await store.aconsume("proj", project, batch_size=300)
    assert isinstance(first, ConsumeResult)
    assert (first.processed, first.batches, first.dead_lettered, first.caught_up) == (
        1000,
        4,
        0,
        True,
    )
    again = await store.aconsume("proj", project, batch_size=300)
    assert (again.processed, again.batches) == (0, 0)
    await store.aemit_many([NewEvent("c.made", f"e{i % 7}", {"i": i}) for i in range(10)])
    third = await store.aconsume("proj", project, batch_size=300)
    assert third.processed == 10
    assert await db.afetch_one("SELECT count(*), max(times) FROM public.seen") == (1010, 1)
    [lag] = await store.aconsumer_lag("proj")
    assert (lag.processed, lag.events_behind, lag.seconds_behind) == (1010, 0, 0.0)
    assert (lag.position, lag.xid) == (third.position, third.xid)
