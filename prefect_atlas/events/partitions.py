"""The event log's daily partitions: listing them, creating them ahead, dropping old ones.

``atlas.events`` is partitioned by range of ``recorded_at`` (server time), one partition per
UTC day named ``events_pYYYYMMDD``, plus a DEFAULT partition (``events_default``) that takes
rows no day partition covers; creating that day's partition moves them into it. Event-id
idempotency and per-entity versions live in two narrow unpartitioned tables
(``atlas.event_ids``, ``atlas.entity_versions``) that a drop leaves alone, so both stay exact
for the whole history (see ``docs/events.md``, "Partitions").

The SQL is in migration 0008 (``atlas.ensure_event_partitions``,
``atlas.create_event_partition``, the ``atlas.event_partitions`` view); ``setup()`` runs
:func:`aensure_partitions`' function on every call, and the maintenance flow runs it daily.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import AsyncConnection, sql

__all__ = ["Partition", "adrop_partition", "aensure_partitions", "alist_partitions"]

# A partition that ends less than this long ago may still get rows from a transaction that
# began before its end (``recorded_at`` is the transaction's start time): never dropped.
_SETTLE = timedelta(hours=1)
_LOCK_TIMEOUT = "10s"
_NAME_RE = re.compile(r"^events_p\d{8}$")


@dataclass(frozen=True, slots=True)
class Partition:
    """One partition of ``atlas.events``: the events with ``lower <= recorded_at < upper``."""

    name: str
    """The table's name in the ``atlas`` schema, such as ``events_p20261202``."""
    lower: datetime
    """The inclusive lower bound of ``recorded_at`` (UTC)."""
    upper: datetime
    """The exclusive upper bound of ``recorded_at`` (UTC)."""


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


async def alist_partitions(conn: AsyncConnection[Any]) -> list[Partition]:
    """The day partitions of ``atlas.events``, ordered by ``lower`` (the DEFAULT one left out)."""
    cur = await conn.execute(
        "SELECT name, lower_bound, upper_bound FROM atlas.event_partitions "
        "WHERE NOT is_default ORDER BY lower_bound"
    )
    return [
        Partition(name, _utc(lower), _utc(upper)) for name, lower, upper in await cur.fetchall()
    ]


async def aensure_partitions(
    conn: AsyncConnection[Any],
    *,
    ahead: timedelta = timedelta(days=7),
    now: datetime | None = None,
) -> list[Partition]:
    """Create the day partitions from ``now``'s day through ``now + ahead``'s day (UTC) that
    do not exist yet; returns those created (empty when all existed).

    Rows of a created day found in the DEFAULT partition move into it, in the same
    transaction. Runs in a transaction of its own (committed before returning, unless
    ``conn`` is inside one already), waiting at most 10 s for its locks.
    """
    if ahead < timedelta(0):
        raise ValueError(f"ahead must not be negative, got {ahead}")
    when = datetime.now(UTC) if now is None else now
    if when.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    async with conn.transaction():
        await conn.execute(
            sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(_LOCK_TIMEOUT))
        )
        cur = await conn.execute(
            "SELECT name, lower_bound, upper_bound FROM atlas.ensure_event_partitions(%s, %s)",
            [ahead, when],
        )
        rows = await cur.fetchall()
    return [Partition(name, _utc(lower), _utc(upper)) for name, lower, upper in rows]


async def adrop_partition(conn: AsyncConnection[Any], partition: Partition) -> None:
    """Detach and drop ``partition``, recording what it held in
    ``atlas.dropped_event_partitions``.

    The ids and versions of its events stay in ``atlas.event_ids`` and
    ``atlas.entity_versions``: re-emitting one of those ids still stores nothing, and the
    entities' next versions continue after them. Refuses a partition that does not exist
    (with the given bounds), the DEFAULT one, or one whose upper bound is less than an hour
    ago or ahead (it may still receive events). Archive it first if you need its events.
    """
    if not _NAME_RE.match(partition.name):
        raise ValueError(f"not a day partition of atlas.events: {partition.name!r}")
    async with conn.transaction():
        await conn.execute(
            sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(_LOCK_TIMEOUT))
        )
        cur = await conn.execute(
            "SELECT lower_bound, upper_bound, upper_bound <= now() - %s FROM "
            "atlas.event_partitions WHERE name = %s AND NOT is_default",
            [_SETTLE, partition.name],
        )
        row = await cur.fetchone()
        if row is None:
            raise ValueError(f"atlas.events has no partition {partition.name!r}")
        lower, upper, settled = row
        if (_utc(lower), _utc(upper)) != (_utc(partition.lower), _utc(partition.upper)):
            raise ValueError(
                f"partition {partition.name!r} covers [{_utc(lower)}, {_utc(upper)}), "
                f"not [{partition.lower}, {partition.upper})"
            )
        if not settled:
            raise ValueError(
                f"partition {partition.name!r} ends at {_utc(upper)}: too recent to drop (it "
                "may still receive events)"
            )
        table = sql.Identifier("atlas", partition.name)
        # Detached first (waits for the transactions that use it), then counted and dropped.
        await conn.execute(sql.SQL("ALTER TABLE atlas.events DETACH PARTITION {}").format(table))
        await conn.execute(
            sql.SQL(
                "INSERT INTO atlas.dropped_event_partitions AS d (name, lower_bound, upper_bound, "
                "events, first_position, last_position) SELECT {name}, {lower}, {upper}, "
                "count(*), min(position), max(position) FROM {table} "
                "ON CONFLICT (name) DO UPDATE SET events = d.events + excluded.events, "
                "first_position = least(d.first_position, excluded.first_position), "
                "last_position = greatest(d.last_position, excluded.last_position), "
                "dropped_at = now()"
            ).format(
                name=sql.Literal(partition.name),
                lower=sql.Literal(lower),
                upper=sql.Literal(upper),
                table=table,
            )
        )
        await conn.execute(sql.SQL("DROP TABLE {}").format(table))
