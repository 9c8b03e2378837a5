"""Prefect tasks for the event log.

Why tasks and not only the store: a pipeline step that emits events shows up in the Prefect
UI with a readable name, and takes "a block name or a block" so a flow can pass either.
Writes are never cached (``NO_CACHE``): a cached result would skip the write on the next run.
Row writes live in :mod:`prefect_atlas.tasks.database`. ``consume_events`` runs a
checkpointed consumer (a projection kept current by a scheduled deployment).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from prefect.cache_policies import NO_CACHE

from prefect_atlas._blocks import resolve_block
from prefect_atlas._deprecation import moved_attribute
from prefect_atlas.database import DatabaseBlock
from prefect_atlas.events.consumers import ConsumeResult, Handler, RebuildHook
from prefect_atlas.events.store import EventStore, NewEvent
from prefect_atlas.tasks._dual import dual_task


@dual_task(name="emit-event", task_run_name="emit {event_type}", cache_policy=NO_CACHE, retries=0)
async def emit_event(
    event_type: str,
    entity_id: str,
    payload: Mapping[str, Any] | None = None,
    *,
    database: str | DatabaseBlock = "default",
) -> uuid.UUID:
    """Append one event (durable: spooled locally if PostgreSQL is down, never fails the flow on
    that)."""
    db = await resolve_block(DatabaseBlock, database)
    return await EventStore(db).aemit(event_type, entity_id, payload)


@dual_task(name="emit-events", cache_policy=NO_CACHE, retries=0)
async def emit_events(
    events: Iterable[NewEvent | Mapping[str, Any]], *, database: str | DatabaseBlock = "default"
) -> list[uuid.UUID]:
    """Append a batch of events in one transaction; returns their ids in order."""
    db = await resolve_block(DatabaseBlock, database)
    return await EventStore(db).aemit_many(events)


@dual_task(name="consume-events", task_run_name="consume {name}", cache_policy=NO_CACHE, retries=0)
async def consume_events(
    name: str,
    handler: Handler,
    *,
    database: str | DatabaseBlock = "default",
    event_types: Sequence[str] | None = None,
    batch_size: int = 500,
    group_size: int = 1,
    member: int = 0,
    max_attempts: int = 5,
    rebuild: bool = False,
    on_rebuild: RebuildHook | None = None,
) -> ConsumeResult:
    """Run checkpointed consumer ``name`` up to the commit-safe head of the log and return.

    ``handler(batch, conn)`` gets the events after the consumer's checkpoint; what it writes
    on ``conn`` commits with the checkpoint (exactly once for a projection in PostgreSQL).
    A scheduled deployment calling this every few minutes keeps a projection current; see
    :meth:`EventStore.aconsume` for groups, dead letters and ``rebuild``.
    """
    db = await resolve_block(DatabaseBlock, database)
    return await EventStore(db, mode="strict").aconsume(
        name,
        handler,
        event_types=event_types,
        batch_size=batch_size,
        group_size=group_size,
        member=member,
        max_attempts=max_attempts,
        rebuild=rebuild,
        on_rebuild=on_rebuild,
    )


def __getattr__(name: str) -> Any:
    # ``upsert_rows`` moved to prefect_atlas.tasks.database; the old import path still works
    return moved_attribute(
        __name__, name, "prefect_atlas.tasks.database", ("upsert_rows", "UPSERT_BATCH")
    )
