"""Reading the log back: commit-safe paging (``replay``) and live following (``subscribe``).

Both take the store's ``connection`` factory (a pooled connection within the store's
connect timeout); ``EventStore.replay`` and ``EventStore.subscribe`` hand theirs in, and
``subscribe`` reads through the store's ``replay`` (its ``read``).

The log is partitioned by day of ``recorded_at`` (see ``partitions.py``); the queries are those
of one table: PostgreSQL answers ``ORDER BY xid, position`` with a Merge Append over the
partitions' primary keys, so the commit-safe order is global, and a ``recorded_at`` range
reads only its partitions.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, suppress
from datetime import datetime
from typing import Any

import orjson
import psycopg
from psycopg import AsyncConnection, sql

from prefect_atlas.events.models import StoredEvent

# Writers NOTIFY this channel (a wake-up, empty payload); subscribers LISTEN on it.
CHANNEL = "atlas_events"

Connect = Callable[[], AbstractAsyncContextManager[AsyncConnection[Any]]]
Replay = Callable[..., AsyncIterator[StoredEvent]]


async def replay(
    connection: Connect,
    *,
    event_types: Sequence[str] | None,
    entity_id: str | None,
    since: datetime | None,
    until: datetime | None,
    after_position: int | None,
    batch_size: int,
    recorded_since: datetime | None = None,
    recorded_until: datetime | None = None,
    after_cursor: tuple[int, int] | None = None,
) -> AsyncGenerator[StoredEvent, None]:
    """See :meth:`EventStore.replay`.

    ``recorded_since``/``recorded_until`` filter ``recorded_at`` (inclusive / exclusive), the
    partition key: only the partitions of that range are read. ``after_cursor`` (xid,
    position) instead of a position resumes after an event that is no longer in the table
    (an archived one).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    conditions: list[sql.Composable] = [
        sql.SQL("xid < pg_snapshot_xmin(pg_current_snapshot())"),
        sql.SQL("(xid, position) > ({}::xid8, {})").format(
            sql.Placeholder("cx"), sql.Placeholder("cp")
        ),
    ]
    params: dict[str, Any] = {"cx": "0", "cp": 0, "limit": batch_size}
    if event_types:
        conditions.append(sql.SQL("event_type = ANY({})").format(sql.Placeholder("types")))
        params["types"] = list(event_types)
    if entity_id is not None:
        conditions.append(sql.SQL("entity_id = {}").format(sql.Placeholder("entity")))
        params["entity"] = entity_id
    if since is not None:
        conditions.append(sql.SQL("occurred_at >= {}").format(sql.Placeholder("since")))
        params["since"] = since
    if until is not None:
        conditions.append(sql.SQL("occurred_at < {}").format(sql.Placeholder("until")))
        params["until"] = until
    if recorded_since is not None:
        conditions.append(sql.SQL("recorded_at >= {}").format(sql.Placeholder("rsince")))
        params["rsince"] = recorded_since
    if recorded_until is not None:
        conditions.append(sql.SQL("recorded_at < {}").format(sql.Placeholder("runtil")))
        params["runtil"] = recorded_until
    query = sql.SQL(
        "SELECT position, event_id, event_type, entity_id, version, payload::text, occurred_at, "
        "recorded_at, xid::text AS xid_text FROM atlas.events WHERE {} ORDER BY events.xid, "
        "events.position LIMIT {}"
    ).format(sql.SQL(" AND ").join(conditions), sql.Placeholder("limit"))
    if after_cursor is not None:
        params["cx"], params["cp"] = str(after_cursor[0]), after_cursor[1]
    elif after_position is not None:
        async with connection() as conn:
            # Probes the partitions newest first (see atlas.event_xid in migration 0008).
            cur = await conn.execute("SELECT atlas.event_xid(%s)::text", [after_position])
            row = await cur.fetchone()
        if row is None or row[0] is None:
            raise ValueError(
                f"after_position {after_position} is not the position of a stored event"
            )
        params["cx"], params["cp"] = row[0], after_position
    while True:
        async with connection() as conn:
            cur = await conn.execute(query, params)
            rows = await cur.fetchall()
        for (
            position,
            event_id,
            event_type,
            entity,
            version,
            payload,
            occurred,
            recorded,
            xid,
        ) in rows:
            yield StoredEvent(
                position=position,
                event_id=event_id,
                event_type=event_type,
                entity_id=entity,
                version=version,
                payload=orjson.loads(payload),
                occurred_at=occurred,
                recorded_at=recorded,
                xid=int(xid),
            )
        if len(rows) < batch_size:
            return
        params["cx"], params["cp"] = rows[-1][8], rows[-1][0]


async def subscribe(
    connection: Connect,
    read: Replay,
    *,
    event_types: Sequence[str] | None,
    entity_id: str | None,
    after_position: int | None,
    poll_interval: float,
    batch_size: int,
) -> AsyncGenerator[StoredEvent, None]:
    """See :meth:`EventStore.subscribe`."""
    if poll_interval <= 0:
        raise ValueError(f"poll_interval must be > 0 seconds, got {poll_interval}")
    cursor = after_position
    async with connection() as listener:
        await listener.set_autocommit(True)
        await listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
        try:
            while True:
                async for event in read(
                    event_types=event_types,
                    entity_id=entity_id,
                    after_position=cursor,
                    batch_size=batch_size,
                ):
                    cursor = event.position
                    yield event
                async for _ in listener.notifies(timeout=poll_interval, stop_after=1):
                    pass
        finally:
            if not listener.closed and not listener.broken:
                with suppress(psycopg.Error):
                    await listener.execute("UNLISTEN *")
                    await listener.set_autocommit(False)
