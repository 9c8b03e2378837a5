"""``EventStore``: Atlas's append-only audit trail in PostgreSQL, with a durable local spool.

Why the design (details in docs/events.md):

* **Idempotent.** Every event has a UUID; the table's unique key on it makes a retry, or a
  spooled event drained after it had reached the server, store nothing new.
* **Per-entity versions**: under a per-entity advisory lock taken *before* the transaction
  gets its id (and held to commit), a writer reads the entity's highest version from the
  unique ``(entity_id, version)`` index and appends after it, so versions are gap-free and
  their order agrees with transaction-id order.
* **Commit-safe replay.** Readers return only events whose writing transaction id is below
  the snapshot's xmin, ordered by (xid, position): every transaction that could still add a
  row before the cursor has finished, so a paging reader never skips an event that commits
  late (the failure ``bigserial`` positions alone have).
* **Never lose, never block.** In ``durable`` mode an event that cannot reach PostgreSQL
  (or meets an open circuit breaker) goes to an fsync'd SQLite spool under ``ATLAS_HOME`` and
  the call returns; the spool drains, ids intact, on the next successful contact.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, NamedTuple

import orjson
import psycopg
from psycopg import AsyncConnection, postgres, sql
from psycopg.abc import Buffer
from psycopg.adapt import Dumper
from psycopg.pq import Format
from pydantic import BaseModel

from prefect_atlas import metrics
from prefect_atlas._dispatch import sync_or_await
from prefect_atlas._paths import atlas_home
from prefect_atlas.database import DatabaseBlock, HealthReport
from prefect_atlas.events.batch import Batch, CheckedBatch, EventFields, PreparedBatch
from prefect_atlas.events.spool import Spool
from prefect_atlas.events.validation import DEFAULT_MAX_PAYLOAD_BYTES, PreparedEvent, prepare
from prefect_atlas.exceptions import AtlasError, DatabaseConnectionError
from prefect_atlas.resilience import CircuitBreaker, is_connection_failure

logger = logging.getLogger("prefect_atlas.events")

Mode = Literal["durable", "strict"]

_VERSION_MISMATCH = "AT002"
_EVENT_ID_KEY = "events_event_id_key"
_DRAIN_BATCH = 1000
# A batch that meets a concurrent writer of the same event id retries this often.
_BATCH_ATTEMPTS = 5

_APPEND_ONE = "SELECT atlas.append_event(%s, %s, %s, %s, %s, %s, %s)"
# Locks the entities (sorted) and returns their versions: one round trip before the COPY.
_LOCK_ENTITIES = "SELECT entity_id, version FROM atlas.lock_entities(%s, %s)"
# Writers NOTIFY this channel (a wake-up, empty payload); subscribers LISTEN on it.
CHANNEL = "atlas_events"
_COPY_EVENTS = (
    "COPY atlas.events (event_id, event_type, entity_id, version, payload, occurred_at) "
    "FROM STDIN (FORMAT BINARY)"
)
_COPY_TYPES = ["uuid", "text", "text", "int8", "jsonb", "timestamptz"]
_FIELDS = frozenset({"event_type", "entity_id", "payload", "event_id", "occurred_at"})


class _EncodedJsonb:
    """Marker type the binary JSONB dumper below is registered for (COPY picks it by oid)."""


class _EncodedJsonbDumper(Dumper):
    """Binary JSONB from JSON bytes orjson already made: format version 1, then the text.

    Why: psycopg's own JSONB dumper would serialize the payload again; the payload was
    serialized (and its size and NULs checked) once, when the event was prepared.
    """

    format = Format.BINARY
    oid = postgres.types["jsonb"].oid

    def dump(self, obj: bytes) -> Buffer:
        return b"\x01" + obj


class ConcurrencyError(AtlasError):
    """``expected_version`` did not match the entity's current version (optimistic concurrency)."""

    def __init__(self, entity_id: str, expected: int, actual: int) -> None:
        self.entity_id = entity_id
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"entity {entity_id!r} is at version {actual}, not the expected {expected}: another writer "
            "appended first. Reload the entity's events and decide again, or emit without expected_version."
        )


class NewEvent(NamedTuple):
    """An event to append with :meth:`EventStore.emit_many` (a mapping with these keys works too).

    A named tuple: immutable like a frozen dataclass, but built about four times faster,
    which a caller building 10,000 of them for one batch notices.
    """

    event_type: str
    entity_id: str
    payload: Mapping[str, Any] | None = None
    event_id: uuid.UUID | str | None = None
    occurred_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event read back from the log."""

    position: int
    event_id: uuid.UUID
    event_type: str
    entity_id: str
    version: int
    payload: Any
    occurred_at: datetime
    recorded_at: datetime
    xid: int = field(repr=False)

    def to_json(self) -> bytes:
        """One JSON object (the CLI prints these as JSON lines)."""
        return orjson.dumps(
            {
                "position": self.position,
                "event_id": str(self.event_id),
                "event_type": self.event_type,
                "entity_id": self.entity_id,
                "version": self.version,
                "payload": self.payload,
                "occurred_at": self.occurred_at.isoformat(),
                "recorded_at": self.recorded_at.isoformat(),
            }
        )


class EventStoreHealth(BaseModel):
    """The database's health plus what only the event store knows."""

    database: HealthReport
    spool_size: int
    spool_path: str
    breaker: str


class EventStore:
    """Durable, idempotent event emission with commit-safe replay.

    Example:
        ```python
        from prefect_atlas import DatabaseBlock, EventStore

        db = await DatabaseBlock.aload("BLOCK_NAME")
        store = EventStore(db)
        event_id = await store.aemit("video.ingested", "dQw4w9WgXcQ", {"duration_s": 212})
        async for event in store.replay(entity_id="dQw4w9WgXcQ"):
            print(event.version, event.event_type)
        ```

    ``mode="durable"`` (default) spools an event locally when PostgreSQL is unreachable and
    returns; ``mode="strict"`` raises :class:`DatabaseConnectionError` instead. The database
    needs the Atlas schema (``await db.asetup()``). ``notify=True`` (default) wakes
    :meth:`subscribe` readers at once; ``False`` saves the NOTIFY (which serializes the
    commits of notifying writers server-wide) and leaves subscribers to their polling.
    """

    def __init__(
        self,
        db: DatabaseBlock,
        *,
        mode: Mode = "durable",
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        connect_timeout: float = 2.0,
        failure_threshold: int = 3,
        reset_timeout: float = 5.0,
        spool_path: str | None = None,
        notify: bool = True,
    ) -> None:
        if mode not in ("durable", "strict"):
            raise ValueError(f"mode must be 'durable' or 'strict', got {mode!r}")
        if max_payload_bytes < 2:
            raise ValueError(f"max_payload_bytes must be at least 2, got {max_payload_bytes}")
        if connect_timeout <= 0:
            raise ValueError(f"connect_timeout must be > 0 seconds, got {connect_timeout}")
        self.db = db
        self.mode: Mode = mode
        self.max_payload_bytes = max_payload_bytes
        self.connect_timeout = connect_timeout
        self.breaker = CircuitBreaker(failure_threshold, reset_timeout)
        self.notify = notify
        self._spool_path = spool_path
        self._spool: Spool | None = None
        # None: not looked at yet; then whether events may be waiting in the spool.
        self._spool_pending: bool | None = None

    def __repr__(self) -> str:
        return f"EventStore(db={self.db.describe()!r}, mode={self.mode!r}, breaker={self.breaker.state.value})"

    # ------------------------------------------------------------------ spool

    @property
    def spool_path(self) -> str:
        """The spool file: one per database target, under ``$ATLAS_HOME/spool``."""
        if self._spool_path is None:
            digest = hashlib.sha256(self.db.describe().encode()).hexdigest()[:16]
            self._spool_path = str(atlas_home() / "spool" / f"events-{digest}.sqlite")
        return self._spool_path

    def _get_spool(self) -> Spool:
        if self._spool is None:
            from pathlib import Path

            self._spool = Spool(Path(self.spool_path))
        return self._spool

    def spool_size(self) -> int:
        """Events waiting in the local spool (also exported as ``atlas_events_spool_size``)."""
        from pathlib import Path

        if self._spool is None and not Path(self.spool_path).exists():
            size = 0
        else:
            size = self._get_spool().count()
        metrics.SPOOL_SIZE.set(size)
        self._spool_pending = size > 0
        return size

    async def _to_spool(self, events: PreparedEvent | Batch, cause: BaseException | None) -> None:
        if isinstance(events, PreparedEvent) and events.expected_version is not None:
            # An optimistic-concurrency check cannot be deferred: the caller must know now.
            raise DatabaseConnectionError(
                "cannot check expected_version while PostgreSQL is unreachable; the event was not "
                "stored. Retry later, or emit without expected_version to let it be spooled.",
                target=self.db.describe(),
            ) from cause
        # A batch's payloads are serialized (and checked: a bad one raises here, nothing is
        # spooled) only now, as they were not sent.
        ready = [events] if isinstance(events, PreparedEvent) else events.prepared()
        spool = self._get_spool()
        added = await asyncio.to_thread(spool.add, ready)
        self._spool_pending = True
        metrics.EVENTS_SPOOLED.inc(added)
        logger.warning(
            "PostgreSQL unavailable (%s); %d event(s) spooled to %s",
            type(cause).__name__ if cause else "circuit breaker open",
            len(ready),
            self.spool_path,
        )

    def _unavailable(self, cause: BaseException | None) -> DatabaseConnectionError:
        reason = str(cause) if cause else "circuit breaker open after repeated connection failures"
        return DatabaseConnectionError(
            f"event not stored (mode='strict'): {reason}", target=self.db.describe()
        )

    # ------------------------------------------------------------------ connections

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[AsyncConnection[Any]]:
        """A pooled connection, waiting at most ``connect_timeout`` for it (never blocks long)."""
        cm = self.db.connection()
        try:
            async with asyncio.timeout(self.connect_timeout):
                conn = await cm.__aenter__()
        except TimeoutError:
            raise DatabaseConnectionError(
                f"no database connection within {self.connect_timeout:g} s (EventStore connect_timeout)",
                target=self.db.describe(),
            ) from None
        try:
            yield conn
        except BaseException as exc:
            if not await cm.__aexit__(type(exc), exc, exc.__traceback__):
                raise
        else:
            await cm.__aexit__(None, None, None)

    async def _guarded(self, events: PreparedEvent | Batch) -> None:
        """Store ``events`` (after draining the spool), or spool them, per mode and breaker."""
        if not self.breaker.allow():
            if self.mode == "strict":
                raise self._unavailable(None)
            await self._to_spool(events, None)
            return
        try:
            if self._spool_pending is None:
                await asyncio.to_thread(self.spool_size)
            if self._spool_pending:
                # Older spooled events go first, so a process keeps its own order.
                await self._drain()
            async with self._connection() as conn:
                if isinstance(events, PreparedEvent):
                    await self._append_one(conn, events)
                else:
                    await self._append_batch(conn, events)
        except Exception as exc:
            if not is_connection_failure(exc):
                self.breaker.release()
                raise
            self.breaker.record_failure()
            if self.mode == "strict":
                raise self._unavailable(exc) from exc
            await self._to_spool(events, exc)
            return
        self.breaker.record_success()
        if isinstance(events, PreparedEvent):
            metrics.EVENTS_EMITTED.labels("emit").inc()
        else:
            metrics.EVENTS_EMITTED.labels("emit_many").inc(len(events))

    # ------------------------------------------------------------------ writing

    async def _append_one(self, conn: AsyncConnection[Any], event: PreparedEvent) -> None:
        # One statement in autocommit: one round trip; on any error it rolls back whole.
        await conn.set_autocommit(True)
        try:
            await conn.execute(
                _APPEND_ONE,
                [
                    event.event_id,
                    event.event_type,
                    event.entity_id,
                    event.payload.decode(),
                    event.occurred_at,
                    event.expected_version,
                    self.notify,
                ],
                prepare=True,
            )
        except psycopg.errors.UniqueViolation as exc:
            if exc.diag.constraint_name == _EVENT_ID_KEY:
                return  # stored before: a retry, nothing new
            raise
        except psycopg.Error as exc:
            if exc.sqlstate == _VERSION_MISMATCH and event.expected_version is not None:
                cur = await conn.execute("SELECT 1 FROM atlas.events WHERE event_id = %s", [event.event_id])
                if await cur.fetchone():
                    return  # the retry of an emit that had succeeded
                actual = int(exc.diag.message_detail or -1)
                raise ConcurrencyError(event.entity_id, event.expected_version, actual) from None
            raise
        finally:
            if not conn.closed and not conn.broken:
                with suppress(psycopg.Error):
                    await conn.set_autocommit(False)

    async def _append_batch(self, conn: AsyncConnection[Any], batch: Batch) -> None:
        """Append in one transaction: lock the entities and read their versions, then COPY.

        Binary COPY: the server parses no UUID, integer or timestamp text, and the payload
        goes over as the JSON orjson made (see ``_EncodedJsonbDumper``). The payloads of a
        new batch are serialized row by row while the COPY streams (see ``batch.py``); a bad
        one aborts the COPY, the transaction rolls back and its error is raised.
        """
        known: set[uuid.UUID] = set()
        for attempt in range(_BATCH_ATTEMPTS):
            try:
                async with conn.transaction():
                    if attempt:
                        # An id met the unique key: skip those already stored.
                        cur = await conn.execute(
                            "SELECT event_id FROM atlas.events WHERE event_id = ANY(%s)", [batch.event_ids()]
                        )
                        known = {row[0] for row in await cur.fetchall()}
                        if len(known) == len(batch):
                            return
                    cur = await conn.execute(_LOCK_ENTITIES, [batch.entity_ids(), self.notify])
                    version = dict(await cur.fetchall())
                    cur = conn.cursor()
                    cur.adapters.register_dumper(_EncodedJsonb, _EncodedJsonbDumper)
                    async with cur.copy(_COPY_EVENTS) as copy:
                        copy.set_types(_COPY_TYPES)
                        write_row = copy.write_row
                        for event_id, event_type, entity_id, payload, occurred_at in batch.rows(known):
                            v = version[entity_id] = version[entity_id] + 1
                            await write_row((event_id, event_type, entity_id, v, payload, occurred_at))
                return
            except psycopg.errors.UniqueViolation as exc:
                if exc.diag.constraint_name != _EVENT_ID_KEY or attempt == _BATCH_ATTEMPTS - 1:
                    raise

    async def aemit(
        self,
        event_type: str,
        entity_id: str,
        payload: Mapping[str, Any] | None = None,
        *,
        event_id: uuid.UUID | str | None = None,
        occurred_at: datetime | None = None,
        expected_version: int | None = None,
    ) -> uuid.UUID:
        """Append one event; returns its id (the same id again stores nothing new).

        ``expected_version=n`` appends only if the entity is at version ``n`` now (0 = no
        events yet), else raises :class:`ConcurrencyError`.
        """
        event = prepare(
            event_type,
            entity_id,
            payload,
            event_id=event_id,
            occurred_at=occurred_at,
            expected_version=expected_version,
            max_payload_bytes=self.max_payload_bytes,
        )
        await self._guarded(event)
        return event.event_id

    async def aemit_many(self, events: Iterable[NewEvent | Mapping[str, Any]]) -> list[uuid.UUID]:
        """Append a batch in one transaction (COPY); returns the ids in input order.

        Versions are assigned in input order per entity, correctly under concurrent writers.
        Ids already stored (or repeated in the batch) are stored once.
        """
        batch = CheckedBatch(
            [_fields(item, index) for index, item in enumerate(events)],
            max_payload_bytes=self.max_payload_bytes,
        )
        if len(batch):
            await self._guarded(batch)
        return batch.ids

    async def _drain(self) -> int:
        spool = self._get_spool()
        total = 0
        while True:
            batch = await asyncio.to_thread(spool.peek, _DRAIN_BATCH)
            if not batch:
                break
            async with self._connection() as conn:
                await self._append_batch(conn, PreparedBatch(batch))
            await asyncio.to_thread(spool.remove, [e.event_id for e in batch])
            total += len(batch)
            metrics.EVENTS_DRAINED.inc(len(batch))
            metrics.EVENTS_EMITTED.labels("drain").inc(len(batch))
        self._spool_pending = False
        metrics.SPOOL_SIZE.set(0)
        if total:
            logger.info("drained %d spooled event(s) into %s", total, self.db.describe())
        return total

    async def adrain(self) -> int:
        """Store every spooled event now (original ids kept); returns how many were drained."""
        if self._spool is None and self.spool_size() == 0:
            return 0
        try:
            drained = await self._drain()
        except Exception as exc:
            if is_connection_failure(exc):
                self.breaker.record_failure()
            raise
        self.breaker.record_success()
        return drained

    # ------------------------------------------------------------------ reading

    async def replay(
        self,
        *,
        event_types: Sequence[str] | None = None,
        entity_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after_position: int | None = None,
        batch_size: int = 1000,
    ) -> AsyncIterator[StoredEvent]:
        """Yield committed events in commit-safe order, ``batch_size`` per query.

        The order is (transaction id, position), and only events of transactions older than
        every transaction still running are returned, so resuming with ``after_position`` set
        to the last position seen never skips an event that was in flight. ``since``/``until``
        filter on ``occurred_at`` (inclusive / exclusive). The iterator ends when it has
        caught up; call again later to continue.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        conditions: list[sql.Composable] = [
            sql.SQL("xid < pg_snapshot_xmin(pg_current_snapshot())"),
            sql.SQL("(xid, position) > ({}::xid8, {})").format(sql.Placeholder("cx"), sql.Placeholder("cp")),
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
        query = sql.SQL(
            "SELECT position, event_id, event_type, entity_id, version, payload::text, occurred_at, "
            "recorded_at, xid::text AS xid_text FROM atlas.events WHERE {} ORDER BY events.xid, events.position LIMIT {}"
        ).format(sql.SQL(" AND ").join(conditions), sql.Placeholder("limit"))
        if after_position is not None:
            async with self._connection() as conn:
                cur = await conn.execute("SELECT xid::text FROM atlas.events WHERE position = %s", [after_position])
                row = await cur.fetchone()
            if row is None:
                raise ValueError(f"after_position {after_position} is not the position of a stored event")
            params["cx"], params["cp"] = row[0], after_position
        while True:
            async with self._connection() as conn:
                cur = await conn.execute(query, params)
                rows = await cur.fetchall()
            for position, event_id, event_type, entity, version, payload, occurred, recorded, xid in rows:
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
        self,
        *,
        event_types: Sequence[str] | None = None,
        entity_id: str | None = None,
        after_position: int | None = None,
        poll_interval: float = 1.0,
        batch_size: int = 1000,
    ) -> AsyncGenerator[StoredEvent, None]:
        """Yield every committed event (after ``after_position``), then new ones as they commit.

        Never ends by itself: stop iterating (``break``, or cancel the task) to stop. The
        subscription holds one pooled connection that LISTENs on ``atlas_events``; a
        notification is only a wake-up, the events come from :meth:`replay` with its
        commit-safe rule, resumed after the last event yielded, so none is skipped or
        repeated. It also re-reads every ``poll_interval`` seconds without a notification:
        NOTIFY is lost while no one listens, writers may have ``notify=False``, and an event
        can stay held back behind an older transaction after its own notification.
        """
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be > 0 seconds, got {poll_interval}")
        cursor = after_position
        async with self._connection() as listener:
            await listener.set_autocommit(True)
            await listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
            try:
                while True:
                    async for event in self.replay(
                        event_types=event_types, entity_id=entity_id, after_position=cursor, batch_size=batch_size
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

    async def ahealth(self, timeout: float = 5.0) -> EventStoreHealth:
        """Database health, spool size and breaker state. Never raises because the server is down."""
        report = await self.db.ahealth(timeout)
        size = await asyncio.to_thread(self.spool_size)
        return EventStoreHealth(
            database=report, spool_size=size, spool_path=self.spool_path, breaker=self.breaker.state.value
        )

    def close(self) -> None:
        """Close the spool file (the database block belongs to the caller)."""
        if self._spool is not None:
            self._spool.close()
            self._spool = None

    # ------------------------------------------------------------------ sync faces

    def emit(
        self,
        event_type: str,
        entity_id: str,
        payload: Mapping[str, Any] | None = None,
        *,
        event_id: uuid.UUID | str | None = None,
        occurred_at: datetime | None = None,
        expected_version: int | None = None,
    ) -> uuid.UUID:
        """Sync face of :meth:`aemit` (awaitable in async code)."""
        return sync_or_await(
            self.aemit(
                event_type,
                entity_id,
                payload,
                event_id=event_id,
                occurred_at=occurred_at,
                expected_version=expected_version,
            )
        )

    def emit_many(self, events: Iterable[NewEvent | Mapping[str, Any]]) -> list[uuid.UUID]:
        """Sync face of :meth:`aemit_many` (awaitable in async code)."""
        return sync_or_await(self.aemit_many(events))

    def drain(self) -> int:
        """Sync face of :meth:`adrain` (awaitable in async code)."""
        return sync_or_await(self.adrain())

    def health(self, timeout: float = 5.0) -> EventStoreHealth:
        """Sync face of :meth:`ahealth` (awaitable in async code)."""
        return sync_or_await(self.ahealth(timeout))


def _fields(item: NewEvent | Mapping[str, Any], index: int) -> EventFields:
    if isinstance(item, NewEvent):
        return item  # already (event_type, entity_id, payload, event_id, occurred_at)
    if isinstance(item, Mapping):
        if not item.keys() <= _FIELDS:
            unknown = set(item) - _FIELDS
            raise ValueError(
                f"events[{index}] has unknown key(s) {sorted(unknown)}: allowed are event_type, "
                "entity_id, payload, event_id, occurred_at"
            )
        get = item.get
        return (get("event_type"), get("entity_id"), get("payload"), get("event_id"), get("occurred_at"))
    raise TypeError(f"events[{index}] must be a NewEvent or a mapping, got {type(item).__name__}")
