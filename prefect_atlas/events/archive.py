"""Archiving whole partitions of the event log to the vault, and retention.

One partition at a time (see docs/events.md, "Retention and archive"):

1. **Export.** In one REPEATABLE READ snapshot, the partition's counts and cursors are read,
   then its rows stream out by ``COPY (SELECT ... ORDER BY xid, position) TO STDOUT`` (CSV,
   no server-side cursor, no ``fetchall``): blocks of :data:`ROW_GROUP_ROWS` rows are parsed
   by pyarrow's CSV reader in a worker thread (while the next block arrives) and written as
   one zstd row group each. The rows' content checksum is computed from the same blocks.
2. **Store.** The Parquet file, then a manifest (counts, time range, (xid, position) range,
   the file's sha256, the schema version) under ``events-archive/YYYY/MM/DD/`` in the vault.
3. **Verify.** Both are read back from the vault: the manifest must equal what was written,
   the file its sha256; the file is decoded and its row count, first and last cursor, order
   and content checksum compared with what PostgreSQL gave.
4. **Record.** Under a SHARE lock on the partition (no writer can add a row), its count and
   cursors are read again and compared with the manifest; only then is the archive's row in
   ``atlas.event_archives`` written (status ``verified``).
5. **Drop.** Holding the archive lock exclusively (replays that read archives hold it
   shared, so none can miss the partition's rows between its archive listing and its live
   reads), the partition is checked once more and dropped (``adrop_partition``), and the row
   says ``dropped``.

Any failure raises :class:`~prefect_atlas.exceptions.ArchiveError` and leaves the partition in
place. Every step can be run again: a crash before step 4 leaves files without a row (the next
run exports again and overwrites them), a crash between steps 4 and 5 leaves a ``verified``
row (the next run verifies the stored files again and drops).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import psycopg
from psycopg import AsyncConnection, sql

from prefect_atlas._extras import require
from prefect_atlas.exceptions import ArchiveError, ArchiveIntegrityError

if TYPE_CHECKING:
    from prefect_atlas.database import DatabaseBlock
    from prefect_atlas.events.partitions import Partition
    from prefect_atlas.vault import VaultBlock

SCHEMA_VERSION = 1
"""Version of the archive format (Parquet columns and manifest); written in every manifest."""
ARCHIVE_PREFIX = "events-archive"
"""Vault folder of the archives: ``events-archive/YYYY/MM/DD/<partition>.parquet``."""
ROW_GROUP_ROWS = 100_000
"""Rows per Parquet row group (and per block streamed out of PostgreSQL)."""
MANIFEST_FORMAT = "atlas.event-archive"
ARCHIVE_LOCK_KEY = 0x41544C4152  # "ATLAR": replays reading archives share it, a drop takes it
_PARTITION_LOCK_CLASS = 0x41544C41  # "ATLA", with the partition name's hash: one archiver each
PARQUET_TYPE = "application/vnd.apache.parquet"

Cursor = tuple[int, int]
"""A position in replay order: (transaction id, position)."""
Status = Literal["verified", "dropped"]

# The columns of an archive, in the order of StoredEvent; the COPY selects them in this order.
COLUMNS = (
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
# Each row leaves PostgreSQL as one CSV line (bytes): the server builds the text while the
# client parses the previous block, and Python handles one object per row, not one per field.
# Only entity_id and the payload's text need quoting (event types, ids, numbers and ISO times
# hold no comma, quote or line break).
_SELECT_LINES = (
    "SELECT convert_to(concat_ws(',', position, event_id, event_type, "
    "'\"' || replace(entity_id, '\"', '\"\"') || '\"', version, "
    "'\"' || replace(payload::text, '\"', '\"\"') || '\"', occurred_at, recorded_at, xid), 'UTF8') "
    "FROM {} ORDER BY xid, position"
)
# Counts and cursors of one partition, read in the export's snapshot and again under lock.
_STATS = (
    "SELECT count(*), min(position), max(position), min(occurred_at), max(occurred_at), "
    "(SELECT xid::text || ' ' || position FROM {t} ORDER BY xid, position LIMIT 1), "
    "(SELECT xid::text || ' ' || position FROM {t} ORDER BY xid DESC, position DESC LIMIT 1) "
    "FROM {t}"
)
# An open transaction that began before the partition's upper bound can still insert into it
# (recorded_at is the transaction's start time): such a partition is not closed yet.
_OPEN_WRITERS = (
    "SELECT count(*) FROM pg_stat_activity WHERE xact_start < %s AND pid <> pg_backend_pid() "
    "AND datname = current_database() AND backend_type = 'client backend'"
)


def _arrow() -> tuple[Any, Any, Any, Any]:
    """pyarrow and the parts of it the archive uses (imported on first use)."""
    purpose = "Archiving the event log to Parquet"
    return (
        require("pyarrow", purpose=purpose),
        require("pyarrow.parquet", purpose=purpose),
        require("pyarrow.csv", purpose=purpose),
        require("pyarrow.compute", purpose=purpose),
    )


def arrow_schema() -> Any:
    """The archive's Arrow schema: StoredEvent's fields, none nullable, times in UTC (µs)."""
    pa = _arrow()[0]
    stamp = pa.timestamp("us", tz="UTC")
    return pa.schema(
        [
            pa.field("position", pa.int64(), nullable=False),
            pa.field("event_id", pa.string(), nullable=False),
            pa.field("event_type", pa.string(), nullable=False),
            pa.field("entity_id", pa.string(), nullable=False),
            pa.field("version", pa.int64(), nullable=False),
            pa.field("payload", pa.string(), nullable=False),  # the JSONB's text
            pa.field("occurred_at", stamp, nullable=False),
            pa.field("recorded_at", stamp, nullable=False),
            pa.field("xid", pa.int64(), nullable=False),
        ],
        metadata={"atlas.schema_version": str(SCHEMA_VERSION)},
    )


def archive_keys(partition: Partition) -> tuple[str, str]:
    """The vault paths of a partition's Parquet file and manifest.

    >>> from datetime import UTC, datetime
    >>> from types import SimpleNamespace
    >>> day = SimpleNamespace(name="events_p20261101", lower=datetime(2026, 11, 1, tzinfo=UTC))
    >>> archive_keys(day)  # doctest: +NORMALIZE_WHITESPACE
    ('events-archive/2026/11/01/events_p20261101.parquet',
     'events-archive/2026/11/01/events_p20261101.manifest.json')
    """
    base = f"{ARCHIVE_PREFIX}/{partition.lower.astimezone(UTC):%Y/%m/%d}/{partition.name}"
    return f"{base}.parquet", f"{base}.manifest.json"


# ---------------------------------------------------------------------------- content checksum


class ContentDigest:
    """A checksum of an archive's rows, independent of how they are split into blocks.

    Each column is hashed on its own (fixed-width values as their bytes; strings as their
    lengths and their bytes, in two hashes), so the rows parsed from PostgreSQL and the rows
    decoded from the Parquet file give the same digest whatever their chunking.
    """

    def __init__(self) -> None:
        self._hashes: dict[str, list[Any]] = {
            name: [hashlib.sha256(), hashlib.sha256()] for name in COLUMNS
        }

    def update(self, table: Any) -> None:
        """Add a table (or record batch) of the archive's schema."""
        pa, _, _, pc = _arrow()
        for name in COLUMNS:
            column = table.column(name)
            chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
            values, lengths = self._hashes[name]
            for chunk in chunks:
                if chunk.null_count:
                    raise ArchiveIntegrityError(f"column {name} holds nulls; an archive has none")
                if pa.types.is_string(chunk.type):
                    sizes = pc.binary_length(chunk)
                    lengths.update(sizes.buffers()[1][: 4 * len(sizes)])
                    offsets = pa.Array.from_buffers(
                        pa.int32(), len(chunk) + 1, [None, chunk.buffers()[1]], offset=chunk.offset
                    )
                    if len(chunk) and chunk.buffers()[2] is not None:
                        first, last = offsets[0].as_py(), offsets[len(chunk)].as_py()
                        values.update(chunk.buffers()[2][first:last])
                else:
                    start = chunk.offset * 8
                    values.update(chunk.buffers()[1][start : start + 8 * len(chunk)])

    def hexdigest(self) -> str:
        """The digest of every row added so far."""
        outer = hashlib.sha256()
        for name in COLUMNS:
            values, lengths = self._hashes[name]
            outer.update(name.encode() + b"\0" + values.digest() + lengths.digest())
        return outer.hexdigest()


# ---------------------------------------------------------------------------- the manifest


@dataclass(frozen=True)
class PartitionStats:
    """What PostgreSQL says a partition holds: the facts an archive must agree with."""

    rows: int
    """Events in the partition."""
    first: Cursor | None
    """The first (xid, position) in replay order (None when empty)."""
    last: Cursor | None
    """The last (xid, position) in replay order (None when empty)."""
    low_position: int | None
    """The smallest position."""
    high_position: int | None
    """The largest position."""
    min_occurred_at: datetime | None
    """The earliest occurred_at."""
    max_occurred_at: datetime | None
    """The latest occurred_at."""


def _cursor(text: str | None) -> Cursor | None:
    if text is None:
        return None
    xid, position = text.split()
    return int(xid), int(position)


async def partition_stats(conn: AsyncConnection[Any], partition: Partition) -> PartitionStats:
    """Count and cursors of ``partition`` (on ``conn``, in its current transaction)."""
    query = sql.SQL(_STATS).format(t=sql.Identifier("atlas", partition.name))
    cur = await conn.execute(query)
    try:
        row = await cur.fetchone()
    except psycopg.DataError as exc:  # an 'infinity' time (written by SQL): Python has none
        raise ArchiveError(
            f"partition {partition.name} holds rows that cannot be archived as Parquet: {exc}"
        ) from exc
    assert row is not None
    rows, low, high, min_occurred, max_occurred, first, last = row
    return PartitionStats(
        rows=int(rows),
        first=_cursor(first),
        last=_cursor(last),
        low_position=low,
        high_position=high,
        min_occurred_at=min_occurred,
        max_occurred_at=max_occurred,
    )


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


def _pair(cursor: Cursor | None) -> dict[str, int] | None:
    return None if cursor is None else {"xid": cursor[0], "position": cursor[1]}


def build_manifest(
    partition: Partition,
    stats: PartitionStats,
    *,
    parquet_key: str,
    sha256: str,
    size_bytes: int,
    row_groups: int,
    content_sha256: str,
) -> dict[str, Any]:
    """The manifest stored next to a partition's Parquet file (plain JSON, one object)."""
    return {
        "format": MANIFEST_FORMAT,
        "schema_version": SCHEMA_VERSION,
        "partition": partition.name,
        "range": {"lower": _iso(partition.lower), "upper": _iso(partition.upper)},
        "rows": stats.rows,
        "row_groups": row_groups,
        "first": _pair(stats.first),
        "last": _pair(stats.last),
        "positions": {"low": stats.low_position, "high": stats.high_position},
        "occurred_at": {"min": _iso(stats.min_occurred_at), "max": _iso(stats.max_occurred_at)},
        "columns": list(COLUMNS),
        "parquet": {
            "path": parquet_key,
            "sha256": sha256,
            "bytes": size_bytes,
            "compression": "zstd",
            "row_group_rows": ROW_GROUP_ROWS,
        },
        "content_sha256": content_sha256,
    }


# ---------------------------------------------------------------------------- export


@dataclass
class Export:
    """A partition exported to Parquet bytes, with what was learnt on the way."""

    data: bytes
    """The Parquet file."""
    stats: PartitionStats
    """PostgreSQL's counts and cursors, read in the export's snapshot."""
    sha256: str
    """The file's sha256."""
    content_sha256: str
    """The rows' content checksum (:class:`ContentDigest`)."""
    row_groups: int
    """Row groups written."""
    seconds: float
    """Time the export took."""


class _ParquetSink:
    """Parses CSV blocks from COPY into Arrow tables and writes them as row groups.

    Called from a worker thread, one block at a time (pyarrow releases the GIL while it
    parses and encodes, so the event loop keeps reading the next block meanwhile).
    """

    def __init__(self, name: str) -> None:
        pa, pq, pacsv, _ = _arrow()
        self.name = name
        self.schema = arrow_schema()
        self._sink = pa.BufferOutputStream()
        self._writer = pq.ParquetWriter(
            self._sink,
            self.schema,
            compression="zstd",
            write_statistics=["xid", "position", "occurred_at", "recorded_at"],
        )
        self.digest = ContentDigest()
        self.rows = 0
        self.row_groups = 0
        self.first: Cursor | None = None
        self.last: Cursor | None = None
        self._read = pacsv.ReadOptions(column_names=list(COLUMNS), block_size=1 << 26)
        self._convert = pacsv.ConvertOptions(
            column_types={f.name: f.type for f in self.schema},
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        )
        self._plain = pacsv.ParseOptions(newlines_in_values=False)
        self._quoted_newlines = pacsv.ParseOptions(newlines_in_values=True)

    def add(self, block: bytes, rows: int) -> None:
        """Parse ``rows`` CSV lines and write them as one row group."""
        pa, _, pacsv, _ = _arrow()
        # Only entity ids can hold a line break (JSONB text escapes them); the faster parser
        # is right when the block has exactly one newline per row and no carriage return.
        plain = block.count(b"\n") == rows and b"\r" not in block
        try:
            table = pacsv.read_csv(
                pa.py_buffer(block),
                read_options=self._read,
                parse_options=self._plain if plain else self._quoted_newlines,
                convert_options=self._convert,
            ).cast(self.schema)
        except pa.ArrowException as exc:  # a value the archive's types cannot hold
            raise ArchiveError(
                f"partition {self.name} holds rows that cannot be archived as Parquet: {exc}"
            ) from exc
        if table.num_rows != rows:
            raise ArchiveIntegrityError(
                f"partition {self.name}: a block of {rows} rows from PostgreSQL parsed into "
                f"{table.num_rows} rows"
            )
        self.digest.update(table)
        xids, positions = table.column("xid"), table.column("position")
        if self.first is None:
            self.first = (xids[0].as_py(), positions[0].as_py())
        self.last = (xids[-1].as_py(), positions[-1].as_py())
        self._writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
        self.rows += rows
        self.row_groups += 1

    def close(self) -> bytes:
        """Finish the file; its bytes."""
        self._writer.close()
        data: bytes = self._sink.getvalue().to_pybytes()
        return data


async def export_partition(conn: AsyncConnection[Any], partition: Partition) -> Export:
    """Stream ``partition`` into zstd Parquet (row groups of :data:`ROW_GROUP_ROWS`).

    Runs in one REPEATABLE READ, READ ONLY transaction on ``conn`` (the counts and the rows
    come from one snapshot), and refuses a partition an open transaction could still write
    to. Raises :class:`ArchiveIntegrityError` when the rows parsed do not match PostgreSQL's
    count and cursors.
    """
    started = time.perf_counter()
    target = sql.Identifier("atlas", partition.name)
    await conn.set_autocommit(False)
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        # Fixed text forms for the CSV: ISO dates in UTC ("2026-11-01 10:00:00.5+00").
        await conn.execute("SET LOCAL TimeZone = 'UTC'")
        await conn.execute("SET LOCAL DateStyle = 'ISO, YMD'")
        cur = await conn.execute(_OPEN_WRITERS, [partition.upper])
        open_writers = await cur.fetchone()
        if open_writers is not None and open_writers[0]:
            raise ArchiveError(
                f"partition {partition.name} is not closed: {open_writers[0]} transaction(s) "
                f"that began before its upper bound {partition.upper.isoformat()} are still "
                "open and could add events to it; archive it once they have ended"
            )
        stats = await partition_stats(conn, partition)
        sink = _ParquetSink(partition.name)
        # One block is parsed and written in a worker thread while the server makes the next.
        pending: asyncio.Future[None] | None = None
        try:
            async with conn.cursor("atlas_archive_export", binary=True) as server:
                await server.execute(sql.SQL(_SELECT_LINES).format(target))
                while rows := await server.fetchmany(ROW_GROUP_ROWS):
                    block = b"\n".join([line for (line,) in rows]) + b"\n"
                    if pending is not None:
                        await pending
                    pending = asyncio.ensure_future(asyncio.to_thread(sink.add, block, len(rows)))
            if pending is not None:
                await pending
        finally:
            if pending is not None and not pending.done():
                with suppress(BaseException):
                    await pending
    data = await asyncio.to_thread(sink.close)
    if (sink.rows, sink.first, sink.last) != (stats.rows, stats.first, stats.last):
        raise ArchiveIntegrityError(
            f"partition {partition.name}: the export read {sink.rows} rows from {sink.first} to "
            f"{sink.last}, PostgreSQL counts {stats.rows} from {stats.first} to {stats.last}"
        )
    sha256 = await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest())
    return Export(
        data=data,
        stats=stats,
        sha256=sha256,
        content_sha256=sink.digest.hexdigest(),
        row_groups=sink.row_groups,
        seconds=time.perf_counter() - started,
    )


# ---------------------------------------------------------------------------- verification


def check_parquet(data: bytes, manifest: dict[str, Any], *, content: bool = True) -> None:
    """Check Parquet bytes against their manifest; raise :class:`ArchiveIntegrityError`.

    The sha256, the row count and row groups from the footer, the schema; with ``content``
    the file is decoded: first and last cursor, strict (xid, position) order, content
    checksum. Runs in the caller's thread (call it through ``asyncio.to_thread``).
    """
    pa, pq, _, pc = _arrow()
    where = manifest.get("partition", "?")
    digest = hashlib.sha256(data).hexdigest()
    if digest != manifest["parquet"]["sha256"]:
        raise ArchiveIntegrityError(
            f"archive of {where}: the Parquet file read back has sha256 {digest}, the manifest "
            f"says {manifest['parquet']['sha256']}"
        )
    try:
        parquet = pq.ParquetFile(pa.BufferReader(data))
    except Exception as exc:
        raise ArchiveIntegrityError(
            f"archive of {where}: not a readable Parquet file: {exc}"
        ) from exc
    meta = parquet.metadata
    if meta.num_rows != manifest["rows"] or meta.num_row_groups != manifest["row_groups"]:
        raise ArchiveIntegrityError(
            f"archive of {where}: the file holds {meta.num_rows} rows in {meta.num_row_groups} "
            f"row groups, the manifest says {manifest['rows']} in {manifest['row_groups']}"
        )
    if not parquet.schema_arrow.remove_metadata().equals(arrow_schema().remove_metadata()):
        raise ArchiveIntegrityError(f"archive of {where}: unexpected schema {parquet.schema_arrow}")
    if not content:
        return
    digest_rows = ContentDigest()
    previous: Cursor | None = None
    first: Cursor | None = None
    for index in range(meta.num_row_groups):
        table = parquet.read_row_group(index)
        digest_rows.update(table)
        if not table.num_rows:
            continue
        xids = table.column("xid").combine_chunks()
        positions = table.column("position").combine_chunks()
        head = (xids[0].as_py(), positions[0].as_py())
        if previous is not None and head <= previous:
            raise ArchiveIntegrityError(f"archive of {where}: rows out of (xid, position) order")
        if len(xids) > 1:
            later_x, earlier_x = xids.slice(1), xids.slice(0, len(xids) - 1)
            later_p, earlier_p = positions.slice(1), positions.slice(0, len(xids) - 1)
            bad = pc.or_(
                pc.less(later_x, earlier_x),
                pc.and_(pc.equal(later_x, earlier_x), pc.less_equal(later_p, earlier_p)),
            )
            if pc.any(bad).as_py():
                raise ArchiveIntegrityError(
                    f"archive of {where}: rows out of (xid, position) order"
                )
        first = head if first is None else first
        previous = (xids[-1].as_py(), positions[-1].as_py())
    if _pair(first) != manifest["first"] or _pair(previous) != manifest["last"]:
        raise ArchiveIntegrityError(
            f"archive of {where}: the file runs from {first} to {previous}, the manifest says "
            f"{manifest['first']} to {manifest['last']}"
        )
    if digest_rows.hexdigest() != manifest["content_sha256"]:
        raise ArchiveIntegrityError(
            f"archive of {where}: the rows decoded from the file differ from the rows "
            "PostgreSQL gave (content checksum mismatch)"
        )


async def verify_stored(
    vault: VaultBlock, manifest_key: str, expected: dict[str, Any], *, content: bool = True
) -> None:
    """Read an archive's manifest and Parquet file back from ``vault`` and check both.

    ``expected`` is the manifest as written (or as recorded); the stored one must equal it.
    """
    where = expected.get("partition", manifest_key)
    try:
        stored = await vault.afetch_json(manifest_key)
    except Exception as exc:  # a checksum the vault itself rejects, unreadable JSON...
        raise ArchiveIntegrityError(
            f"archive of {where}: manifest {manifest_key} unreadable: {exc}"
        ) from exc
    if stored != expected:
        raise ArchiveIntegrityError(
            f"archive of {where}: the manifest read back from {manifest_key} differs from "
            "the one written"
        )
    key = expected["parquet"]["path"]
    try:
        data = await vault.afetch_bytes(key)
    except Exception as exc:
        raise ArchiveIntegrityError(f"archive of {where}: {key} unreadable: {exc}") from exc
    if data is None:
        raise ArchiveIntegrityError(f"archive of {where}: {key} is missing from the vault")
    await asyncio.to_thread(check_parquet, data, expected, content=content)


# ---------------------------------------------------------------------------- the records


@dataclass(frozen=True)
class ArchiveRecord:
    """One row of ``atlas.event_archives``: a verified archive of one partition."""

    partition_name: str
    """The partition archived."""
    range_lower: datetime
    """The partition's lower bound (recorded_at, inclusive)."""
    range_upper: datetime
    """The partition's upper bound (recorded_at, exclusive)."""
    row_count: int
    """Events archived."""
    first: Cursor | None
    """The first (xid, position) archived (None when empty)."""
    last: Cursor | None
    """The last (xid, position) archived (None when empty)."""
    low_position: int | None
    """The smallest position archived."""
    high_position: int | None
    """The largest position archived."""
    min_occurred_at: datetime | None
    """The earliest occurred_at archived."""
    max_occurred_at: datetime | None
    """The latest occurred_at archived."""
    parquet_key: str
    """The Parquet file's vault path."""
    manifest_key: str
    """The manifest's vault path."""
    sha256: str
    """The Parquet file's sha256."""
    content_sha256: str
    """The rows' content checksum."""
    size_bytes: int
    """The Parquet file's size."""
    row_groups: int
    """Row groups in the file."""
    schema_version: int
    """The archive format's version."""
    vault: str
    """The vault that holds it (described without secrets)."""
    status: Status
    """``verified`` (the partition is still attached) or ``dropped``."""
    archived_at: datetime
    """When the archive was verified and recorded."""
    dropped_at: datetime | None = field(default=None)
    """When the partition was dropped."""

    def manifest(self) -> dict[str, Any]:
        """The manifest this record was written from (what the vault must still hold)."""
        partition = _Range(self.partition_name, self.range_lower, self.range_upper)
        stats = PartitionStats(
            rows=self.row_count,
            first=self.first,
            last=self.last,
            low_position=self.low_position,
            high_position=self.high_position,
            min_occurred_at=self.min_occurred_at,
            max_occurred_at=self.max_occurred_at,
        )
        return build_manifest(
            partition,  # type: ignore[arg-type]  # a Partition's fields, duck-typed
            stats,
            parquet_key=self.parquet_key,
            sha256=self.sha256,
            size_bytes=self.size_bytes,
            row_groups=self.row_groups,
            content_sha256=self.content_sha256,
        )

    def stats(self) -> PartitionStats:
        """The partition's counts and cursors as archived."""
        return PartitionStats(
            rows=self.row_count,
            first=self.first,
            last=self.last,
            low_position=self.low_position,
            high_position=self.high_position,
            min_occurred_at=self.min_occurred_at,
            max_occurred_at=self.max_occurred_at,
        )


@dataclass(frozen=True)
class _Range:
    name: str
    lower: datetime
    upper: datetime


_RECORD_COLUMNS = (
    "partition_name, range_lower, range_upper, row_count, min_xid::text, min_position, "
    "max_xid::text, max_position, low_position, high_position, min_occurred_at, "
    "max_occurred_at, parquet_key, manifest_key, sha256, content_sha256, size_bytes, "
    "row_groups, schema_version, vault, status, archived_at, dropped_at"
)


def _record(row: Sequence[Any]) -> ArchiveRecord:
    (name, lower, upper, count, min_xid, min_pos, max_xid, max_pos, *rest) = row
    return ArchiveRecord(
        name,
        lower,
        upper,
        count,
        None if min_xid is None else (int(min_xid), min_pos),
        None if max_xid is None else (int(max_xid), max_pos),
        *rest,
    )


async def alist_archives(conn: AsyncConnection[Any]) -> list[ArchiveRecord]:
    """Every archive recorded in ``atlas.event_archives``, ordered by range."""
    cur = await conn.execute(
        f"SELECT {_RECORD_COLUMNS} FROM atlas.event_archives ORDER BY range_lower, partition_name"
    )
    return [_record(row) for row in await cur.fetchall()]


async def aget_archive(conn: AsyncConnection[Any], name: str) -> ArchiveRecord | None:
    """The archive of partition ``name``, or None."""
    cur = await conn.execute(
        f"SELECT {_RECORD_COLUMNS} FROM atlas.event_archives WHERE partition_name = %s", [name]
    )
    row = await cur.fetchone()
    return None if row is None else _record(row)


_UPSERT = """
INSERT INTO atlas.event_archives (
    partition_name, range_lower, range_upper, row_count, min_xid, min_position, max_xid,
    max_position, low_position, high_position, min_occurred_at, max_occurred_at, parquet_key,
    manifest_key, sha256, content_sha256, size_bytes, row_groups, schema_version, vault, status
) VALUES (
    %(name)s, %(lower)s, %(upper)s, %(rows)s, %(min_xid)s::xid8, %(min_position)s,
    %(max_xid)s::xid8, %(max_position)s, %(low)s, %(high)s, %(min_occurred)s, %(max_occurred)s,
    %(parquet)s, %(manifest)s, %(sha256)s, %(content)s, %(size)s, %(row_groups)s, %(schema)s,
    %(vault)s, 'verified'
)
ON CONFLICT (partition_name) DO UPDATE SET
    range_lower = EXCLUDED.range_lower, range_upper = EXCLUDED.range_upper,
    row_count = EXCLUDED.row_count, min_xid = EXCLUDED.min_xid,
    min_position = EXCLUDED.min_position, max_xid = EXCLUDED.max_xid,
    max_position = EXCLUDED.max_position, low_position = EXCLUDED.low_position,
    high_position = EXCLUDED.high_position, min_occurred_at = EXCLUDED.min_occurred_at,
    max_occurred_at = EXCLUDED.max_occurred_at, parquet_key = EXCLUDED.parquet_key,
    manifest_key = EXCLUDED.manifest_key, sha256 = EXCLUDED.sha256,
    content_sha256 = EXCLUDED.content_sha256, size_bytes = EXCLUDED.size_bytes,
    row_groups = EXCLUDED.row_groups, schema_version = EXCLUDED.schema_version,
    vault = EXCLUDED.vault, status = 'verified', archived_at = now(), dropped_at = NULL
WHERE atlas.event_archives.status = 'verified'
"""


# ---------------------------------------------------------------------------- archiving


@dataclass(frozen=True)
class ArchiveResult:
    """What :func:`aarchive_partition` did to one partition."""

    partition: str
    """The partition's name."""
    rows: int
    """Events in the archive."""
    parquet_key: str
    """The Parquet file's vault path."""
    manifest_key: str
    """The manifest's vault path."""
    sha256: str
    """The Parquet file's sha256."""
    size_bytes: int
    """The Parquet file's size."""
    steps: tuple[str, ...]
    """What this call did, in order: ``exported``, ``stored``, ``verified``, ``recorded``,
    ``dropped`` (``reverified`` when it resumed from a recorded archive)."""
    seconds: float
    """Time the call took."""

    @property
    def dropped(self) -> bool:
        """Whether the partition is gone from the table after this call."""
        return "dropped" in self.steps or "already dropped" in self.steps


def _stats_problem(name: str, found: PartitionStats, archived: PartitionStats) -> str | None:
    """Why the partition no longer matches its archive, or None."""
    facts = ("rows", "first", "last", "low_position", "high_position")
    diff = [
        f"{fact} {getattr(found, fact)} (archived {getattr(archived, fact)})"
        for fact in facts
        if getattr(found, fact) != getattr(archived, fact)
    ]
    return f"partition {name} changed since it was archived: " + ", ".join(diff) if diff else None


async def _exists(conn: AsyncConnection[Any], name: str) -> bool:
    cur = await conn.execute("SELECT to_regclass(%s) IS NOT NULL", [f"atlas.{name}"])
    row = await cur.fetchone()
    return bool(row and row[0])


async def _lock_partition(conn: AsyncConnection[Any], partition: Partition) -> None:
    # SHARE: readers go on, no writer can add, change or remove a row until commit.
    await conn.execute(
        sql.SQL("LOCK TABLE {} IN SHARE MODE").format(sql.Identifier("atlas", partition.name))
    )


async def aarchive_partition(
    db: DatabaseBlock,
    vault: VaultBlock,
    partition: Partition,
    *,
    drop: bool = True,
    verify_content: bool = True,
    lock_timeout: float = 60.0,
) -> ArchiveResult:
    """Archive ``partition`` to ``vault``, verify it, record it and (``drop=True``) drop it.

    Safe to run again at any point (see the module's docstring): a partition already
    archived and dropped is reported as such; a recorded archive whose partition is still
    attached is verified again from the vault and then dropped; files left by a run that
    crashed before recording are exported again. ``verify_content=False`` skips decoding the
    file read back (the sha256, counts and footer are still checked). ``lock_timeout`` bounds
    the wait for replays reading archives (and writers) before the drop.

    Raises :class:`ArchiveError` (:class:`ArchiveIntegrityError` when a check failed); the
    partition is then left in place. Two runs never archive one partition at once: the
    second raises at once.
    """
    async with db.connection() as guard:
        # Held (a transaction-level advisory lock, no transaction id) for the whole call.
        cur = await guard.execute(
            "SELECT pg_try_advisory_xact_lock(%s, hashtext(%s))",
            [_PARTITION_LOCK_CLASS, partition.name],
        )
        row = await cur.fetchone()
        if not (row and row[0]):
            raise ArchiveError(
                f"partition {partition.name} is being archived by another run; nothing done"
            )
        return await _archive(db, vault, partition, drop, verify_content, lock_timeout)


async def _archive(
    db: DatabaseBlock,
    vault: VaultBlock,
    partition: Partition,
    drop: bool,
    verify_content: bool,
    lock_timeout: float,
) -> ArchiveResult:
    started = time.perf_counter()
    steps: list[str] = []
    parquet_key, manifest_key = archive_keys(partition)
    async with db.connection() as conn:
        record = await aget_archive(conn, partition.name)
        exists = await _exists(conn, partition.name)
    if record is not None and record.status == "dropped":
        if exists:
            raise ArchiveError(
                f"partition {partition.name} was archived and dropped on {record.dropped_at}, "
                "but a partition of that name exists again: move its rows away or drop it by hand"
            )
        return _result(record, ("already dropped",), started)
    if not exists:
        raise ArchiveError(f"partition atlas.{partition.name} does not exist")
    manifest: dict[str, Any] | None = None
    if record is not None:
        manifest = record.manifest()
        try:
            await verify_stored(vault, record.manifest_key, manifest, content=verify_content)
            async with db.connection() as conn:
                problem = _stats_problem(
                    partition.name, await partition_stats(conn, partition), record.stats()
                )
            if problem is not None:
                raise ArchiveIntegrityError(problem)
            steps.append("reverified")
        except ArchiveIntegrityError:
            manifest = None  # the stored archive or the partition changed: archive afresh
            steps.append("stale record")
    if manifest is None:
        manifest, stats = await _export_store_verify(
            db, vault, partition, parquet_key, manifest_key, verify_content, steps
        )
        async with db.connection() as conn, conn.transaction():
            await _lock_partition(conn, partition)
            problem = _stats_problem(partition.name, await partition_stats(conn, partition), stats)
            if problem is not None:
                raise ArchiveError(problem + "; nothing was recorded or dropped, run it again")
            await conn.execute(
                _UPSERT,
                {
                    "name": partition.name,
                    "lower": partition.lower,
                    "upper": partition.upper,
                    "rows": stats.rows,
                    "min_xid": None if stats.first is None else str(stats.first[0]),
                    "min_position": None if stats.first is None else stats.first[1],
                    "max_xid": None if stats.last is None else str(stats.last[0]),
                    "max_position": None if stats.last is None else stats.last[1],
                    "low": stats.low_position,
                    "high": stats.high_position,
                    "min_occurred": stats.min_occurred_at,
                    "max_occurred": stats.max_occurred_at,
                    "parquet": parquet_key,
                    "manifest": manifest_key,
                    "sha256": manifest["parquet"]["sha256"],
                    "content": manifest["content_sha256"],
                    "size": manifest["parquet"]["bytes"],
                    "row_groups": manifest["row_groups"],
                    "schema": SCHEMA_VERSION,
                    "vault": vault.describe(),
                },
            )
        steps.append("recorded")
    async with db.connection() as conn:
        record = await aget_archive(conn, partition.name)
    assert record is not None
    if drop:
        await _drop(db, partition, record, lock_timeout)
        steps.append("dropped")
    return _result(record, tuple(steps), started)


async def _export_store_verify(
    db: DatabaseBlock,
    vault: VaultBlock,
    partition: Partition,
    parquet_key: str,
    manifest_key: str,
    verify_content: bool,
    steps: list[str],
) -> tuple[dict[str, Any], PartitionStats]:
    async with db.connection() as conn:
        export = await export_partition(conn, partition)
    steps.append("exported")
    manifest = build_manifest(
        partition,
        export.stats,
        parquet_key=parquet_key,
        sha256=export.sha256,
        size_bytes=len(export.data),
        row_groups=export.row_groups,
        content_sha256=export.content_sha256,
    )
    try:
        await vault.astore_bytes(parquet_key, export.data, content_type=PARQUET_TYPE)
        await vault.astore_json(manifest_key, manifest)
    except Exception as exc:
        raise ArchiveError(
            f"archive of {partition.name} could not be stored in {vault.describe()}: {exc}"
        ) from exc
    steps.append("stored")
    del export  # the file's bytes are not needed any more: verification reads them back
    await verify_stored(vault, manifest_key, manifest, content=verify_content)
    steps.append("verified")
    stats_ = PartitionStats(
        rows=manifest["rows"],
        first=_tuple(manifest["first"]),
        last=_tuple(manifest["last"]),
        low_position=manifest["positions"]["low"],
        high_position=manifest["positions"]["high"],
        min_occurred_at=_when(manifest["occurred_at"]["min"]),
        max_occurred_at=_when(manifest["occurred_at"]["max"]),
    )
    return manifest, stats_


def _tuple(pair: dict[str, int] | None) -> Cursor | None:
    return None if pair is None else (pair["xid"], pair["position"])


def _when(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


async def _drop(
    db: DatabaseBlock, partition: Partition, record: ArchiveRecord, lock_timeout: float
) -> None:
    from prefect_atlas.events.partitions import adrop_partition

    async with db.connection() as conn, conn.transaction():
        await conn.execute(
            sql.SQL("SET LOCAL lock_timeout = {}").format(
                sql.Literal(f"{max(1, round(lock_timeout * 1000))}ms")
            )
        )
        try:
            # First the archive lock (replays reading archives hold it shared), then the
            # partition: a replay never waits for the partition while holding the archive lock.
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", [ARCHIVE_LOCK_KEY])
            await _lock_partition(conn, partition)
        except Exception as exc:
            raise ArchiveError(
                f"partition {partition.name} not dropped: replays reading the archive or "
                f"writers held it for {lock_timeout:g} s ({type(exc).__name__}); its archive "
                "is recorded, the next run drops it"
            ) from exc
        problem = _stats_problem(
            partition.name, await partition_stats(conn, partition), record.stats()
        )
        if problem is not None:
            raise ArchiveError(problem + "; not dropped, the next run archives it again")
        try:
            await adrop_partition(conn, partition)
        except ValueError as exc:  # gone, re-bounded or too recent: nothing was dropped
            raise ArchiveError(f"partition {partition.name} not dropped: {exc}") from exc
        await conn.execute(
            "UPDATE atlas.event_archives SET status = 'dropped', dropped_at = now() "
            "WHERE partition_name = %s",
            [partition.name],
        )


def _result(record: ArchiveRecord, steps: tuple[str, ...], started: float) -> ArchiveResult:
    return ArchiveResult(
        partition=record.partition_name,
        rows=record.row_count,
        parquet_key=record.parquet_key,
        manifest_key=record.manifest_key,
        sha256=record.sha256,
        size_bytes=record.size_bytes,
        steps=steps,
        seconds=time.perf_counter() - started,
    )


# ---------------------------------------------------------------------------- retention


@dataclass(frozen=True)
class RetentionResult:
    """What :func:`aenforce_retention` did."""

    created: tuple[str, ...]
    """Partitions created ahead."""
    archived: tuple[ArchiveResult, ...]
    """Partitions archived (and dropped), oldest first."""
    kept: tuple[str, ...]
    """Partitions within the retention, left alone."""
    cutoff: datetime | None
    """Partitions ending at or before this were due (None: no retention)."""


async def aenforce_retention(
    db: DatabaseBlock,
    vault: VaultBlock | None,
    *,
    retention_days: int | None,
    ahead: timedelta = timedelta(days=7),
    now: datetime | None = None,
    verify_content: bool = True,
) -> RetentionResult:
    """Create partitions ``ahead``, then archive and drop each whole partition older than
    ``retention_days`` (its upper bound at or before now minus the retention), oldest first.

    Stops at the first failure (raising :class:`ArchiveError`): that partition and every
    later one stay in place. ``retention_days=None`` only creates partitions.
    """
    from prefect_atlas.events.partitions import aensure_partitions, alist_partitions

    now = datetime.now(UTC) if now is None else now
    async with db.connection() as conn:
        created = await aensure_partitions(conn, ahead=ahead, now=now)
    async with db.connection() as conn:
        partitions = await alist_partitions(conn)
    if retention_days is None:
        return RetentionResult(
            tuple(p.name for p in created), (), tuple(p.name for p in partitions), None
        )
    if retention_days < 1:
        raise ValueError(f"retention_days must be >= 1, got {retention_days}")
    if vault is None:
        raise ValueError("a retention needs a vault to archive partitions to")
    cutoff = now - timedelta(days=retention_days)
    due = [p for p in partitions if p.upper <= cutoff]
    archived: list[ArchiveResult] = []
    for partition in due:
        archived.append(
            await aarchive_partition(db, vault, partition, verify_content=verify_content)
        )
    return RetentionResult(
        created=tuple(p.name for p in created),
        archived=tuple(archived),
        kept=tuple(p.name for p in partitions if p.upper > cutoff),
        cutoff=cutoff,
    )
