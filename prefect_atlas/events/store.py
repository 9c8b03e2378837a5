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

How the code is laid out: ``EventStore`` here is the whole public face (every public
method and sync face, with its docstring); the machinery lives by concern in
``models.py`` (value types), ``writer.py`` (the SQL of appending), ``guard.py`` (deadline,
breaker, spool fallback), ``draining.py`` (spool runtime, drain passes, dead-letter
parking), ``shipping.py`` (the spool vault), ``dead_letters.py`` and ``reader.py``
(replay, subscribe). The write and drain paths are base classes (``Guard`` on
``Draining``), not functions, because they share the store's whole state (its settings,
runtime, connections) and are reached from the drainer thread and from tests as methods
(``store._rt()``, ``EventStore._target_digest``); the appending SQL and the reader need
only a connection, so they are plain functions the methods hand one to.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncGenerator, Iterable, Mapping, Sequence
from contextlib import aclosing, suppress
from datetime import datetime
from typing import TYPE_CHECKING, Any

from prefect_atlas import metrics
from prefect_atlas._dispatch import sync_or_await
from prefect_atlas._paths import atlas_home
from prefect_atlas.database import DatabaseBlock
from prefect_atlas.events import archive, archive_replay, consumers, dead_letters, reader
from prefect_atlas.events.archive import ArchiveRecord, ArchiveResult
from prefect_atlas.events.batch import CheckedBatch
from prefect_atlas.events.consumers import ConsumerDeadLetter as ConsumerDeadLetter
from prefect_atlas.events.consumers import ConsumeResult as ConsumeResult
from prefect_atlas.events.consumers import DeadLetterCallback, Handler, RebuildHook
from prefect_atlas.events.dead_letters import DeadLetter
from prefect_atlas.events.drainer import SpoolRuntime
from prefect_atlas.events.draining import _DRAINER_LOCK as _DRAINER_LOCK
from prefect_atlas.events.draining import _final_drain as _final_drain
from prefect_atlas.events.guard import Guard
from prefect_atlas.events.guard import _cause as _cause
from prefect_atlas.events.models import _FIELDS as _FIELDS
from prefect_atlas.events.models import ConsumerLag as ConsumerLag
from prefect_atlas.events.models import DrainResult as DrainResult
from prefect_atlas.events.models import EventStoreHealth as EventStoreHealth
from prefect_atlas.events.models import Mode as Mode
from prefect_atlas.events.models import NewEvent as NewEvent
from prefect_atlas.events.models import StoredEvent as StoredEvent
from prefect_atlas.events.models import event_fields
from prefect_atlas.events.reader import CHANNEL as CHANNEL
from prefect_atlas.events.shipping import SEGMENT_SECONDS as SEGMENT_SECONDS
from prefect_atlas.events.validation import DEFAULT_MAX_PAYLOAD_BYTES, check_event_id, prepare
from prefect_atlas.events.writer import _APPEND_ONE as _APPEND_ONE
from prefect_atlas.events.writer import _BATCH_ATTEMPTS as _BATCH_ATTEMPTS
from prefect_atlas.events.writer import _COPY_EVENTS as _COPY_EVENTS
from prefect_atlas.events.writer import _COPY_TYPES as _COPY_TYPES
from prefect_atlas.events.writer import _EVENT_ID_KEY as _EVENT_ID_KEY
from prefect_atlas.events.writer import _LOCK_ENTITIES as _LOCK_ENTITIES
from prefect_atlas.events.writer import _VERSION_MISMATCH as _VERSION_MISMATCH
from prefect_atlas.events.writer import _EncodedJsonb as _EncodedJsonb
from prefect_atlas.events.writer import _EncodedJsonbDumper as _EncodedJsonbDumper
from prefect_atlas.exceptions import ConcurrencyError as ConcurrencyError
from prefect_atlas.exceptions import DatabaseConnectionError as DatabaseConnectionError
from prefect_atlas.exceptions import DeadLetterError as DeadLetterError
from prefect_atlas.resilience import CircuitBreaker, within

if TYPE_CHECKING:
    from psycopg import AsyncConnection

    from prefect_atlas.discord import DiscordBlock
    from prefect_atlas.events.partitions import Partition
    from prefect_atlas.settings import AtlasSettings
    from prefect_atlas.vault import VaultBlock

logger = logging.getLogger("prefect_atlas.events")


class EventStore(Guard):
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
        archive_vault: VaultBlock | str | None = None,
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
        """The database that holds the event log."""
        self.mode: Mode = mode
        """``"durable"`` (spool when PostgreSQL is down) or ``"strict"`` (raise)."""
        self.max_payload_bytes = max_payload_bytes
        """Largest accepted payload, in bytes of its JSON."""
        self.connect_timeout = connect_timeout
        """Seconds to wait for a database connection before spooling (or raising)."""
        self.emit_timeout = emit_timeout
        """Seconds one emission may take in the database before spooling (or raising)."""
        self.failure_threshold = failure_threshold
        """Connection failures in a row that open the circuit breaker."""
        self.reset_timeout = reset_timeout
        """Seconds the open breaker waits before trying the database again."""
        self.notify = notify
        """Whether emissions send a NOTIFY that wakes ``subscribe`` readers at once."""
        self.background_drain = background_drain
        """Whether spooled events are pushed to PostgreSQL in the background once it is back."""
        # A vault (or the name of a saved one) that keeps spooled events when the worker goes
        # away; default: the ATLAS_SPOOL_VAULT setting.
        settings = _settings() if spool_vault is None or alerts is None else None
        if spool_vault is None and settings is not None:
            spool_vault = settings.atlas_spool_vault
        self.spool_vault: VaultBlock | str | None = spool_vault
        """Vault (or saved vault's name) that keeps spooled events when the worker goes away."""
        # Where new dead letters raise an ops alert (a block or a saved block's name); default:
        # the ATLAS_DISCORD_BLOCK setting when set, else only the ERROR log line.
        if alerts is None and settings is not None:
            alerts = settings.atlas_discord_block
        self.alerts: DiscordBlock | str | None = alerts
        """Discord block (or saved block's name) alerted on new dead letters."""
        self.archive_vault: VaultBlock | str | None = archive_vault
        """Vault (or saved vault's name) holding archived partitions (``include_archive``)."""
        self._spool_path = spool_path
        self._runtime: SpoolRuntime | None = None

    def __repr__(self) -> str:
        breaker = self.breaker.state.value
        return f"EventStore(db={self.db.describe()!r}, mode={self.mode!r}, breaker={breaker})"

    # ------------------------------------------------------------------ spool

    @property
    def spool_path(self) -> str:
        """The spool file: one per database target, under ``$ATLAS_HOME/spool``."""
        if self._spool_path is None:
            home = atlas_home(create=False)  # created when something is spooled, not before
            self._spool_path = str(home / "spool" / f"events-{self._target_digest()}.sqlite")
        return self._spool_path

    @property
    def breaker(self) -> CircuitBreaker:
        """The circuit breaker of this store's database target (shared in the process)."""
        return self._rt().breaker

    def spool_size(self) -> int:
        """Events waiting in the local spool (also exported as ``atlas_events_spool_size``)."""
        return self._count_spool()

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
            [event_fields(item, index) for index, item in enumerate(events)],
            max_payload_bytes=self.max_payload_bytes,
        )
        if len(batch):
            await self._guarded(batch)
        return batch.ids

    async def adrain(self) -> int:
        """Store every spooled event now (original ids kept); returns how many were stored.

        Events the server refuses are parked as dead letters (see :meth:`adead_letters`) and
        not counted. With a ``spool_vault``, the segments other workers left there are
        stored (and counted) too. When another process (or the background drainer) is
        draining the same spool, this waits for it (up to 60 s) and then drains what is
        left, so the counts of concurrent drains add up to the events spooled.
        """
        return await self._drain_now()

    # ------------------------------------------------------------------ dead letters

    async def adead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The oldest ``limit`` dead letters: spooled events PostgreSQL refused."""
        async with self._connection() as conn:
            return await dead_letters.fetch(conn, limit)

    async def adead_letter_count(self) -> int:
        """How many events PostgreSQL refused wait in the dead-letter table."""
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
            refused = await dead_letters.retry(conn, key, notify=self.notify)
        if refused is None:
            return key
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

    def replay(
        self,
        *,
        event_types: Sequence[str] | None = None,
        entity_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after_position: int | None = None,
        batch_size: int = 1000,
        recorded_since: datetime | None = None,
        recorded_until: datetime | None = None,
        include_archive: bool = False,
    ) -> AsyncGenerator[StoredEvent, None]:
        """Yield committed events in commit-safe order, read ``batch_size`` at a time.

        The order is (transaction id, position), and only events of transactions older than
        every transaction still running are returned, so resuming with ``after_position`` set
        to the last position seen never skips an event that was in flight. ``since``/``until``
        filter on ``occurred_at`` (inclusive / exclusive). The iterator ends when it has
        caught up; call again later to continue.

        A long replay streams through a server-side cursor while the caller keeps up (each
        cursor lives at most about a second); a caller slower than 0.1 s a batch gets each
        batch read before it is handed over, so it holds no transaction while it works. With
        a pool of one connection (``max_size=1``) it never streams: the caller's own queries
        inside the loop would wait for the cursor's connection.

        ``recorded_since``/``recorded_until`` filter on ``recorded_at`` (server time, the
        log's partition key; inclusive / exclusive): only the partitions of that range are
        read.

        ``include_archive=True`` also reads the partitions retention archived to
        ``archive_vault`` (see :meth:`aarchive_partition`): the same events, order and
        filters as before they were archived, and ``after_position`` may be an archived
        event's.
        """
        # The reader's own generator, not one wrapping it: a hop per event costs a replay
        # about 3 % of its speed.
        if include_archive:
            return archive_replay.replay(
                self._connection,
                self._archive_vault,
                event_types=event_types,
                entity_id=entity_id,
                since=since,
                until=until,
                after_position=after_position,
                batch_size=batch_size,
                recorded_since=recorded_since,
                recorded_until=recorded_until,
            )
        return reader.replay(
            self._connection,
            event_types=event_types,
            entity_id=entity_id,
            since=since,
            until=until,
            after_position=after_position,
            batch_size=batch_size,
            recorded_since=recorded_since,
            recorded_until=recorded_until,
            stream=self.db.max_size > 1,
        )

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
        async with aclosing(
            reader.subscribe(
                self._connection,
                self.replay,
                event_types=event_types,
                entity_id=entity_id,
                after_position=after_position,
                poll_interval=poll_interval,
                batch_size=batch_size,
            )
        ) as events:
            async for event in events:
                yield event

    async def ahealth(self, timeout: float = 5.0) -> EventStoreHealth:
        """Database health, spool size, breaker state; never raises for a server that is down."""
        started = time.perf_counter()
        report = await self.db.ahealth(timeout)
        size = await asyncio.to_thread(self.spool_size)
        dead: int | None = None
        lags: list[ConsumerLag] | None = None
        if report.ok:
            with suppress(Exception):  # no dead-letter table yet (schema not set up), or a blip
                dead = await within(self.adead_letter_count(), timeout)
            with suppress(Exception):  # no consumers table yet (schema not set up), or a blip
                lags = await within(self.aconsumer_lag(), timeout)
        breaker = self.breaker.state.value
        database = "ok" if report.ok else f"down: {report.detail}"
        detail = (
            f"database {database}; {size} event(s) in the spool; "
            f"breaker {breaker}; dead letters {'unknown' if dead is None else dead}"
        )
        if lags:
            behind = max(lags, key=lambda lag: (lag.events_behind, lag.seconds_behind))
            detail += (
                f"; {len(lags)} consumer member(s), most behind {behind.name!r}/{behind.member}: "
                f"{behind.events_behind} event(s), {behind.seconds_behind:g} s"
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
            consumers=lags,
        )

    def close(self) -> None:
        """Release this store. The spool, breaker and drainer belong to the process runtime
        (shared with other stores of the spool file, closed at exit); the database block
        belongs to the caller."""
        self._runtime = None

    # ------------------------------------------------------------------ archive

    async def _archive_vault(self, vault: VaultBlock | str | None = None) -> VaultBlock:
        from prefect_atlas._blocks import resolve_block
        from prefect_atlas.vault import VaultBlock

        chosen = self.archive_vault if vault is None else vault
        if chosen is None:
            raise ValueError(
                "reading or writing the archive needs a vault: EventStore(db, archive_vault=...)"
            )
        return await resolve_block(VaultBlock, chosen)

    async def aarchive_partition(
        self,
        partition: Partition,
        *,
        vault: VaultBlock | str | None = None,
        drop: bool = True,
        verify_content: bool = True,
    ) -> ArchiveResult:
        """Export a whole partition to the archive vault as Parquet, verify it, then drop it.

        Nothing is dropped whose archive did not verify; running it again after a crash
        resumes (see :func:`prefect_atlas.events.archive.aarchive_partition`). ``vault``
        defaults to ``archive_vault``.
        """
        return await archive.aarchive_partition(
            self.db,
            await self._archive_vault(vault),
            partition,
            drop=drop,
            verify_content=verify_content,
        )

    async def alist_archives(self) -> list[ArchiveRecord]:
        """The archived partitions (``atlas.event_archives``), oldest first."""
        async with self._connection() as conn:
            return await archive.alist_archives(conn)

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

    # ------------------------------------------------------------------ consumers

    async def aconsume(
        self,
        name: str,
        handler: Handler,
        *,
        event_types: Sequence[str] | None = None,
        batch_size: int = 500,
        group_size: int = 1,
        member: int = 0,
        follow: bool = False,
        poll_interval: float = 1.0,
        max_attempts: int = 5,
        stop: asyncio.Event | None = None,
        rebuild: bool = False,
        on_rebuild: RebuildHook | None = None,
        on_dead_letter: DeadLetterCallback | None = None,
        retry_wait: float = 0.2,
        retry_wait_max: float = 10.0,
    ) -> ConsumeResult:
        """Run consumer ``name``: ``handler(batch, conn)`` gets the events after its checkpoint,
        in commit-safe order, each batch in one transaction that also moves the checkpoint.

        ``conn`` is that transaction's connection: what the handler writes with it commits
        with the checkpoint, so a projection in PostgreSQL sees every event exactly once,
        across crashes and restarts (two processes of one consumer take turns per batch).
        ``follow=False`` returns at the commit-safe head; ``follow=True`` goes on (LISTEN plus
        polling every ``poll_interval`` s) until ``stop`` is set or the task is cancelled.
        ``group_size=N, member=k`` handles only the entities a stable hash of ``entity_id``
        gives to member ``k`` (each entity's events stay in order); the checkpoint keeps N and
        ``event_types`` and refuses others (:class:`~prefect_atlas.exceptions.ConsumerError`)
        until a rebuild. A failing batch is tried ``max_attempts`` times (backoff from
        ``retry_wait`` s, with jitter), then the failing event is found, tried alone as often,
        and parked as the consumer's dead letter (logged, counted, ``on_dead_letter`` called;
        by default an ops alert to the store's ``alerts`` block when set); the consumer goes on.
        ``rebuild=True`` first deletes the consumer's checkpoints (every member) and dead
        letters, and calls ``on_rebuild(conn)`` (truncate the projection there) in the same
        transaction. See docs/events.md, "Consumers".
        """
        if on_dead_letter is None and self.alerts is not None:
            on_dead_letter = consumers.discord_alert(self.alerts, self.db.describe())
        consumer = consumers.Consumer(
            self._connection,
            name,
            handler,
            event_types=event_types,
            batch_size=batch_size,
            group_size=group_size,
            member=member,
            max_attempts=max_attempts,
            retry_wait=retry_wait,
            retry_wait_max=retry_wait_max,
            on_dead_letter=on_dead_letter,
        )
        return await consumer.run(
            follow=follow,
            poll_interval=poll_interval,
            stop=stop,
            rebuild=rebuild,
            on_rebuild=on_rebuild,
        )

    async def aconsumer_lag(self, name: str | None = None) -> list[ConsumerLag]:
        """Each consumer member's checkpoint (or only ``name``'s) and how far behind the head
        of the log it is: committed events of its share after the checkpoint, and the age in
        seconds of the oldest of them. Also sets the ``atlas_consumer_lag_*`` gauges."""
        async with self._connection() as conn:
            return await consumers.consumer_lag(conn, name)

    async def areset_consumer(self, name: str, *, conn: AsyncConnection[Any] | None = None) -> int:
        """Reset consumer ``name`` to the first event: delete its checkpoints (every member) and
        its dead letters; returns how many checkpoints there were.

        Pass ``conn`` (inside your transaction) to reset it together with the truncate of
        what it built, so both commit or neither does.
        """
        if conn is not None:
            return await consumers.reset(conn, name)
        async with self._connection() as own, own.transaction():
            return await consumers.reset(own, name)

    async def aconsumer_dead_letters(
        self, name: str | None = None, limit: int = 100
    ) -> list[ConsumerDeadLetter]:
        """The oldest ``limit`` events consumers parked (only ``name``'s when given)."""
        async with self._connection() as conn:
            return await consumers.consumer_dead_letters(conn, name, limit)

    async def aretry_consumer_dead_letter(
        self, name: str, event_id: uuid.UUID | str, handler: Handler
    ) -> uuid.UUID:
        """Run ``handler`` on a parked event again and, when it succeeds, delete the dead letter
        (one transaction). The event is handled after the events behind it were.

        Raises :class:`DeadLetterError` when there is no such dead letter, or the handler
        fails again (its attempts and error are updated; the dead letter stays).
        """
        key = check_event_id(event_id)
        try:
            async with self._connection() as conn, conn.transaction():
                found = await consumers.retry_dead_letter(conn, name, key, handler)
        except DatabaseConnectionError:
            raise
        except Exception as exc:
            async with self._connection() as conn:
                await consumers.record_retry_failure(conn, name, key, exc)
            raise DeadLetterError(
                f"consumer {name!r}'s handler failed on event {key} again "
                f"({type(exc).__name__}: {exc}); fix the cause, or discard it"
            ) from exc
        if not found:
            raise DeadLetterError(f"consumer {name!r} has no dead letter of event {key}")
        return key

    async def adiscard_consumer_dead_letter(self, name: str, event_id: uuid.UUID | str) -> bool:
        """Delete a consumer's dead letter for good (the event stays in the log); False when
        there was none."""
        key = check_event_id(event_id)
        async with self._connection() as conn:
            return await consumers.delete_dead_letter(conn, name, key)

    def consume(
        self,
        name: str,
        handler: Handler,
        *,
        event_types: Sequence[str] | None = None,
        batch_size: int = 500,
        group_size: int = 1,
        member: int = 0,
        follow: bool = False,
        poll_interval: float = 1.0,
        max_attempts: int = 5,
        stop: asyncio.Event | None = None,
        rebuild: bool = False,
        on_rebuild: RebuildHook | None = None,
        on_dead_letter: DeadLetterCallback | None = None,
        retry_wait: float = 0.2,
        retry_wait_max: float = 10.0,
    ) -> ConsumeResult:
        """Sync face of :meth:`aconsume` (awaitable in async code); the handler stays async."""
        return sync_or_await(
            self.aconsume(
                name,
                handler,
                event_types=event_types,
                batch_size=batch_size,
                group_size=group_size,
                member=member,
                follow=follow,
                poll_interval=poll_interval,
                max_attempts=max_attempts,
                stop=stop,
                rebuild=rebuild,
                on_rebuild=on_rebuild,
                on_dead_letter=on_dead_letter,
                retry_wait=retry_wait,
                retry_wait_max=retry_wait_max,
            )
        )

    def consumer_lag(self, name: str | None = None) -> list[ConsumerLag]:
        """Sync face of :meth:`aconsumer_lag` (awaitable in async code)."""
        return sync_or_await(self.aconsumer_lag(name))

    def reset_consumer(self, name: str) -> int:
        """Sync face of :meth:`areset_consumer` without ``conn`` (awaitable in async code)."""
        return sync_or_await(self.areset_consumer(name))

    def consumer_dead_letters(
        self, name: str | None = None, limit: int = 100
    ) -> list[ConsumerDeadLetter]:
        """Sync face of :meth:`aconsumer_dead_letters` (awaitable in async code)."""
        return sync_or_await(self.aconsumer_dead_letters(name, limit))

    def discard_consumer_dead_letter(self, name: str, event_id: uuid.UUID | str) -> bool:
        """Sync face of :meth:`adiscard_consumer_dead_letter` (awaitable in async code)."""
        return sync_or_await(self.adiscard_consumer_dead_letter(name, event_id))

    def archive_partition(
        self,
        partition: Partition,
        *,
        vault: VaultBlock | str | None = None,
        drop: bool = True,
        verify_content: bool = True,
    ) -> ArchiveResult:
        """Sync face of :meth:`aarchive_partition` (awaitable in async code)."""
        return sync_or_await(
            self.aarchive_partition(
                partition, vault=vault, drop=drop, verify_content=verify_content
            )
        )

    def list_archives(self) -> list[ArchiveRecord]:
        """Sync face of :meth:`alist_archives` (awaitable in async code)."""
        return sync_or_await(self.alist_archives())


_fields = event_fields  # the name the batch builder had here


def _settings() -> AtlasSettings | None:
    """The one settings object (None, with a warning, when the environment is invalid)."""
    from pydantic import ValidationError

    from prefect_atlas.settings import AtlasSettings

    try:
        return AtlasSettings()
    except ValidationError as exc:  # another variable is wrong; that is not emit's business
        logger.warning(
            "settings unreadable, ATLAS_SPOOL_VAULT and ATLAS_DISCORD_BLOCK ignored: %s", exc
        )
        return None
