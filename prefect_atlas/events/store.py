"""``EventStore``: Atlas's append-only audit trail in PostgreSQL, with a durable local spool.

Why the design (details in docs/events.md):

* **Idempotent.** Every event has a UUID; the table's unique key on it makes a retry, or a
  spooled event drained after it had reached the server, store nothing new.
* **Per-entity versions** come from ``atlas.event_streams`` (one row per entity), bumped
  under a per-entity advisory lock taken *before* the transaction gets its id, so versions
  are gap-free and their order agrees with transaction-id order.
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
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import orjson
import psycopg
from psycopg import AsyncConnection, sql
from pydantic import BaseModel

from prefect_atlas import metrics
from prefect_atlas._dispatch import sync_or_await
from prefect_atlas._paths import atlas_home
from prefect_atlas.database import DatabaseBlock, HealthReport
from prefect_atlas.events.spool import Spool
from prefect_atlas.events.validation import DEFAULT_MAX_PAYLOAD_BYTES, PreparedEvent, prepare
from prefect_atlas.exceptions import AtlasError, DatabaseConnectionError
from prefect_atlas.resilience import CircuitBreaker, is_connection_failure

logger = logging.getLogger("prefect_atlas.events")

Mode = Literal["durable", "strict"]

_DUPLICATE_ID = "AT001"
_VERSION_MISMATCH = "AT002"
_EVENT_ID_KEY = "events_event_id_key"
_DRAIN_BATCH = 1000
# A batch that meets a concurrent writer of the same event id retries this often.
_BATCH_ATTEMPTS = 5

_APPEND_ONE = "SELECT atlas.append_event(%s, %s, %s, %s, %s, %s)"
_LOCK_ENTITIES = (
    "SELECT pg_advisory_xact_lock(k) FROM "
    "(SELECT DISTINCT hashtextextended(e, 0) AS k FROM unnest(%s::text[]) AS e ORDER BY 1) AS keys"
)
_BUMP_STREAMS = (
    "INSERT INTO atlas.event_streams AS s (entity_id, version) "
    "SELECT * FROM unnest(%s::text[], %s::bigint[]) "
    "ON CONFLICT (entity_id) DO UPDATE SET version = s.version + excluded.version "
    "RETURNING entity_id, version"
)
_COPY_EVENTS = (
    "COPY atlas.events (event_id, event_type, entity_id, version, payload, occurred_at) FROM STDIN"
)


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


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to append with :meth:`EventStore.emit_many` (a mapping with these keys works too)."""

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
    needs the Atlas schema (``await db.asetup()``).
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

    async def _to_spool(self, events: Sequence[PreparedEvent], cause: BaseException | None) -> None:
        if any(e.expected_version is not None for e in events):
            # An optimistic-concurrency check cannot be deferred: the caller must know now.
            raise DatabaseConnectionError(
                "cannot check expected_version while PostgreSQL is unreachable; the event was not "
                "stored. Retry later, or emit without expected_version to let it be spooled.",
                target=self.db.describe(),
            ) from cause
        spool = self._get_spool()
        added = await asyncio.to_thread(spool.add, events)
        self._spool_pending = True
        metrics.EVENTS_SPOOLED.inc(added)
        logger.warning(
            "PostgreSQL unavailable (%s); %d event(s) spooled to %s",
            type(cause).__name__ if cause else "circuit breaker open",
            len(events),
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

    async def _guarded(self, events: list[PreparedEvent], *, single: bool) -> None:
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
                if single:
                    await self._append_one(conn, events[0])
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
        metrics.EVENTS_EMITTED.labels("emit" if single else "emit_many").inc(len(events))

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
                ],
            )
        except psycopg.Error as exc:
            if exc.sqlstate == _DUPLICATE_ID:
                return  # stored before: a retry, nothing new
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

    async def _append_batch(self, conn: AsyncConnection[Any], events: Sequence[PreparedEvent]) -> None:
        """Append in one transaction: lock entities, bump versions, COPY the rows."""
        for attempt in range(_BATCH_ATTEMPTS):
            try:
                async with conn.transaction():
                    todo = list(events)
                    if attempt:
                        # An id met the unique key: skip those already stored.
                        cur = await conn.execute(
                            "SELECT event_id FROM atlas.events WHERE event_id = ANY(%s)",
                            [[e.event_id for e in todo]],
                        )
                        known = {row[0] for row in await cur.fetchall()}
                        todo = [e for e in todo if e.event_id not in known]
                        if not todo:
                            return
                    counts: dict[str, int] = {}
                    for e in todo:
                        counts[e.entity_id] = counts.get(e.entity_id, 0) + 1
                    entities = list(counts)
                    await conn.execute(_LOCK_ENTITIES, [entities])
                    cur = await conn.execute(_BUMP_STREAMS, [entities, list(counts.values())])
                    next_version = {
                        entity: top - counts[entity] + 1 for entity, top in await cur.fetchall()
                    }
                    async with conn.cursor().copy(_COPY_EVENTS) as copy:
                        for e in todo:
                            version = next_version[e.entity_id]
                            next_version[e.entity_id] = version + 1
                            await copy.write_row(
                                (e.event_id, e.event_type, e.entity_id, version, e.payload.decode(), e.occurred_at)
                            )
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
        await self._guarded([event], single=True)
        return event.event_id

    async def aemit_many(self, events: Iterable[NewEvent | Mapping[str, Any]]) -> list[uuid.UUID]:
        """Append a batch in one transaction (COPY); returns the ids in input order.

        Versions are assigned in input order per entity, correctly under concurrent writers.
        Ids already stored (or repeated in the batch) are stored once.
        """
        prepared: list[PreparedEvent] = []
        for index, item in enumerate(events):
            data = _as_mapping(item, index)
            try:
                prepared.append(
                    prepare(
                        data.get("event_type"),  # type: ignore[arg-type]
                        data.get("entity_id"),  # type: ignore[arg-type]
                        data.get("payload"),
                        event_id=data.get("event_id"),
                        occurred_at=data.get("occurred_at"),
                        max_payload_bytes=self.max_payload_bytes,
                    )
                )
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"events[{index}]: {exc}") from None
        ids = [e.event_id for e in prepared]
        unique = list({e.event_id: e for e in reversed(prepared)}.values())[::-1]
        if unique:
            await self._guarded(unique, single=False)
        return ids

    async def _drain(self) -> int:
        spool = self._get_spool()
        total = 0
        while True:
            batch = await asyncio.to_thread(spool.peek, _DRAIN_BATCH)
            if not batch:
                break
            async with self._connection() as conn:
                await self._append_batch(conn, batch)
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


def _as_mapping(item: NewEvent | Mapping[str, Any], index: int) -> Mapping[str, Any]:
    if isinstance(item, NewEvent):
        return {
            "event_type": item.event_type,
            "entity_id": item.entity_id,
            "payload": item.payload,
            "event_id": item.event_id,
            "occurred_at": item.occurred_at,
        }
    if isinstance(item, Mapping):
        unknown = set(item) - {"event_type", "entity_id", "payload", "event_id", "occurred_at"}
        if unknown:
            raise ValueError(
                f"events[{index}] has unknown key(s) {sorted(unknown)}: allowed are event_type, "
                "entity_id, payload, event_id, occurred_at"
            )
        return item
    raise TypeError(f"events[{index}] must be a NewEvent or a mapping, got {type(item).__name__}")
