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
from time import monotonic
from typing import Any

import orjson
import psycopg
from psycopg import AsyncConnection, sql

from prefect_atlas.events.models import StoredEvent, stored_event_of

# Writers NOTIFY this channel (a wake-up, empty payload); subscribers LISTEN on it.
CHANNEL = "atlas_events"

Connect = Callable[[], AbstractAsyncContextManager[AsyncConnection[Any]]]
Replay = Callable[..., AsyncIterator[StoredEvent]]

# What every reader of the log (replay, consumers, the relay) selects, in the order
# stored_event() takes it: the payload as JSON text (orjson parses it faster than psycopg's
# jsonb loader) and the xid as text (xid8 has no Python type). The text xid is renamed: an
# output column named `xid` would be what `ORDER BY xid` sorts, as text ('10' before '9'),
# and a reader paging by (xid, position) would then skip events.
EVENT_COLUMNS = (
    "position, event_id, event_type, entity_id, version, payload::text, occurred_at, "
    "recorded_at, xid::text AS xid_text"
)
_loads = orjson.loads

# A long replay streams through one server-side cursor (one query, one plan, one portal over
# the partitions) rather than a LIMIT query per batch, which costs about a millisecond to plan
# and start over every partition. The cursor's transaction holds a snapshot (vacuum's horizon)
# and ACCESS SHARE on the partitions, which a partition drop waits for, and with it every
# writer queued behind the drop: so a cursor lives at most _STREAM_SECONDS, or
# _STREAM_EVENTS events, and only while the caller is quick. A caller that spent more than
# _SLOW_CALLER seconds on a batch gets its next batch by a query of its own, read before it
# is handed over (no transaction stays open while it works), as does every first batch: most
# reads (a subscriber's wake-up) are one batch, and a plain query is their cheapest.
_STREAM_SECONDS = 1.0
_STREAM_EVENTS = 100_000
_SLOW_CALLER = 0.1
_CURSOR = "atlas_replay"


def stored_event(row: Sequence[Any]) -> StoredEvent:
    """A row of :data:`EVENT_COLUMNS` as the event readers yield."""
    position, event_id, event_type, entity, version, payload, occurred, recorded, xid = row
    return stored_event_of(
        position,
        event_id,
        event_type,
        entity,
        version,
        _loads(payload),
        occurred,
        recorded,
        int(xid),
    )


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
    stream: bool = True,
) -> AsyncGenerator[StoredEvent, None]:
    """See :meth:`EventStore.replay`.

    ``recorded_since``/``recorded_until`` filter ``recorded_at`` (inclusive / exclusive), the
    partition key: only the partitions of that range are read. ``after_cursor`` (xid,
    position) instead of a position resumes after an event that is no longer in the table
    (an archived one). ``stream=False`` reads every batch by a query of its own (a pool of
    one connection: a streaming cursor would hold it while the caller's own queries wait).
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
        "SELECT {} FROM atlas.events WHERE {} ORDER BY events.xid, events.position LIMIT {}"
    ).format(sql.SQL(EVENT_COLUMNS), sql.SQL(" AND ").join(conditions), sql.Placeholder("limit"))
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
    streamable, stream = stream, False  # the first batch is read by a query of its own
    while True:
        if not stream:
            async with connection() as conn:
                cur = await conn.execute(query, params)
                rows = await cur.fetchall()
            started = monotonic()
            for row in rows:
                yield stored_event(row)
            if len(rows) < batch_size:
                return
            params["cx"], params["cp"] = rows[-1][8], rows[-1][0]
            stream = streamable and monotonic() - started <= _SLOW_CALLER
            continue
        run = batch_size * max(1, _STREAM_EVENTS // batch_size)
        async with connection() as conn, conn.cursor(_CURSOR) as cur:
            await cur.execute(query, {**params, "limit": run})
            opened = monotonic()
            read = 0
            while True:
                rows = await cur.fetchmany(batch_size)
                read += len(rows)
                started = monotonic()
                for row in rows:
                    yield stored_event(row)
                if len(rows) < batch_size and read < run:
                    return  # the end of the log, not of the cursor's run
                if rows:
                    params["cx"], params["cp"] = rows[-1][8], rows[-1][0]
                now = monotonic()
                stream = now - started <= _SLOW_CALLER
                if read >= run or not stream or now - opened > _STREAM_SECONDS:
                    break


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
