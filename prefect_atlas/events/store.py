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
import sqlite3
import threading
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import orjson
import psycopg
from psycopg import AsyncConnection, postgres, sql
from psycopg.abc import Buffer
from psycopg.adapt import Dumper
from psycopg.pq import Format

from prefect_atlas import _runtime, metrics
from prefect_atlas._dispatch import sync_or_await
from prefect_atlas._health import Health
from prefect_atlas._paths import atlas_home
from prefect_atlas.database import DatabaseBlock, HealthReport
from prefect_atlas.events import dead_letters, segments
from prefect_atlas.events.batch import (
    Batch,
    CheckedBatch,
    EventFields,
    PreparedBatch,
)
from prefect_atlas.events.dead_letters import DeadLetter
from prefect_atlas.events.drainer import (
    BATCH_BYTES,
    BATCH_EVENTS,
    FINAL_SHIP_SECONDS,
    Drainer,
    SpoolRuntime,
)
from prefect_atlas.events.validation import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    PreparedEvent,
    check_event_id,
    prepare,
)
from prefect_atlas.exceptions import ConcurrencyError as ConcurrencyError
from prefect_atlas.exceptions import DatabaseConnectionError
from prefect_atlas.exceptions import DeadLetterError as DeadLetterError
from prefect_atlas.resilience import CircuitBreaker, is_connection_failure, within

if TYPE_CHECKING:
    from prefect_atlas.discord import DiscordBlock
    from prefect_atlas.settings import AtlasSettings
    from prefect_atlas.vault import VaultBlock

logger = logging.getLogger("prefect_atlas.events")

Mode = Literal["durable", "strict"]

_VERSION_MISMATCH = "AT002"
_EVENT_ID_KEY = "events_event_id_key"
# Listing the vault's segments, and claiming one (fetch, store up to 10,000 events, delete).
SEGMENT_SECONDS = 120.0
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


class EventStoreHealth(Health):
    """The database's health plus what only the event store knows (spool, breaker, dead letters).

    ``ok`` is the database's: events reach PostgreSQL. When it is False a durable store still
    accepts events into its local spool (``spool_size`` says how many wait there).
    """

    database: HealthReport
    spool_size: int
    spool_path: str
    breaker: str
    dead_letters: int | None = None  # None when the database could not be asked


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
        emit_timeout: float = 5.0,
        failure_threshold: int = 3,
        reset_timeout: float = 5.0,
        spool_path: str | None = None,
        notify: bool = True,
        background_drain: bool = True,
        spool_vault: VaultBlock | str | None = None,
        alerts: DiscordBlock | str | None = None,
    ) -> None:
        if mode not in ("durable", "strict"):
            raise ValueError(f"mode must be 'durable' or 'strict', got {mode!r}")
        if max_payload_bytes < 2:
            raise ValueError(f"max_payload_bytes must be at least 2, got {max_payload_bytes}")
        if connect_timeout <= 0:
            raise ValueError(f"connect_timeout must be > 0 seconds, got {connect_timeout}")
        if emit_timeout <= 0:
            raise ValueError(f"emit_timeout must be > 0 seconds, got {emit_timeout}")
        # Checked here, used when this store's spool runtime is first made.
        CircuitBreaker(failure_threshold, reset_timeout)
        self.db = db
        self.mode: Mode = mode
        self.max_payload_bytes = max_payload_bytes
        self.connect_timeout = connect_timeout
        self.emit_timeout = emit_timeout
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self.notify = notify
        self.background_drain = background_drain
        # A vault (or the name of a saved one) that keeps spooled events when the worker goes
        # away; default: the ATLAS_SPOOL_VAULT setting.
        settings = _settings() if spool_vault is None or alerts is None else None
        if spool_vault is None and settings is not None:
            spool_vault = settings.atlas_spool_vault
        self.spool_vault: VaultBlock | str | None = spool_vault
        # Where new dead letters raise an ops alert (a block or a saved block's name); default:
        # the ATLAS_DISCORD_BLOCK setting when set, else only the ERROR log line.
        if alerts is None and settings is not None:
            alerts = settings.atlas_discord_block
        self.alerts: DiscordBlock | str | None = alerts
        self._spool_path = spool_path
        self._runtime: SpoolRuntime | None = None

    def __repr__(self) -> str:
        return f"EventStore(db={self.db.describe()!r}, mode={self.mode!r}, breaker={self.breaker.state.value})"

    # ------------------------------------------------------------------ spool

    @property
    def spool_path(self) -> str:
        """The spool file: one per database target, under ``$ATLAS_HOME/spool``."""
        if self._spool_path is None:
            home = atlas_home(create=False)  # created when something is spooled, not before
            self._spool_path = str(home / "spool" / f"events-{self._target_digest()}.sqlite")
        return self._spool_path

    def _target_digest(self) -> str:
        """A short stable name of the database target (no secrets): names the spool file and
        the vault folder of its segments."""
        return hashlib.sha256(self.db.describe().encode()).hexdigest()[:16]

    def _rt(self) -> SpoolRuntime:
        """This spool file's runtime, shared by every store of the process that uses it.

        The breaker's settings are those of the first store that touched the spool file.
        """
        if self._runtime is None:
            path = Path(self.spool_path).absolute()
            self._runtime = _runtime.shared(
                "event-spool",
                str(path),
                lambda: SpoolRuntime(path, CircuitBreaker(self.failure_threshold, self.reset_timeout)),
            )
            # The drainer serves every store of the spool file: it uses the first vault and
            # alert block any of them was given.
            if self._runtime.spool_vault is None:
                self._runtime.spool_vault = self.spool_vault
            if self._runtime.alerts is None:
                self._runtime.alerts = self.alerts
        return self._runtime

    @property
    def breaker(self) -> CircuitBreaker:
        """The circuit breaker of this store's database target (shared in the process)."""
        return self._rt().breaker

    def spool_size(self) -> int:
        """Events waiting in the local spool (also exported as ``atlas_events_spool_size``)."""
        rt = self._rt()
        try:
            size = rt.count()
        except sqlite3.Error as exc:
            # A damaged spool file must not stop emits that PostgreSQL can take.
            rt.stuck = f"the spool {rt.path} cannot be read ({exc})"
            logger.error("%s: emits go straight to PostgreSQL; move the file away to reset it", rt.stuck)
            rt.pending = False
            return 0
        rt.pending = size > 0
        if size and self.mode == "durable":
            self._start_drainer(rt)
        return size

    def _start_drainer(self, rt: SpoolRuntime) -> None:
        """Wake the spool's background drainer, starting it first if this process has none."""
        if not self.background_drain:
            return
        drainer = rt.drainer
        if drainer is None or not drainer.alive:
            with _DRAINER_LOCK:
                if rt.drainer is None or not rt.drainer.alive:
                    owner = self._drain_owner()
                    rt.drainer = Drainer(rt, owner._background_pass, owner.db.aclose)
                    if not rt.exit_registered:
                        rt.exit_registered = True
                        _runtime.on_exit(f"event drainer {rt.path.name}", lambda: _final_drain(rt))
            drainer = rt.drainer
        drainer.wake()

    def _drain_owner(self) -> EventStore:
        """A durable copy of this store for the drainer thread (a strict store drains too)."""
        return EventStore(
            self.db,
            mode="durable",
            max_payload_bytes=self.max_payload_bytes,
            connect_timeout=self.connect_timeout,
            emit_timeout=self.emit_timeout,
            failure_threshold=self.failure_threshold,
            reset_timeout=self.reset_timeout,
            spool_path=self.spool_path,
            notify=self.notify,
            spool_vault=self.spool_vault,
            alerts=self.alerts,
        )

    async def _to_spool(self, events: PreparedEvent | Batch, cause: BaseException | None, why: str = "") -> None:
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
        rt = self._rt()
        try:
            added = await asyncio.to_thread(lambda: rt.spool().add(ready))
        except (OSError, sqlite3.Error) as exc:
            raise DatabaseConnectionError(
                f"event not stored: PostgreSQL is unreachable ({_cause(cause)}) and the local spool "
                f"{self.spool_path} cannot be written ({type(exc).__name__}: {exc}). Make ATLAS_HOME a "
                "writable folder (or pass spool_path=...) so that events can wait there.",
                target=self.db.describe(),
            ) from cause
        rt.pending = True  # after the add: a drain pass that has just finished sees it or is woken
        metrics.EVENTS_SPOOLED.inc(added)
        self._start_drainer(rt)
        if why:
            logger.debug("%d event(s) spooled behind earlier ones: %s", len(ready), why)
        else:
            logger.warning(
                "PostgreSQL unavailable (%s); %d event(s) spooled to %s",
                _cause(cause),
                len(ready),
                self.spool_path,
            )

    def _unavailable(self, cause: BaseException | None) -> DatabaseConnectionError:
        reason = str(cause) if cause else "circuit breaker open after repeated connection failures"
        if isinstance(cause, TimeoutError):
            reason = f"no answer from PostgreSQL within {self.emit_timeout:g} s (EventStore emit_timeout)"
        return DatabaseConnectionError(
            f"event not stored (mode='strict'): {reason}", target=self.db.describe()
        )

    # ------------------------------------------------------------------ connections

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[AsyncConnection[Any]]:
        """A pooled connection, waiting at most ``connect_timeout`` for it (never blocks long)."""
        async with AsyncExitStack() as stack:
            try:
                async with asyncio.timeout(self.connect_timeout):
                    conn = await stack.enter_async_context(self.db.connection())
            except TimeoutError:
                raise DatabaseConnectionError(
                    f"no database connection within {self.connect_timeout:g} s (EventStore connect_timeout)",
                    target=self.db.describe(),
                ) from None
            yield conn

    async def _write(self, events: PreparedEvent | Batch) -> None:
        async with self._connection() as conn:
            if isinstance(events, PreparedEvent):
                await self._append_one(conn, events)
            else:
                await self._append_batch(conn, events)

    async def _guarded(self, events: PreparedEvent | Batch) -> None:
        """Store ``events`` within ``emit_timeout``, or spool them, per mode and breaker."""
        rt = self._rt()
        checks_version = isinstance(events, PreparedEvent) and events.expected_version is not None
        if self.mode == "durable" and not checks_version:  # a version check needs the server now
            if rt.pending is None:
                await asyncio.to_thread(self.spool_size)
            if rt.pending and rt.stuck is None:
                # Older spooled events go first (the drainer is on it), so a process keeps
                # its own order; spooling is a local fsync, never a wait on the server. When
                # the drain fails for another reason than an unreachable server, emits stop
                # queueing behind it (the drainer's ERROR says why).
                await self._to_spool(events, None, why="the spool is not drained yet")
                return
        if not rt.breaker.allow():
            if self.mode == "strict":
                raise self._unavailable(None)
            await self._to_spool(events, None)
            return
        try:
            # A deadline on the whole attempt: a silently partitioned connection otherwise
            # waits for ever once the statement is sent (only connecting is time-bounded).
            await within(self._write(events), self.emit_timeout)
        except Exception as exc:
            if not is_connection_failure(exc):
                rt.breaker.release()
                raise
            rt.breaker.record_failure()
            if self.mode == "strict":
                raise self._unavailable(exc) from exc
            await self._to_spool(events, exc)
            return
        except BaseException:
            rt.breaker.release()  # cancelled: a half-open probe must not hold the breaker
            raise
        rt.breaker.record_success()
        if self.spool_vault is not None and not rt.vault_checked and self.mode == "durable":
            # First contact of this process: segments a lost worker left in the vault are
            # claimed in the background.
            rt.vault_checked = True
            self._start_drainer(rt)
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
        Ids already stored (or repeated in the batch) are stored once. ``events`` may be any
        iterable (a generator too); every field but the payloads is checked before anything
        is sent, and the payloads are serialized while the COPY streams.
        """
        batch = CheckedBatch(
            [_fields(item, index) for index, item in enumerate(events)],
            max_payload_bytes=self.max_payload_bytes,
        )
        if len(batch):
            await self._guarded(batch)
        return batch.ids

    async def _store_spooled(self, conn: AsyncConnection[Any], events: Sequence[PreparedEvent]) -> tuple[int, int]:
        """Store spooled events; park those the server refuses. Returns (stored, parked).

        A refused batch is halved until the refused events stand alone (in order, so the
        others keep theirs); a refusal that is not the event's own fault is raised.
        """
        try:
            await self._append_batch(conn, PreparedBatch(events))
            return len(events), 0
        except Exception as exc:
            state = dead_letters.refusal(exc)
            if state is None:
                raise
            if len(events) > 1:
                middle = len(events) // 2
                first = await self._store_spooled(conn, events[:middle])
                second = await self._store_spooled(conn, events[middle:])
                return first[0] + second[0], first[1] + second[1]
            async with conn.transaction():
                await dead_letters.park(conn, events[0], exc, state)
            logger.error(
                "PostgreSQL refused spooled event %s (%s, SQLSTATE %s): parked in atlas.dead_events; "
                "see `prefect-atlas events dead-letters list`",
                events[0].event_id,
                self.db._redact(" ".join(str(exc).split())),
                state,
            )
            return 0, 1

    async def _drain_pass(self, budget: float | None, *, lock_wait: float) -> DrainResult:
        """Drain the spool under its lock, batch by batch, each batch within a deadline.

        Batches hold at most ``rt.batch_limit`` events and 8 MiB of payload; a batch that
        times out halves the limit, so large events on a slow link still get through.
        """
        rt = self._rt()
        stored = parked = 0
        contacted = False
        started = time.monotonic()
        batch_timeout = max(10.0, self.emit_timeout)
        async with rt.drain_lock(lock_wait) as locked:
            if not locked:
                return DrainResult(0, 0, await asyncio.to_thread(rt.count), locked=False)
            spool = rt.spool()
            while True:
                batch = await asyncio.to_thread(spool.peek, rt.batch_limit, BATCH_BYTES)
                if not batch:
                    break
                timeout = batch_timeout
                if budget is not None:
                    timeout = min(timeout, budget - (time.monotonic() - started))
                    if timeout <= 0:
                        break
                try:
                    ok, dead = await within(self._drain_batch(batch), timeout)
                except TimeoutError:
                    rt.batch_limit = max(1, len(batch) // 2)
                    raise
                contacted = True
                rt.batch_limit = min(BATCH_EVENTS, rt.batch_limit * 2)
                await asyncio.to_thread(spool.remove, [e.event_id for e in batch])
                stored += ok
                parked += dead
                metrics.EVENTS_DRAINED.inc(ok)
                metrics.EVENTS_EMITTED.labels("drain").inc(ok)
            left = await asyncio.to_thread(rt.count)
            if not left:
                rt.pending = False
        if stored:
            logger.info("drained %d spooled event(s) into %s", stored, self.db.describe())
        if parked:
            metrics.EVENTS_DEAD_LETTERED.inc(parked)
            logger.error(
                "%d spooled event(s) were refused by PostgreSQL and parked as dead letters in "
                "atlas.dead_events (%s); the events behind them were stored. Inspect them with "
                "`prefect-atlas events dead-letters list`, then retry or discard them.",
                parked,
                self.db.describe(),
            )
            await self._alert_dead_letters(parked)
        return DrainResult(stored, parked, left, contacted=contacted)

    async def _alert_dead_letters(self, parked: int) -> None:
        """One ops alert for the dead letters a drain just parked (never raises)."""
        target = self.alerts if self.alerts is not None else self._rt().alerts
        if target is None:
            return
        from prefect_atlas._blocks import resolve_block
        from prefect_atlas.discord import AlertLevel, Channel, DiscordBlock

        try:
            block = await resolve_block(DiscordBlock, target)
            await within(
                block.asend(
                    f"{parked} event(s) refused by PostgreSQL: parked as dead letters",
                    "Spooled events the server refused were moved to atlas.dead_events; the events "
                    "behind them were stored. Inspect them, fix the cause, then retry or discard.",
                    level=AlertLevel.WARNING,
                    channel=Channel.OPS,
                    fields={"Database": self.db.describe(), "Next step": "prefect-atlas events dead-letters list"},
                ),
                30.0,
            )
        except Exception as exc:  # the ERROR log line above already says it
            logger.warning("dead-letter alert not sent (%s: %s)", type(exc).__name__, exc)

    async def _drain_batch(self, batch: Sequence[PreparedEvent]) -> tuple[int, int]:
        async with self._connection() as conn:
            return await self._store_spooled(conn, batch)

    def _drain_failed(self, exc: BaseException) -> None:
        """Record a failed drain on the runtime: the breaker for an unreachable server, else
        ``stuck`` (so that emits stop queueing behind a spool that cannot drain)."""
        rt = self._rt()
        if is_connection_failure(exc):
            rt.breaker.record_failure()
        else:
            rt.stuck = f"{type(exc).__name__}: {' '.join(str(exc).split())}"

    def _drain_succeeded(self, result: DrainResult) -> None:
        rt = self._rt()
        rt.stuck = None
        if result.contacted:
            rt.breaker.record_success()

    async def _background_pass(self, budget: float | None) -> int:
        """One pass of the background drainer; returns the events left (raises when it fails).

        ``budget`` is set for the final pass at exit: when PostgreSQL cannot take the spooled
        events then, they are shipped to the spool vault (if there is one) before the worker
        and its disk go away. Otherwise a pass also claims segments found in the vault.
        """
        vault = await self._spool_vault_block()
        try:
            result = await self._drain_pass(budget, lock_wait=0.0)
        except Exception as exc:
            self._drain_failed(exc)
            if budget is not None and vault is not None:
                await self._ship(vault, FINAL_SHIP_SECONDS)
            raise
        if not result.locked:
            return result.left
        self._drain_succeeded(result)
        if vault is not None:
            if budget is not None and result.left:
                await self._ship(vault, FINAL_SHIP_SECONDS)
            elif budget is None:
                await self._claim_segments(vault)
        return result.left

    async def _spool_vault_block(self) -> VaultBlock | None:
        """The spool vault as a block (a name is loaded once); None when unset or unloadable."""
        rt = self._rt()
        target = self.spool_vault if self.spool_vault is not None else rt.spool_vault
        if isinstance(target, str):
            from prefect_atlas._blocks import resolve_block
            from prefect_atlas.vault import VaultBlock

            try:
                target = await resolve_block(VaultBlock, target)
            except Exception as exc:
                logger.warning(
                    "cannot load the spool vault block %r (%s: %s); spooled events stay local",
                    target,
                    type(exc).__name__,
                    exc,
                )
                return None
            if rt.spool_vault is None or isinstance(rt.spool_vault, str):
                rt.spool_vault = target
        return target

    async def _ship(self, vault: VaultBlock, budget: float) -> int:
        """Move the spooled events into the vault as segments (create-only), within ``budget``
        seconds in all; returns how many."""
        rt = self._rt()
        shipped = 0
        deadline = time.monotonic() + budget
        async with rt.drain_lock(min(2.0, budget)) as locked:
            if not locked:
                return 0
            spool = rt.spool()
            while batch := await asyncio.to_thread(spool.peek, segments.SEGMENT_EVENTS):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                path = segments.new_path(self._target_digest())
                data = segments.encode(batch)
                await within(
                    vault.astore_bytes(path, data, overwrite=False, content_type="application/x-ndjson"),
                    left,
                )
                await asyncio.to_thread(spool.remove, [e.event_id for e in batch])
                shipped += len(batch)
        if shipped:
            metrics.SPOOL_SIZE.set(await asyncio.to_thread(rt.count))
            logger.warning(
                "PostgreSQL (%s) unreachable at exit: %d spooled event(s) shipped to the vault %s "
                "under %s/; any drain with that vault stores them",
                self.db.describe(),
                shipped,
                vault.describe(),
                segments.folder(self._target_digest()),
            )
        return shipped

    async def _claim_segments(self, vault: VaultBlock) -> tuple[int, int]:
        """Store the events of every segment of this target found in the vault, then delete it.

        Each segment is claimed under a PostgreSQL advisory lock named after it, so two
        drains never store one segment at once; ids are idempotent besides. Each segment is
        handled within a deadline. Returns (stored, parked).
        """
        stored = parked = 0
        names = await within(vault.alist_objects(segments.folder(self._target_digest())), SEGMENT_SECONDS)
        for name in names:
            claimed = await within(self._claim_segment(vault, name), SEGMENT_SECONDS)
            if claimed is not None:
                stored += claimed[0]
                parked += claimed[1]
        return stored, parked

    async def _claim_segment(self, vault: VaultBlock, name: str) -> tuple[int, int] | None:
        async with self._connection() as conn:
            await conn.set_autocommit(True)  # each batch commits before its segment is deleted
            cur = await conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 1))", [name])
            row = await cur.fetchone()
            if not (row and row[0]):
                return None  # another drain holds it
            try:
                data = await vault.afetch_bytes(name)
                if data is None:
                    return None  # stored and deleted by another drain meanwhile
                try:
                    events = segments.decode(data, name)
                except segments.SegmentError as exc:
                    logger.error("%s; it is left in the vault for inspection", exc)
                    return None
                ok, dead = await self._store_spooled(conn, events)
                await vault.adelete_object(name)
            finally:
                with suppress(psycopg.Error):
                    await conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 1))", [name])
                    await conn.set_autocommit(False)
        metrics.EVENTS_DRAINED.inc(ok)
        logger.info("stored %d event(s) of the vault segment %s", ok, name)
        return ok, dead

    async def adrain(self) -> int:
        """Store every spooled event now (original ids kept); returns how many were stored.

        Events the server refuses are parked as dead letters (see :meth:`adead_letters`) and
        not counted. With a ``spool_vault``, the segments other workers left there are
        stored (and counted) too. When another process (or the background drainer) is
        draining the same spool, this waits for it (up to 60 s) and then drains what is
        left, so the counts of concurrent drains add up to the events spooled.
        """
        rt = self._rt()
        vault = await self._spool_vault_block()
        stored = 0
        try:
            if await asyncio.to_thread(rt.count):
                result = await self._drain_pass(None, lock_wait=60.0)
                if not result.locked:
                    raise DatabaseConnectionError(
                        f"another process kept the spool {self.spool_path} locked for 60 s; try again",
                        target=self.db.describe(),
                    )
                stored += result.stored
                self._drain_succeeded(result)
            else:
                rt.pending = False
            if vault is not None:
                stored += (await self._claim_segments(vault))[0]
        except Exception as exc:
            self._drain_failed(exc)
            raise
        return stored

    # ------------------------------------------------------------------ dead letters

    async def adead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The oldest ``limit`` dead letters: spooled events PostgreSQL refused."""
        async with self._connection() as conn:
            return await dead_letters.fetch(conn, limit)

    async def adead_letter_count(self) -> int:
        async with self._connection() as conn:
            found = await dead_letters.count(conn)
        metrics.DEAD_LETTERS.set(found)
        return found

    async def aretry_dead_letter(self, event_id: uuid.UUID | str) -> uuid.UUID:
        """Append a dead letter to the log again (after the cause was fixed) and remove it.

        Raises :class:`DeadLetterError` when there is no such dead letter or the server
        refuses it again (its reason and attempts are updated).
        """
        key = check_event_id(event_id)
        async with self._connection() as conn:
            async with conn.transaction():
                taken = await dead_letters.take(conn, key)
                if taken is None:
                    raise DeadLetterError(f"no dead letter with event id {key}")
                event = taken[0]
                try:
                    await self._append_batch(conn, PreparedBatch([event]))
                except Exception as exc:
                    state = dead_letters.refusal(exc)
                    if state is None:
                        raise
                    refused = exc
                else:
                    await dead_letters.delete(conn, key)
                    return key
            async with conn.transaction():
                await dead_letters.park(conn, event, refused, state)
        raise DeadLetterError(
            f"PostgreSQL refused event {key} again: {' '.join(str(refused).split())} "
            "(fix the cause, or discard it)"
        ) from None

    async def adiscard_dead_letter(self, event_id: uuid.UUID | str) -> bool:
        """Delete a dead letter for good; False when there was none."""
        key = check_event_id(event_id)
        async with self._connection() as conn:
            return await dead_letters.delete(conn, key)

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
        started = time.perf_counter()
        report = await self.db.ahealth(timeout)
        size = await asyncio.to_thread(self.spool_size)
        dead: int | None = None
        if report.ok:
            with suppress(Exception):  # no dead-letter table yet (schema not set up), or a blip
                dead = await within(self.adead_letter_count(), timeout)
        breaker = self.breaker.state.value
        database = "ok" if report.ok else f"down: {report.detail}"
        detail = (
            f"database {database}; {size} event(s) in the spool; "
            f"breaker {breaker}; dead letters {'unknown' if dead is None else dead}"
        )
        return EventStoreHealth(
            ok=report.ok,
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
            detail=detail,
            database=report,
            spool_size=size,
            spool_path=self.spool_path,
            breaker=breaker,
            dead_letters=dead,
        )

    def close(self) -> None:
        """Release this store. The spool, breaker and drainer belong to the process runtime
        (shared with other stores of the spool file, closed at exit); the database block
        belongs to the caller."""
        self._runtime = None

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

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Sync face of :meth:`adead_letters` (awaitable in async code)."""
        return sync_or_await(self.adead_letters(limit))

    def retry_dead_letter(self, event_id: uuid.UUID | str) -> uuid.UUID:
        """Sync face of :meth:`aretry_dead_letter` (awaitable in async code)."""
        return sync_or_await(self.aretry_dead_letter(event_id))

    def discard_dead_letter(self, event_id: uuid.UUID | str) -> bool:
        """Sync face of :meth:`adiscard_dead_letter` (awaitable in async code)."""
        return sync_or_await(self.adiscard_dead_letter(event_id))


class DrainResult(NamedTuple):
    stored: int
    parked: int
    left: int
    locked: bool = True
    contacted: bool = False  # whether a batch reached PostgreSQL


_DRAINER_LOCK = threading.Lock()


def _cause(cause: BaseException | None) -> str:
    if cause is None:
        return "circuit breaker open"
    if isinstance(cause, TimeoutError):
        return "no answer within emit_timeout"
    return type(cause).__name__


def _final_drain(rt: SpoolRuntime) -> None:
    """At interpreter exit: one bounded drain; report what stays behind."""
    finished = rt.drainer.finish() if rt.drainer is not None else True
    try:
        left = rt.count()
    except Exception:  # the folder may be gone; nothing more to do then
        return
    metrics.SPOOL_LEFT_AT_EXIT.set(left)
    if left:
        why = rt.stuck or "PostgreSQL unreachable"
        logger.warning(
            "%d event(s) are still spooled in %s at exit (%s); they are stored by the next drain "
            "of this spool on this machine (`prefect-atlas events drain`)%s",
            left,
            rt.path,
            why,
            "" if rt.spool_vault is not None else "; set ATLAS_SPOOL_VAULT where the disk does not outlive the worker",
        )
    if finished:
        rt.close()  # a drainer still running keeps its spool open


def _settings() -> AtlasSettings | None:
    """The one settings object (None, with a warning, when the environment is invalid)."""
    from pydantic import ValidationError

    from prefect_atlas.settings import AtlasSettings

    try:
        return AtlasSettings()
    except ValidationError as exc:  # another variable is wrong; that is not emit's business
        logger.warning("settings unreadable, ATLAS_SPOOL_VAULT and ATLAS_DISCORD_BLOCK ignored: %s", exc)
        return None


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
