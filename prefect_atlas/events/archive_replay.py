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

Filters (event types, entity, since/until on occurred_at, recorded_since/recorded_until,
after_position) are the live reader's, applied with pyarrow compute on each row group; whole
archives outside the cursor, the occurred_at window or the recorded_at range are skipped
without being read.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from functools import partial
from typing import TYPE_CHECKING, Any

import orjson

from prefect_atlas.events import reader
from prefect_atlas.events.archive import (
    ARCHIVE_LOCK_KEY,
    COLUMNS,
    ArchiveRecord,
    Cursor,
    _arrow,
    alist_archives,
)
from prefect_atlas.events.models import StoredEvent, stored_event_of
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
    recorded_since: datetime | None = None
    """recorded_at at or after this."""
    recorded_until: datetime | None = None
    """recorded_at before this."""

    def may_match(self, record: ArchiveRecord) -> bool:
        """Whether the archive can hold a matching event (by its occurred_at range)."""
        if record.row_count == 0 or record.min_occurred_at is None:
            return False
        if self.recorded_since is not None and record.range_upper <= self.recorded_since:
            return False
        if self.recorded_until is not None and record.range_lower >= self.recorded_until:
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
        if self.recorded_since is not None:
            since = pa.scalar(self.recorded_since, type=stamp)
            masks.append(pc.greater_equal(table.column("recorded_at"), since))
        if self.recorded_until is not None:
            until = pa.scalar(self.recorded_until, type=stamp)
            masks.append(pc.less(table.column("recorded_at"), until))
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


_UTC_NAMES = frozenset({"UTC", "Etc/UTC", "Etc/Universal", "Universal", "Zulu", "Etc/Zulu"})
_UTC_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _times(column: Any, tz: tzinfo) -> list[datetime]:
    """A timestamp column as datetimes in ``tz``.

    Built from the microseconds by adding a timedelta to the epoch: Arrow's own conversion of
    zoned timestamps costs several microseconds a value. In a UTC zone the epoch carries ``tz``
    itself (a UTC offset never changes); any other zone converts from UTC.
    """
    pa = _arrow()[0]
    micros = column.cast(pa.int64()).to_pylist()
    if getattr(tz, "key", None) in _UTC_NAMES or tz is UTC:
        epoch = _UTC_EPOCH.replace(tzinfo=tz)
        return [epoch + timedelta(microseconds=value) for value in micros]
    return [(_UTC_EPOCH + timedelta(microseconds=value)).astimezone(tz) for value in micros]


def _events(table: Any, tz: tzinfo) -> list[StoredEvent]:
    """StoredEvents of an archive table's rows (in a worker thread), their times in ``tz`` (the
    live connection's, so archived and live events print alike)."""
    columns = [
        _times(table.column(name), tz) if name.endswith("_at") else table.column(name).to_pylist()
        for name in COLUMNS
    ]
    loads, make_uuid = orjson.loads, uuid.UUID
    return [
        stored_event_of(
            position,
            make_uuid(event_id),
            event_type,
            entity,
            version,
            loads(payload),
            occurred,
            recorded,
            xid,
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


async def archived_events(
    vault: VaultBlock,
    record: ArchiveRecord,
    filters: Filters,
    after: Cursor | None,
    tz: tzinfo,
) -> AsyncGenerator[list[StoredEvent], None]:
    """The matching events of one archive after ``after``, in (xid, position) order, one
    list per row group."""
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
            yield await asyncio.to_thread(_events, table, tz)


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
    """One sorted stream of the merge, read a list at a time: the live replay (its events
    gathered ``batch_size`` at a time) or one archive (a row group at a time, opened when the
    merge reaches its first cursor)."""

    def __init__(self, batches: Any, *, archived: bool) -> None:
        self._make = batches
        self.archived = archived
        self._batches: AsyncGenerator[list[StoredEvent], None] | None = None
        self.batch: list[StoredEvent] = []
        self.index = 0

    def head(self) -> Cursor:
        """The cursor of the next event (the source must hold one)."""
        event = self.batch[self.index]
        return event.xid, event.position

    async def fill(self) -> bool:
        """Load the next non-empty list; False when the stream has ended (and is closed)."""
        if self._batches is None:
            self._batches = self._make()
        assert self._batches is not None
        async for batch in self._batches:
            if batch:
                self.batch, self.index = batch, 0
                return True
        await self.close()
        return False

    async def close(self) -> None:
        """Close the stream (idempotent)."""
        if self._batches is not None:
            batches, self._batches = self._batches, None
            await batches.aclose()
        self.batch, self.index = [], 0
        self._make = _exhausted


async def _exhausted() -> AsyncGenerator[list[StoredEvent], None]:
    return
    yield  # pragma: no cover


async def _gathered(
    events: AsyncGenerator[StoredEvent, None], size: int
) -> AsyncGenerator[list[StoredEvent], None]:
    """``events`` in lists of up to ``size``."""
    async with aclosing(events):
        batch: list[StoredEvent] = []
        async for event in events:
            batch.append(event)
            if len(batch) == size:
                yield batch
                batch = []
        if batch:
            yield batch


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
    def live_events() -> AsyncGenerator[list[StoredEvent], None]:
        events = reader.replay(
            connection,
            event_types=filters.event_types,
            entity_id=filters.entity_id,
            since=filters.since,
            until=filters.until,
            after_position=None,
            after_cursor=after,
            batch_size=batch_size,
            recorded_since=filters.recorded_since,
            recorded_until=filters.recorded_until,
        )
        return _gathered(events, batch_size)

    live = _Source(live_events, archived=False)
    sources: list[_Source] = [live]
    # (cursor, order, source, opened): an unopened archive waits under its first cursor; an
    # opened source under the cursor of its next event.
    heap: list[tuple[Cursor, int, _Source, bool]] = []
    for record in records:
        if record.first is None or record.last is None:
            continue
        if after is not None and record.last <= after:
            continue
        if not filters.may_match(record):
            continue
        source = _Source(partial(archived_events, vault, record, filters, after, tz), archived=True)
        sources.append(source)
        heap.append((record.first, len(sources), source, False))
    try:
        if await live.fill():
            heap.append((live.head(), 0, live, True))
        heapq.heapify(heap)
        last: Cursor | None = None
        while heap:
            _, order, source, opened = heapq.heappop(heap)
            if not opened:
                if await source.fill():
                    heapq.heappush(heap, (source.head(), order, source, True))
                continue
            # Yield this source's events up to the next source's head (equal cursors: the
            # same event in an archive and in the table, yielded once).
            bound = heap[0][0] if heap else None
            batch, index = source.batch, source.index
            while index < len(batch):
                event = batch[index]
                cursor = (event.xid, event.position)
                if bound is not None and cursor > bound:
                    break
                if source.archived and event.xid >= xmin:
                    return  # not commit-safe yet (a transaction older than it still runs)
                if cursor != last:
                    last = cursor
                    yield event
                index += 1
            source.index = index
            if index < len(batch) or await source.fill():
                heapq.heappush(heap, (source.head(), order, source, True))
    finally:
        for source in sources:
            await source.close()


async def replay(
    connection: reader.Connect,
    load_vault: Callable[[], Awaitable[VaultBlock]],
    *,
    event_types: Sequence[str] | None,
    entity_id: str | None,
    since: datetime | None,
    until: datetime | None,
    after_position: int | None,
    batch_size: int,
    recorded_since: datetime | None = None,
    recorded_until: datetime | None = None,
) -> AsyncGenerator[StoredEvent, None]:
    """See :meth:`EventStore.replay` with ``include_archive=True``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    filters = Filters(event_types, entity_id, since, until, recorded_since, recorded_until)
    vault = await load_vault()
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
