"""``replay(include_archive=True)``: the archived partitions and the live table as one log.

Each archive (a partition's Parquet file, see :mod:`~prefect_atlas.events.archive`) is a
stream sorted by (xid, position), and so is the live replay; the streams are merged on that
key. Archives and the live table do interleave: ``recorded_at`` is a transaction's start and
``xid`` is given at its first write, so near a partition boundary a later partition can hold
smaller xids than an earlier one. The merge opens an archive only when it reaches the
archive's first cursor and closes it when it is used up, so at most the archives that overlap
at the frontier are in memory.

Why it never misses or repeats an event:

* A reader holds the archive lock shared (a transaction-level advisory lock on its own
  connection, no transaction id, no snapshot kept) from before it lists the archives until it
  ends; a partition's drop takes that lock exclusively, so no partition disappears between a
  reader's listing and its live reads.
* An archive recorded but whose partition is not dropped yet holds the same rows as the
  table: the merge drops an event whose (xid, position) equals the one just yielded.
* Archived events pass the commit-safe rule too: one whose xid is not below the snapshot's
  xmin (taken when the reader starts) ends the replay there, as the live reader does.

Filters (event types, entity, since/until on occurred_at, after_position) are the live
reader's, applied with pyarrow compute on each row group; whole archives outside the cursor
or the occurred_at window are skipped without being read.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import uuid
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from datetime import datetime, tzinfo
from functools import partial
from typing import TYPE_CHECKING, Any

import orjson

from prefect_atlas.events import reader
from prefect_atlas.events.archive import (
    ARCHIVE_LOCK_KEY,
    ArchiveRecord,
    Cursor,
    _arrow,
    alist_archives,
)
from prefect_atlas.events.models import StoredEvent
from prefect_atlas.exceptions import ArchiveError, ArchiveIntegrityError, VaultIntegrityError

if TYPE_CHECKING:
    from prefect_atlas.vault import VaultBlock


@dataclass(frozen=True)
class Filters:
    """The replay filters, as the live reader takes them."""

    event_types: Sequence[str] | None
    """Only these event types (None: all)."""
    entity_id: str | None
    """Only this entity (None: all)."""
    since: datetime | None
    """occurred_at at or after this."""
    until: datetime | None
    """occurred_at before this."""

    def may_match(self, record: ArchiveRecord) -> bool:
        """Whether the archive can hold a matching event (by its occurred_at range)."""
        if record.row_count == 0 or record.min_occurred_at is None:
            return False
        if self.since is not None and record.max_occurred_at < self.since:  # type: ignore[operator]
            return False
        return not (self.until is not None and record.min_occurred_at >= self.until)

    def mask(self, table: Any, after: Cursor | None) -> Any:
        """A boolean mask of the rows of ``table`` that pass (None: every row)."""
        pa, _, _, pc = _arrow()
        masks: list[Any] = []
        if self.event_types:
            masks.append(pc.is_in(table.column("event_type"), pa.array(list(self.event_types))))
        if self.entity_id is not None:
            masks.append(pc.equal(table.column("entity_id"), self.entity_id))
        stamp = pa.timestamp("us", tz="UTC")
        if self.since is not None:
            masks.append(
                pc.greater_equal(table.column("occurred_at"), pa.scalar(self.since, type=stamp))
            )
        if self.until is not None:
            masks.append(pc.less(table.column("occurred_at"), pa.scalar(self.until, type=stamp)))
        if after is not None:
            xids, positions = table.column("xid"), table.column("position")
            masks.append(
                pc.or_(
                    pc.greater(xids, after[0]),
                    pc.and_(pc.equal(xids, after[0]), pc.greater(positions, after[1])),
                )
            )
        if not masks:
            return None
        combined = masks[0]
        for more in masks[1:]:
            combined = pc.and_(combined, more)
        return combined


async def _fetch(vault: VaultBlock, record: ArchiveRecord) -> bytes:
    """The archive's Parquet bytes, checked against the recorded sha256."""
    try:
        data = await vault.afetch_bytes(record.parquet_key)
    except VaultIntegrityError as exc:  # the vault's own checksum caught it
        raise ArchiveIntegrityError(f"archive of {record.partition_name}: {exc}") from exc
    except Exception as exc:
        raise ArchiveError(
            f"archive of {record.partition_name} unreadable from {vault.describe()}: {exc}"
        ) from exc
    if data is None:
        raise ArchiveError(
            f"archive of {record.partition_name} ({record.parquet_key}) is missing from "
            f"{vault.describe()}; the archive vault must be the one that holds it "
            f"({record.vault})"
        )
    digest = await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest())
    if digest != record.sha256:
        raise ArchiveIntegrityError(
            f"archive of {record.partition_name}: {record.parquet_key} has sha256 {digest}, "
            f"recorded {record.sha256}"
        )
    return data


def _events(table: Any, tz: tzinfo) -> list[StoredEvent]:
    """StoredEvents of an archive table's rows (in a worker thread)."""
    columns = [table.column(name).to_pylist() for name in _COLUMNS]
    loads, make_uuid = orjson.loads, uuid.UUID
    return [
        StoredEvent(
            position=position,
            event_id=make_uuid(event_id),
            event_type=event_type,
            entity_id=entity,
            version=version,
            payload=loads(payload),
            occurred_at=occurred.astimezone(tz),
            recorded_at=recorded.astimezone(tz),
            xid=xid,
        )
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
        ) in zip(*columns, strict=True)
    ]


_COLUMNS = (
    "position",
    "event_id",
    "event_type",
    "entity_id",
    "version",
    "payload",
    "occurred_at",
    "recorded_at",
    "xid",
)


async def archived_events(
    vault: VaultBlock,
    record: ArchiveRecord,
    filters: Filters,
    after: Cursor | None,
    tz: tzinfo,
) -> AsyncGenerator[StoredEvent, None]:
    """The matching events of one archive after ``after``, in (xid, position) order."""
    pa, pq, _, _ = _arrow()
    data = await _fetch(vault, record)
    parquet = pq.ParquetFile(pa.BufferReader(data))
    xid_column = parquet.schema_arrow.get_field_index("xid")
    for index in range(parquet.metadata.num_row_groups):
        if after is not None:
            stats = parquet.metadata.row_group(index).column(xid_column).statistics
            if stats is not None and stats.has_min_max and stats.max < after[0]:
                continue  # the whole row group is before the cursor
        table = await asyncio.to_thread(parquet.read_row_group, index)
        mask = filters.mask(table, after)
        if mask is not None:
            table = table.filter(mask)
        if table.num_rows:
            for event in await asyncio.to_thread(_events, table, tz):
                yield event


async def archived_cursor(
    vault: VaultBlock, records: Sequence[ArchiveRecord], position: int
) -> Cursor | None:
    """The (xid, position) of an archived event's position, or None."""
    pa, pq, _, pc = _arrow()
    for record in records:
        if record.low_position is None or record.high_position is None:
            continue
        if not record.low_position <= position <= record.high_position:
            continue
        reader_ = pa.BufferReader(await _fetch(vault, record))
        table = await asyncio.to_thread(pq.read_table, reader_, columns=["xid", "position"])
        found = table.filter(pc.equal(table.column("position"), position))
        if found.num_rows:
            return int(found.column("xid")[0].as_py()), position
    return None


async def _live_cursor(conn: Any, position: int) -> Cursor | None:
    # The live reader's lookup (atlas.event_xid probes the partitions newest first).
    cur = await conn.execute("SELECT atlas.event_xid(%s)::text", [position])
    row = await cur.fetchone()
    return None if row is None or row[0] is None else (int(row[0]), position)


class _Source:
    """One sorted stream of the merge: the live replay or one archive (opened lazily)."""

    def __init__(self, make: Any, *, archived: bool) -> None:
        self._make = make
        self.archived = archived
        self._events: AsyncGenerator[StoredEvent, None] | None = None

    async def next(self) -> StoredEvent | None:
        if self._events is None:
            self._events = self._make()
        assert self._events is not None
        try:
            return await anext(self._events)
        except StopAsyncIteration:
            await self.close()
            return None

    async def close(self) -> None:
        if self._events is not None:
            events, self._events = self._events, None
            await events.aclose()
            self._make = _exhausted


async def _exhausted() -> AsyncGenerator[StoredEvent, None]:
    return
    yield  # pragma: no cover


async def replay(
    connection: reader.Connect,
    vault: VaultBlock,
    *,
    event_types: Sequence[str] | None,
    entity_id: str | None,
    since: datetime | None,
    until: datetime | None,
    after_position: int | None,
    batch_size: int,
) -> AsyncGenerator[StoredEvent, None]:
    """See :meth:`EventStore.replay` with ``include_archive=True``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    filters = Filters(event_types, entity_id, since, until)
    async with connection() as guard:
        # Held to the end: no partition is dropped while this replay runs.
        await guard.execute("SELECT pg_advisory_xact_lock_shared(%s)", [ARCHIVE_LOCK_KEY])
        cur = await guard.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")
        row = await cur.fetchone()
        assert row is not None
        xmin = int(row[0])
        tz = guard.info.timezone
        records = [r for r in await alist_archives(guard) if r.row_count]
        after: Cursor | None = None
        if after_position is not None:
            after = await _live_cursor(guard, after_position)
        if after_position is not None and after is None:
            after = await archived_cursor(vault, records, after_position)
            if after is None:
                raise ValueError(
                    f"after_position {after_position} is not the position of a stored event"
                )
        merged = _merge(connection, vault, records, filters, after, xmin, tz, batch_size)
        async with aclosing(merged) as events:
            async for event in events:
                yield event


async def _merge(
    connection: reader.Connect,
    vault: VaultBlock,
    records: Sequence[ArchiveRecord],
    filters: Filters,
    after: Cursor | None,
    xmin: int,
    tz: tzinfo,
    batch_size: int,
) -> AsyncGenerator[StoredEvent, None]:
    live = _Source(
        lambda: reader.replay(
            connection,
            event_types=filters.event_types,
            entity_id=filters.entity_id,
            since=filters.since,
            until=filters.until,
            after_position=None,
            after_cursor=after,
            batch_size=batch_size,
        ),
        archived=False,
    )
    sources: list[_Source] = [live]
    # (xid, position, order, source, event): an unopened archive waits under its first cursor.
    heap: list[tuple[int, int, int, _Source, StoredEvent | None]] = []
    order = 0
    for record in records:
        if record.first is None or record.last is None:
            continue
        if after is not None and record.last <= after:
            continue
        if not filters.may_match(record):
            continue
        source = _Source(
            partial(archived_events, vault, record, filters, after, tz),
            archived=True,
        )
        sources.append(source)
        heap.append((record.first[0], record.first[1], order, source, None))
        order += 1
    try:
        first = await live.next()
        if first is not None:
            heap.append((first.xid, first.position, order, live, first))
            order += 1
        heapq.heapify(heap)
        last: Cursor | None = None
        while heap:
            xid, position, _, source, event = heapq.heappop(heap)
            if event is not None:
                if source.archived and event.xid >= xmin:
                    return  # not commit-safe yet (a transaction older than it still runs)
                if (xid, position) != last:
                    last = (xid, position)
                    yield event
            following = await source.next()
            if following is not None:
                heapq.heappush(heap, (following.xid, following.position, order, source, following))
                order += 1
    finally:
        for source in sources:
            await source.close()
