"""Checkpointed consumers: the log read in commit-safe order, each batch handled exactly once.

Why this shape (the tracking-record rule of ``eventsourcing``, Marten's async daemon, Message
DB's consumer groups):

* **The checkpoint commits with the handler's work.** A consumer keeps its place in
  ``atlas.consumers`` as the cursor ``(xid, position)`` of replay's order. One batch is one
  transaction: lock the consumer (an advisory lock on name and member), read up to ``batch_size``
  events after the cursor with replay's commit-safe rule (``xid`` below the snapshot's xmin),
  hand them and the open connection to the handler, move the cursor, commit. A projection the
  handler writes in PostgreSQL on that connection commits, or rolls back, together with the
  cursor: across crashes and restarts it sees every event exactly once. Work outside
  PostgreSQL (an HTTP call) is at-least-once: it may run again for a batch whose commit was
  lost.
* **Two processes, one consumer: turns, not duplicates.** The lock makes a second
  process with the same name and member wait for the first one's commit and read after the
  cursor it committed.
* **Groups.** ``group_size=N, member=k`` handles only the entities ``atlas.consumer_member``
  (a stable 64-bit hash of ``entity_id`` modulo N) gives to ``k``: N workers share one stream
  without overlap, each entity's events stay in order with one member. The checkpoint
  remembers N and the event types; another N (or other types) is refused with
  :class:`ConsumerError` until the consumer is rebuilt.
* **Handler errors are never skipped silently.** A failing batch is retried with backoff and
  jitter (the one runner, :mod:`prefect_atlas._retry`); then the consumer bisects the batch,
  committing the events before the failing one, retries that event alone, and parks it in
  ``atlas.consumer_dead_letters`` in the transaction that moves the cursor past it: an ERROR
  log line, the ``atlas_consumer_dead_lettered`` counter and the ``on_dead_letter`` callback
  say so. A handler error caused by a lost connection is never parked: it is raised.
* **Rebuild.** :func:`reset` deletes a consumer's checkpoints (every member) and its dead
  letters on the caller's connection, so a projection can be truncated and its consumer reset
  in one transaction; ``rebuild=True`` does that with ``on_rebuild`` as the truncate.

``EventStore.aconsume`` / ``consume`` are the public face; :class:`Consumer` is the loop.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import psycopg
from psycopg import AsyncConnection, sql

from prefect_atlas import _retry, metrics
from prefect_atlas.events.models import ConsumerLag, StoredEvent
from prefect_atlas.events.reader import CHANNEL, EVENT_COLUMNS, Connect, stored_event
from prefect_atlas.exceptions import ConsumerError
from prefect_atlas.resilience import is_connection_failure, is_transient

logger = logging.getLogger("prefect_atlas.events")

__all__ = [
    "ConsumeResult",
    "Consumer",
    "ConsumerDeadLetter",
    "ConsumerLag",
    "DeadLetterCallback",
    "Handler",
    "RebuildHook",
    "consumer_dead_letters",
    "consumer_lag",
    "delete_dead_letter",
    "discord_alert",
    "oldest_checkpoint",
    "record_retry_failure",
    "reset",
    "retry_dead_letter",
]

Handler = Callable[[Sequence[StoredEvent], AsyncConnection[Any]], Awaitable[None]]
"""A consumer's handler: one batch, in commit-safe order, and the batch's open transaction."""

RebuildHook = Callable[[AsyncConnection[Any]], Awaitable[None]]
"""Called by ``rebuild=True`` in the transaction that resets the checkpoint (truncate here)."""

# Longest name a checkpoint row accepts (the table's CHECK).
MAX_NAME = 200
# The advisory lock that serializes creating, checking and resetting a consumer's rows
# (seed 7: the writers' entity locks use seed 0 of the same hash).
_NAME_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('atlas.consumers:' || %s, 7))"


@dataclass(frozen=True, slots=True)
class ConsumeResult:
    """What one ``consume`` call did."""

    name: str
    """The consumer's name."""
    member: int
    """The member of the group that ran (0 when ``group_size`` is 1)."""
    processed: int
    """Events the handler processed and that were committed with the checkpoint."""
    dead_lettered: int
    """Events parked as the consumer's dead letters in this call."""
    batches: int
    """Transactions that committed handled events."""
    caught_up: bool
    """True when the last read reached the commit-safe head of the log."""
    position: int
    """The checkpoint's position at the end (0: nothing processed yet)."""
    xid: int
    """The checkpoint's transaction id at the end (with ``position``, the cursor)."""


@dataclass(frozen=True, slots=True)
class ConsumerDeadLetter:
    """An event a consumer's handler kept failing on, parked so the consumer could go on."""

    consumer: str
    """The consumer's name."""
    member: int
    """The member that parked it."""
    event_id: uuid.UUID
    """The event's id (the event itself stays in ``atlas.events``)."""
    xid: int
    """The event's transaction id."""
    position: int
    """The event's position."""
    event_type: str
    """The event's type."""
    entity_id: str
    """The event's entity."""
    error: str
    """The handler's last error (its type and message)."""
    attempts: int
    """How many times the handler failed on it alone."""
    first_seen: datetime
    """When it was first parked."""
    last_seen: datetime
    """When it was last parked (or a retry failed)."""


DeadLetterCallback = Callable[[ConsumerDeadLetter], Awaitable[None] | None]
"""Called after a dead letter committed (an alert); its own errors are logged, not raised."""


class _Cursor(NamedTuple):
    xid: int
    position: int


class _Batch(NamedTuple):
    handled: int
    short: bool  # fewer events than asked: the read reached the commit-safe head
    cursor: _Cursor


class _HandlerFailed(Exception):
    """The handler raised on these events (the transaction was rolled back)."""

    def __init__(self, events: Sequence[StoredEvent], error: Exception, lost: bool) -> None:
        super().__init__(f"{type(error).__name__}: {error}")
        self.events = events
        self.error = error
        self.lost = lost  # the connection broke: the environment's fault, never parked


def _types(event_types: Sequence[str] | None) -> tuple[str, ...] | None:
    if event_types is None or isinstance(event_types, str):
        if isinstance(event_types, str):
            raise TypeError(
                f"event_types must be a list of types, not the string {event_types!r}: "
                f"write event_types=[{event_types!r}]"
            )
        return None
    found = tuple(sorted(set(event_types)))
    return found or None


def check_name(name: str) -> str:
    """``name`` if a checkpoint can carry it, else :class:`ConsumerError`."""
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME or "\x00" in name:
        raise ConsumerError(
            f"a consumer's name is 1 to {MAX_NAME} characters without NUL, got {name!r}"
        )
    return name


class Consumer:
    """The consume loop of one consumer member (see the module docstring for the rules)."""

    def __init__(
        self,
        connection: Connect,
        name: str,
        handler: Handler,
        *,
        event_types: Sequence[str] | None = None,
        batch_size: int = 500,
        group_size: int = 1,
        member: int = 0,
        max_attempts: int = 5,
        retry_wait: float = 0.2,
        retry_wait_max: float = 10.0,
        on_dead_letter: DeadLetterCallback | None = None,
    ) -> None:
        if not callable(handler):
            raise TypeError(f"handler must be an async callable, got {handler!r}")
        if batch_size < 1:
            raise ConsumerError(f"batch_size must be >= 1, got {batch_size}")
        if group_size < 1:
            raise ConsumerError(f"group_size must be >= 1, got {group_size}")
        if not 0 <= member < group_size:
            raise ConsumerError(
                f"member must be in 0..{group_size - 1} for group_size={group_size}, got {member}"
            )
        if max_attempts < 1:
            raise ConsumerError(f"max_attempts must be >= 1, got {max_attempts}")
        if retry_wait < 0 or retry_wait_max < 0:
            raise ConsumerError("retry_wait and retry_wait_max must be >= 0 seconds")
        self.connection = connection
        """The store's connection factory."""
        self.name = check_name(name)
        """The consumer's name (its checkpoint's key, with ``member``)."""
        self.handler = handler
        """The handler each batch goes to."""
        self.event_types = _types(event_types)
        """The event types read (None: all), sorted."""
        self.batch_size = batch_size
        """Most events per batch (per transaction)."""
        self.group_size = group_size
        """Members the entities are split among."""
        self.member = member
        """This member (0..group_size-1)."""
        self.max_attempts = max_attempts
        """Tries of a failing batch, and of a failing event alone, before it is parked."""
        self.retry_wait = retry_wait
        """First wait between tries, in seconds (doubling, with jitter)."""
        self.retry_wait_max = retry_wait_max
        """Longest wait between tries, in seconds."""
        self.on_dead_letter = on_dead_letter
        """Called after each dead letter committed."""
        self._read = self._read_query()
        self._processed = 0
        self._dead = 0
        self._batches = 0
        self._cursor = _Cursor(0, 0)

    # ------------------------------------------------------------------ the loop

    async def run(
        self,
        *,
        follow: bool = False,
        poll_interval: float = 1.0,
        stop: asyncio.Event | None = None,
        rebuild: bool = False,
        on_rebuild: RebuildHook | None = None,
    ) -> ConsumeResult:
        """Process batches up to the commit-safe head (``follow``: and on, until ``stop``)."""
        if poll_interval <= 0:
            raise ConsumerError(f"poll_interval must be > 0 seconds, got {poll_interval}")
        if on_rebuild is not None and not rebuild:
            raise ConsumerError("on_rebuild is called by a rebuild: pass rebuild=True with it")
        await self._start(rebuild, on_rebuild)
        caught_up = False
        async with AsyncExitStack() as stack:
            listener: AsyncConnection[Any] | None = None
            if follow:
                listener = await stack.enter_async_context(self.connection())
                await listener.set_autocommit(True)
                await listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
                stack.push_async_callback(_unlisten, listener)
            while stop is None or not stop.is_set():
                batch = await self._next()
                caught_up = batch.short
                if not batch.short:
                    continue
                if listener is None:
                    break
                await _wait(listener, poll_interval, stop)
        return ConsumeResult(
            name=self.name,
            member=self.member,
            processed=self._processed,
            dead_lettered=self._dead,
            batches=self._batches,
            caught_up=caught_up,
            position=self._cursor.position,
            xid=self._cursor.xid,
        )

    async def _start(self, rebuild: bool, on_rebuild: RebuildHook | None) -> None:
        async with self.connection() as conn, conn.transaction():
            if rebuild:
                await reset(conn, self.name)
                if on_rebuild is not None:
                    await on_rebuild(conn)
            await self._ensure(conn)
            cur = await conn.execute(
                "SELECT last_xid::text, last_position FROM atlas.consumers "
                "WHERE name = %s AND member = %s",
                [self.name, self.member],
            )
            row = await cur.fetchone()
            assert row is not None
            self._cursor = _Cursor(int(row[0]), row[1])
        if rebuild:
            logger.warning(
                "consumer %r rebuilt: its checkpoints and dead letters were reset, it starts "
                "from the first event",
                self.name,
            )

    async def _ensure(self, conn: AsyncConnection[Any]) -> None:
        """Create this member's checkpoint row, refusing another group size or other types."""
        await conn.execute(_NAME_LOCK, [self.name])
        cur = await conn.execute(
            "SELECT member, group_size, event_types FROM atlas.consumers WHERE name = %s "
            "ORDER BY member",
            [self.name],
        )
        mine = False
        for member, group_size, event_types in await cur.fetchall():
            if group_size != self.group_size:
                raise ConsumerError(
                    f"consumer {self.name!r} runs as a group of {group_size} (member {member}'s "
                    f"checkpoint), not {self.group_size}: entities would move between members "
                    "mid-stream. Rebuild it from zero to change the group size (consume(..., "
                    "rebuild=True) after truncating what it built, or EventStore."
                    "areset_consumer), or pick a new consumer name."
                )
            if _types(event_types) != self.event_types:
                raise ConsumerError(
                    f"consumer {self.name!r} reads event_types={_types(event_types)!r}, not "
                    f"{self.event_types!r}: a changed filter would skip the earlier events of "
                    "the new types. Rebuild it from zero (rebuild=True, or EventStore."
                    "areset_consumer), or pick a new consumer name."
                )
            mine = mine or member == self.member
        if not mine:
            await conn.execute(
                "INSERT INTO atlas.consumers (name, member, group_size, event_types) "
                "VALUES (%s, %s, %s, %s)",
                [
                    self.name,
                    self.member,
                    self.group_size,
                    list(self.event_types) if self.event_types else None,
                ],
            )

    async def _next(self) -> _Batch:
        """One batch, retried while the handler fails; then the failing event is found."""
        try:
            return await self._retried(self.batch_size)
        except _HandlerFailed as failed:
            if failed.lost:
                raise failed.error from None
            logger.warning(
                "consumer %r: handler failed %d time(s) on a batch of %d event(s) (%s); "
                "finding the failing event",
                self.name,
                self.max_attempts,
                len(failed.events),
                failed,
            )
            return await self._isolate(len(failed.events))

    async def _retried(self, limit: int) -> _Batch:
        """:meth:`_attempt` of ``limit`` events, retried with backoff while the handler fails."""
        return await _retry.arun(
            lambda: self._attempt(limit),
            classify=_classify,
            attempts=self.max_attempts,
            timeout=None,
            wait_initial=self.retry_wait,
            wait_max=self.retry_wait_max,
        )

    async def _isolate(self, size: int) -> _Batch:
        """Bisect the failing batch (the ``size`` events after the cursor): commit the events
        before the failing one, retry it alone, park it if it still fails."""
        while size > 1:
            half = size // 2
            try:
                batch = await self._attempt(half)
            except _HandlerFailed as failed:
                if failed.lost:
                    raise failed.error from None
                size = half
                continue
            if batch.handled < half:  # another process moved the cursor meanwhile
                return batch
            size -= half
        try:
            return await self._retried(1)
        except _HandlerFailed as failed:
            if failed.lost:
                raise failed.error from None
            await self._park(failed.events[0], failed)
            return _Batch(0, False, self._cursor)

    # ------------------------------------------------------------------ one transaction

    async def _attempt(self, limit: int) -> _Batch:
        """Lock the checkpoint, read ``limit`` events after it, handle them, move it, commit."""
        async with self.connection() as conn, conn.transaction():
            cursor = await self._lock(conn)
            events, head = await self._fetch(conn, cursor, limit)
            short = len(events) < limit
            if not events and (head is None or head <= cursor):
                self._cursor = cursor
                return _Batch(0, short, cursor)
            if events:
                try:
                    await self.handler(events, conn)
                except Exception as exc:
                    lost = conn.broken or is_connection_failure(exc)
                    raise _HandlerFailed(events, exc, lost) from exc
            last = _Cursor(events[-1].xid, events[-1].position) if events else cursor
            if short and head is not None and head > last:
                last = head  # filtered: the events up to the head are none of ours
            try:
                await self._advance(conn, last, len(events), events[-1] if events else None)
            except psycopg.errors.InFailedSqlTransaction as exc:
                # the handler swallowed an error of its own statement: its work is undone
                raise _HandlerFailed(events, exc, False) from exc
        self._cursor = last
        if events:
            self._processed += len(events)
            self._batches += 1
            metrics.CONSUMER_EVENTS.labels(self.name).inc(len(events))
        return _Batch(len(events), short, last)

    async def _lock(self, conn: AsyncConnection[Any]) -> _Cursor:
        """This member's cursor, locked to commit; recreated if the group was reset.

        The lock is a transaction-level advisory lock on (name, member), not ``FOR UPDATE`` on
        the row: a row lock gives the transaction an id at once, and an open transaction id
        holds back every commit-safe reader of the log (replay, subscribe, other consumers)
        until it ends. With the advisory lock the batch gets an id only when the handler (or
        the final checkpoint update) writes. Two-key advisory locks are a key space of their
        own: they never meet the writers' per-entity locks.
        """
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext('atlas.consumer:' || %s), %s)",
            [self.name, self.member],
        )
        query = (
            "SELECT last_xid::text, last_position FROM atlas.consumers "
            "WHERE name = %s AND member = %s"
        )
        cur = await conn.execute(query, [self.name, self.member])
        row = await cur.fetchone()
        if row is None:  # reset (rebuilt) by another process since we started: from zero
            await self._ensure(conn)
            cur = await conn.execute(query, [self.name, self.member])
            row = await cur.fetchone()
            assert row is not None
        return _Cursor(int(row[0]), row[1])

    def _read_query(self) -> sql.Composed:
        conditions = [
            sql.SQL("xid < pg_snapshot_xmin(pg_current_snapshot())"),
            sql.SQL("(xid, position) > (%(cx)s::xid8, %(cp)s)"),
        ]
        if self.event_types:
            conditions.append(sql.SQL("event_type = ANY(%(types)s)"))
        if self.group_size > 1:
            conditions.append(sql.SQL("atlas.consumer_member(entity_id, %(n)s) = %(k)s"))
        batch = sql.SQL(
            "(SELECT 0 AS head, {} FROM atlas.events WHERE {} "
            "ORDER BY events.xid, events.position LIMIT %(limit)s)"
        ).format(sql.SQL(EVENT_COLUMNS), sql.SQL(" AND ").join(conditions))
        if not (self.event_types or self.group_size > 1):
            return sql.Composed([batch])
        # A filtered consumer also learns the commit-safe head in the same statement (the same
        # snapshot): when it has caught up, its cursor moves there, so the next read does not
        # scan again the events that are not its own.
        head = sql.SQL(
            "(SELECT 1, position, NULL, NULL, NULL, NULL, NULL, NULL, NULL, xid::text AS xid_text "
            "FROM atlas.events WHERE xid < pg_snapshot_xmin(pg_current_snapshot()) "
            "ORDER BY events.xid DESC, events.position DESC LIMIT 1)"
        )
        return sql.SQL("{} UNION ALL {}").format(batch, head)

    async def _fetch(
        self, conn: AsyncConnection[Any], cursor: _Cursor, limit: int
    ) -> tuple[list[StoredEvent], _Cursor | None]:
        params: dict[str, Any] = {
            "cx": str(cursor.xid),
            "cp": cursor.position,
            "limit": limit,
            "types": list(self.event_types or ()),
            "n": self.group_size,
            "k": self.member,
        }
        cur = await conn.execute(self._read, params)
        events: list[StoredEvent] = []
        head: _Cursor | None = None
        for row in await cur.fetchall():
            if row[0]:
                head = _Cursor(int(row[9]), row[1])
            else:
                events.append(stored_event(row[1:]))
        return events, head

    async def _advance(
        self,
        conn: AsyncConnection[Any],
        cursor: _Cursor,
        processed: int,
        last: StoredEvent | None,
        dead: int = 0,
    ) -> None:
        await conn.execute(
            "UPDATE atlas.consumers SET last_xid = %s::xid8, last_position = %s, "
            "processed = processed + %s, dead_lettered = dead_lettered + %s, "
            "last_recorded_at = coalesce(%s, last_recorded_at), updated_at = now() "
            "WHERE name = %s AND member = %s",
            [
                str(cursor.xid),
                cursor.position,
                processed,
                dead,
                last.recorded_at if last is not None else None,
                self.name,
                self.member,
            ],
        )

    async def _park(self, event: StoredEvent, failed: _HandlerFailed) -> None:
        """Park ``event`` as a dead letter and move the cursor past it, in one transaction."""
        async with self.connection() as conn, conn.transaction():
            cursor = await self._lock(conn)
            events, _ = await self._fetch(conn, cursor, 1)
            if not events or events[0].event_id != event.event_id:
                self._cursor = cursor
                return  # another process of this consumer moved on meanwhile
            cur = await conn.execute(
                "INSERT INTO atlas.consumer_dead_letters (consumer, member, event_id, xid, "
                "position, event_type, entity_id, error, attempts) "
                "VALUES (%s, %s, %s, %s::xid8, %s, %s, %s, %s, %s) "
                "ON CONFLICT (consumer, member, event_id) DO UPDATE SET "
                "error = EXCLUDED.error, last_seen = now(), "
                "attempts = consumer_dead_letters.attempts + EXCLUDED.attempts "
                "RETURNING attempts, first_seen, last_seen",
                [
                    self.name,
                    self.member,
                    event.event_id,
                    str(event.xid),
                    event.position,
                    event.event_type,
                    event.entity_id,
                    _printable(str(failed)),
                    self.max_attempts,
                ],
            )
            row = await cur.fetchone()
            assert row is not None
            here = _Cursor(event.xid, event.position)
            await self._advance(conn, here, 0, event, dead=1)
        self._cursor = here
        self._dead += 1
        letter = ConsumerDeadLetter(
            consumer=self.name,
            member=self.member,
            event_id=event.event_id,
            xid=event.xid,
            position=event.position,
            event_type=event.event_type,
            entity_id=event.entity_id,
            error=_printable(str(failed)),
            attempts=row[0],
            first_seen=row[1],
            last_seen=row[2],
        )
        metrics.CONSUMER_DEAD_LETTERED.labels(self.name).inc()
        logger.error(
            "consumer %r (member %d) parked event %s (%s of %r, position %d) as a dead letter "
            "after %d failed attempt(s): %s. The consumer goes on; inspect it with "
            "`prefect-atlas events consumers --dead-letters`, then retry or discard it.",
            self.name,
            self.member,
            event.event_id,
            event.event_type,
            event.entity_id,
            event.position,
            self.max_attempts,
            failed,
        )
        if self.on_dead_letter is not None:
            try:
                outcome = self.on_dead_letter(letter)
                if inspect.isawaitable(outcome):
                    await outcome
            except Exception as exc:  # the dead letter is committed and logged already
                logger.error(
                    "consumer %r: the on_dead_letter callback failed (%s: %s)",
                    self.name,
                    type(exc).__name__,
                    exc,
                )


def _classify(exc: BaseException) -> bool:
    """Handler failures are worth another try; of our own statements, only transient ones."""
    if isinstance(exc, _HandlerFailed):
        return True
    return is_transient(exc)


def _printable(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


async def _wait(listener: AsyncConnection[Any], timeout: float, stop: asyncio.Event | None) -> None:
    """Until a NOTIFY on the events channel, ``timeout`` seconds, or ``stop``, whichever first."""

    async def notified() -> None:
        async for _ in listener.notifies(timeout=timeout, stop_after=1):
            pass

    waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(notified())]
    if stop is not None:
        waiters.append(asyncio.ensure_future(stop.wait()))
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        for waiter in waiters:
            with suppress(asyncio.CancelledError):
                await waiter  # raises what the listener raised (a lost connection, say)


async def _unlisten(listener: AsyncConnection[Any]) -> None:
    if not listener.closed and not listener.broken:
        with suppress(psycopg.Error):
            await listener.execute("UNLISTEN *")
            await listener.set_autocommit(False)


# ---------------------------------------------------------------------- outside the loop


async def reset(conn: AsyncConnection[Any], name: str) -> int:
    """Delete consumer ``name``'s checkpoints (every member) and dead letters; returns how many
    checkpoints there were.

    Runs on the caller's connection and transaction, so a projection's truncate and its
    consumer's reset commit together: the next ``consume`` starts from the first event.
    Members running meanwhile wait for it, then start from zero themselves.
    """
    check_name(name)
    await conn.execute(_NAME_LOCK, [name])
    cur = await conn.execute("DELETE FROM atlas.consumers WHERE name = %s", [name])
    await conn.execute("DELETE FROM atlas.consumer_dead_letters WHERE consumer = %s", [name])
    return cur.rowcount


async def consumer_lag(conn: AsyncConnection[Any], name: str | None = None) -> list[ConsumerLag]:
    """Every consumer member's checkpoint (or ``name``'s) and its lag behind the head."""
    cur = await conn.execute(
        """
        SELECT c.name, c.member, c.group_size, c.event_types, c.last_xid::text, c.last_position,
               c.processed, c.dead_lettered, c.updated_at, l.behind,
               coalesce(extract(epoch FROM now() - l.oldest), 0)::float8,
               (SELECT count(*) FROM atlas.consumer_dead_letters AS d
                 WHERE d.consumer = c.name AND d.member = c.member)
        FROM atlas.consumers AS c
        CROSS JOIN LATERAL (
            SELECT count(*) AS behind, min(e.recorded_at) AS oldest FROM atlas.events AS e
            WHERE (e.xid, e.position) > (c.last_xid, c.last_position)
              AND (c.event_types IS NULL OR e.event_type = ANY(c.event_types))
              AND (c.group_size = 1 OR atlas.consumer_member(e.entity_id, c.group_size) = c.member)
        ) AS l
        WHERE %(name)s::text IS NULL OR c.name = %(name)s
        ORDER BY c.name, c.member
        """,
        {"name": name},
    )
    found = [
        ConsumerLag(
            name=row[0],
            member=row[1],
            group_size=row[2],
            event_types=_types(row[3]),
            xid=int(row[4]),
            position=row[5],
            processed=row[6],
            dead_lettered=row[7],
            updated_at=row[8],
            events_behind=row[9],
            seconds_behind=max(0.0, round(row[10], 3)),
            dead_letters=row[11],
        )
        for row in await cur.fetchall()
    ]
    for lag in found:
        member = str(lag.member)
        metrics.CONSUMER_LAG_EVENTS.labels(lag.name, member).set(lag.events_behind)
        metrics.CONSUMER_LAG_SECONDS.labels(lag.name, member).set(lag.seconds_behind)
    return found


async def consumer_dead_letters(
    conn: AsyncConnection[Any], name: str | None = None, limit: int = 100
) -> list[ConsumerDeadLetter]:
    """The oldest ``limit`` dead letters of every consumer (or of ``name``)."""
    cur = await conn.execute(
        "SELECT consumer, member, event_id, xid::text AS xid_text, position, event_type, "
        "entity_id, error, "
        "attempts, first_seen, last_seen FROM atlas.consumer_dead_letters "
        "WHERE %(name)s::text IS NULL OR consumer = %(name)s "
        "ORDER BY first_seen, consumer, member, xid, position LIMIT %(limit)s",
        {"name": name, "limit": limit},
    )
    return [
        ConsumerDeadLetter(
            consumer=row[0],
            member=row[1],
            event_id=row[2],
            xid=int(row[3]),
            position=row[4],
            event_type=row[5],
            entity_id=row[6],
            error=row[7],
            attempts=row[8],
            first_seen=row[9],
            last_seen=row[10],
        )
        for row in await cur.fetchall()
    ]


async def delete_dead_letter(conn: AsyncConnection[Any], name: str, event_id: uuid.UUID) -> bool:
    """Delete consumer ``name``'s dead letter of ``event_id`` (any member); False if none."""
    cur = await conn.execute(
        "DELETE FROM atlas.consumer_dead_letters WHERE consumer = %s AND event_id = %s",
        [name, event_id],
    )
    return cur.rowcount > 0


async def retry_dead_letter(
    conn: AsyncConnection[Any], name: str, event_id: uuid.UUID, handler: Handler
) -> bool:
    """Run ``handler`` on a parked event and delete its dead letter, in the caller's transaction.

    False when there is no such dead letter (or its event is gone from the log). The handler's
    error is raised (the caller's transaction then rolls back, and the dead letter stays).
    """
    cur = await conn.execute(
        "SELECT 1 FROM atlas.consumer_dead_letters WHERE consumer = %s AND event_id = %s "
        "FOR UPDATE",
        [name, event_id],
    )
    if await cur.fetchone() is None:
        return False
    cur = await conn.execute(
        f"SELECT {EVENT_COLUMNS} FROM atlas.events WHERE event_id = %s", [event_id]
    )
    row = await cur.fetchone()
    if row is None:
        return False
    await handler([stored_event(row)], conn)
    await delete_dead_letter(conn, name, event_id)
    return True


async def record_retry_failure(
    conn: AsyncConnection[Any], name: str, event_id: uuid.UUID, error: BaseException
) -> None:
    """Count a failed retry of a dead letter: one more attempt, its error, ``last_seen``."""
    await conn.execute(
        "UPDATE atlas.consumer_dead_letters SET attempts = attempts + 1, error = %s, "
        "last_seen = now() WHERE consumer = %s AND event_id = %s",
        [_printable(f"{type(error).__name__}: {error}"), name, event_id],
    )


def discord_alert(target: Any, database: str) -> DeadLetterCallback:
    """An ``on_dead_letter`` callback that sends one ops alert per dead letter to ``target`` (a
    :class:`~prefect_atlas.discord.DiscordBlock` or a saved one's name); never raises."""

    async def alert(letter: ConsumerDeadLetter) -> None:
        from prefect_atlas._blocks import resolve_block
        from prefect_atlas.discord import AlertLevel, Channel, DiscordBlock
        from prefect_atlas.resilience import within

        try:
            block = await resolve_block(DiscordBlock, target)
            await within(
                block.asend(
                    f"consumer {letter.consumer!r} parked an event as a dead letter",
                    f"Its handler kept failing on event {letter.event_id} ({letter.event_type} "
                    f"of {letter.entity_id!r}): {letter.error[:500]}. The consumer went on; "
                    "fix the cause, then retry or discard the dead letter.",
                    level=AlertLevel.WARNING,
                    channel=Channel.OPS,
                    fields={
                        "Database": database,
                        "Consumer": f"{letter.consumer} (member {letter.member})",
                        "Next step": "prefect-atlas events consumers --dead-letters",
                    },
                ),
                30.0,
            )
        except Exception as exc:  # the ERROR log line already says it
            logger.warning("consumer dead-letter alert not sent (%s: %s)", type(exc).__name__, exc)

    return alert


async def oldest_checkpoint(conn: AsyncConnection[Any]) -> tuple[int, int] | None:
    """The lowest cursor ``(xid, position)`` among every consumer member; None when there are
    no consumers.

    Consumers read the live table only: retention that drops events after this cursor would
    skip them for the consumer that is behind, so maintenance keeps what lies after it.
    """
    cur = await conn.execute(
        "SELECT c.last_xid::text, c.last_position FROM atlas.consumers AS c "
        "ORDER BY c.last_xid, c.last_position LIMIT 1"
    )
    row = await cur.fetchone()
    return None if row is None else (int(row[0]), row[1])
