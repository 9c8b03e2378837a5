"""The relay: the ``prefect-relay`` consumer that publishes the event log into Prefect's events.

Why it works the way it does (details in docs/events.md, "Relay to Prefect"):

* **At least once, acknowledged.** A batch is the next ``batch_size`` events after the
  consumer's checkpoint, by the log's commit-safe rule and order. It is sent to Prefect's
  ``POST /events`` (one request, a few when large) and read back through
  ``POST /events/filter`` by id until the server has *stored* every event; only then does a
  consumer transaction (``EventStore.aconsume``) move the checkpoint past it. ``POST /events``
  alone answers 204 once the events are on the server's message bus, before the event
  persister writes them (and the persister drops events when its queue is full); Prefect's
  websocket client only knows that its frames were received, and ``emit_event`` swallows
  every error. A crash anywhere before the commit sends the batch again on restart.
* **Outside the consumer's transaction.** That transaction locks the checkpoint row, which
  gives it a transaction id, and every commit-safe reader of the log (replay, subscribe, the
  other consumers) waits for the transactions with an id to end: it must never wait for
  another server. So the publishing comes first and the transaction only checks that its
  batch is the one published (another process of the relay may have moved the checkpoint:
  then it publishes the difference itself, within a bound) and commits.
* **Duplicates are free.** The Prefect event id is the Atlas event id, and the server keeps
  one event per id (the persister inserts with ``ON CONFLICT DO NOTHING``; the message bus
  and the automation triggers skip ids they saw recently), so a batch sent again after a
  crash stores nothing twice and fires no automation twice.
* **Never blocked by one event, never parking on an outage.** Transport errors, timeouts,
  ``408/429/5xx`` answers and events not stored in time are retried with backoff
  (``_retry.arun``) for as long as it takes: the relay waits (its lag grows) instead of
  giving events up while Prefect is down. A permanent refusal (``422`` for an event Prefect
  cannot take) is :class:`~prefect_atlas.exceptions.RelayRefusedError`: the batch is handed
  to the consumer unpublished, whose handler publishes it in its transaction, and the
  consumer's bisection finds the refused event and parks it as its dead letter. An outage
  met there is :class:`~prefect_atlas.exceptions.RelayUnavailableError` (a
  ``ConnectionError``: a consumer raises it and never parks for it), retried here.

The mapping: event ``atlas.<event_type>``, resource ``atlas.entity.<entity_id>`` (labels
``prefect.resource.name``, ``atlas.event-type``, ``atlas.version``, ``atlas.position``),
related resources from the payload's ``flow_run_id``, ``task_run_id``, ``flow_id``,
``deployment_id`` and ``channel_id`` (and an entity ``flow-run:<id>``), ``occurred`` =
``occurred_at``, ``id`` = ``event_id``, and the payload, trimmed to Prefect's size limit
with an ``atlas.trimmed`` marker when it would not fit.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import orjson
import psycopg
from psycopg import AsyncConnection, sql

from prefect_atlas import _retry, metrics
from prefect_atlas._dispatch import sync_or_await
from prefect_atlas.events.models import StoredEvent
from prefect_atlas.events.reader import CHANNEL, EVENT_COLUMNS, stored_event
from prefect_atlas.exceptions import (
    RelayNotStoredError,
    RelayRefusedError,
    RelayUnavailableError,
)
from prefect_atlas.resilience import is_connection_failure

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient
    from prefect.events import Event

    from prefect_atlas.events.store import EventStore

logger = logging.getLogger("prefect_atlas.events.relay")

CONSUMER = "prefect-relay"
"""The consumer name of the relay (its checkpoint and dead letters are kept under it)."""

EVENT_PREFIX = "atlas."
"""Prefect event names are this prefix plus the Atlas event type."""

RESOURCE_PREFIX = "atlas.entity."
"""Prefect resource ids are this prefix plus the Atlas entity id."""

TRIMMED = "atlas.trimmed"
"""Payload key (and resource label) that marks an event whose payload was trimmed to fit."""

# Room left under Prefect's size limit for what the server adds (``received``, ``follows``)
# and for pydantic's JSON differing from orjson's (escapes, float spelling).
SIZE_MARGIN = 16 * 1024

# At most this many bytes of JSON per POST /events (a large batch is split).
MAX_REQUEST_BYTES = 8 * 1024 * 1024

# The server answers at most this many events per /events/filter page.
READ_PAGE = 50

# Payload keys naming Prefect objects: key -> (resource kind, role).
_PREFECT_IDS = {
    "flow_run_id": ("prefect.flow-run", "flow-run"),
    "task_run_id": ("prefect.task-run", "task-run"),
    "flow_id": ("prefect.flow", "flow"),
    "deployment_id": ("prefect.deployment", "deployment"),
}


def limits() -> tuple[int, int]:
    """Prefect's limits as this process's settings give them: (event bytes, related resources).

    ``PREFECT_EVENTS_MAXIMUM_SIZE_BYTES`` (1,500,000 by default; the server silently drops a
    larger event) and ``PREFECT_EVENTS_MAXIMUM_RELATED_RESOURCES`` (100; the server refuses
    more with 422). Set them like the server's when the server's differ.
    """
    from prefect.settings import (
        PREFECT_EVENTS_MAXIMUM_RELATED_RESOURCES,
        PREFECT_EVENTS_MAXIMUM_SIZE_BYTES,
    )

    return int(PREFECT_EVENTS_MAXIMUM_SIZE_BYTES.value()), int(
        PREFECT_EVENTS_MAXIMUM_RELATED_RESOURCES.value()
    )


def related_resources(event: StoredEvent) -> list[dict[str, str]]:
    """The Prefect objects (and the channel) an Atlas event names, as related resources.

    Read from the payload's ``flow_run_id``, ``task_run_id``, ``flow_id`` and
    ``deployment_id`` (when they are UUIDs) and ``channel_id``, and from an entity id
    ``flow-run:<uuid>`` (the ingest flow's ``ingest.completed``).
    """
    payload = event.payload if isinstance(event.payload, Mapping) else {}
    related: list[dict[str, str]] = []
    seen: set[str] = set()

    def add(resource_id: str, role: str) -> None:
        if resource_id not in seen:
            seen.add(resource_id)
            related.append({"prefect.resource.id": resource_id, "prefect.resource.role": role})

    for key, (kind, role) in _PREFECT_IDS.items():
        value = _uuid(payload.get(key))
        if value is not None:
            add(f"{kind}.{value}", role)
    if event.entity_id.startswith("flow-run:"):
        value = _uuid(event.entity_id.removeprefix("flow-run:"))
        if value is not None:
            add(f"prefect.flow-run.{value}", "flow-run")
    channel = payload.get("channel_id")
    if isinstance(channel, str) and channel:
        add(f"atlas.channel.{channel}", "channel")
    return related


def _uuid(value: object) -> uuid.UUID | None:
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            return None
    return None


def prefect_event_json(
    event: StoredEvent, *, max_bytes: int | None = None, max_related: int | None = None
) -> dict[str, Any]:
    """The Prefect event for ``event``, as the JSON object ``POST /events`` takes.

    ``max_bytes`` (default: Prefect's ``PREFECT_EVENTS_MAXIMUM_SIZE_BYTES``) bounds the
    serialized event: when it would be larger, the largest payload values are dropped until
    it fits (less :data:`SIZE_MARGIN`), and the payload gets ``"atlas.trimmed": {...}``
    (original bytes, dropped keys) and the resource the label ``atlas.trimmed = "true"``.
    ``max_related`` (default: ``PREFECT_EVENTS_MAXIMUM_RELATED_RESOURCES``) caps the related
    resources.
    """
    if max_bytes is None or max_related is None:
        default_bytes, default_related = limits()
        max_bytes = default_bytes if max_bytes is None else max_bytes
        max_related = default_related if max_related is None else max_related
    payload: dict[str, Any]
    if isinstance(event.payload, Mapping):
        payload = dict(event.payload)
    elif event.payload is None:
        payload = {}
    else:  # the log stores objects; a scalar or list written by hand still travels
        payload = {"value": event.payload}
    resource = {
        "prefect.resource.id": f"{RESOURCE_PREFIX}{event.entity_id}",
        "prefect.resource.name": event.entity_id,
        "atlas.event-type": event.event_type,
        "atlas.version": str(event.version),
        "atlas.position": str(event.position),
    }
    body: dict[str, Any] = {
        "id": str(event.event_id),
        "event": f"{EVENT_PREFIX}{event.event_type}",
        "occurred": event.occurred_at.isoformat(),
        "resource": resource,
        "related": related_resources(event)[: max(0, max_related)],
        "payload": payload,
    }
    size = len(orjson.dumps(body))
    budget = max_bytes - SIZE_MARGIN
    if size > budget:
        body["payload"] = _trimmed(payload, size, budget)
        resource[TRIMMED] = "true"
    return body


def _trimmed(payload: dict[str, Any], size: int, budget: int) -> dict[str, Any]:
    """``payload`` without its largest values, so that the event's ``size`` fits ``budget``."""
    sizes = sorted(
        ((len(orjson.dumps({key: value})), key) for key, value in payload.items()),
        reverse=True,
    )
    kept = dict(payload)
    dropped: list[str] = []
    # what the marker adds: its keys and at most 100 dropped names of at most 200 characters
    over = size - budget + 1024
    for item_bytes, key in sizes:
        if over <= 0:
            break
        del kept[key]
        dropped.append(key)
        over -= item_bytes
    marker: dict[str, Any] = {
        "original_bytes": size,
        "dropped_keys": [key[:200] for key in dropped[:100]],
        "dropped_count": len(dropped),
    }
    while len(orjson.dumps(marker)) > 1024 - 64:  # names of many long keys: fewer names
        marker["dropped_keys"] = marker["dropped_keys"][: len(marker["dropped_keys"]) // 2]
    kept[TRIMMED] = marker
    return kept


def to_prefect_event(
    event: StoredEvent, *, max_bytes: int | None = None, max_related: int | None = None
) -> Event:
    """The relayed form of ``event`` as a :class:`prefect.events.Event` (checked by its model)."""
    from prefect.events import Event

    return Event.model_validate(
        prefect_event_json(event, max_bytes=max_bytes, max_related=max_related)
    )


def classify(exc: BaseException) -> bool | float:
    """The relay's retry classifier: transport failures, timeouts, ``408/429/5xx`` and events
    not stored yet are transient; every other HTTP answer (``422``...) is permanent."""
    import httpx

    if isinstance(exc, RelayNotStoredError):
        return True
    if isinstance(exc, httpx.HTTPStatusError):
        return _retry.http_verdict(exc.response.status_code, exc.response.headers)
    if isinstance(exc, httpx.TransportError):
        return True
    return _retry.transport_failure(exc, ("httpx", "httpcore"), ("Timeout", "Connect"))


def _refused(exc: BaseException) -> Exception | None:
    """A permanent HTTP refusal as a :class:`RelayRefusedError` (None: keep the error)."""
    import httpx

    if isinstance(exc, httpx.HTTPStatusError) and classify(exc) is False:
        detail = " ".join(exc.response.text.split())[:500]
        return RelayRefusedError(
            f"Prefect refused the events with HTTP {exc.response.status_code}: {detail}"
        )
    return None


class PrefectPublisher:
    """Publishes Prefect events and returns once the server has stored every one of them.

    ``client`` is an open Prefect client (``async with get_client() as client``). With
    ``confirm=True`` (default) each publish reads its ids back through ``/events/filter``
    until all are stored; ``confirm_timeout`` seconds without them all makes the attempt
    fail as transient (the events are sent again, which the server deduplicates by id).
    ``attempts``/``timeout`` bound the retries of transient failures (default: unbounded,
    so that an outage of Prefect holds the relay rather than losing events); ``wait_max``
    caps the backoff between them.
    """

    def __init__(
        self,
        client: PrefectClient,
        *,
        confirm: bool = True,
        confirm_timeout: float = 30.0,
        attempts: int = 0,
        timeout: float | None = None,
        wait_max: float = 30.0,
        max_request_bytes: int = MAX_REQUEST_BYTES,
    ) -> None:
        if confirm_timeout <= 0:
            raise ValueError(f"confirm_timeout must be > 0 seconds, got {confirm_timeout}")
        if attempts < 0:
            raise ValueError(f"attempts must be >= 0 (0: unbounded), got {attempts}")
        self.client = client
        """The open Prefect client the events go through."""
        self.confirm = confirm
        """Whether each publish waits until the server has stored every event."""
        self.confirm_timeout = confirm_timeout
        """Seconds one attempt waits for the server to store the events."""
        self.attempts = attempts
        """Tries of a transient failure before giving up (0: no limit)."""
        self.timeout = timeout
        """Seconds of retrying a transient failure before giving up (None: no limit)."""
        self.wait_max = wait_max
        """Longest backoff between two tries, in seconds."""
        self.max_request_bytes = max_request_bytes
        """Largest body of one ``POST /events``; larger batches are sent in several."""
        self.requests = 0
        """``POST /events`` requests sent so far (retries included)."""
        self.retries = 0
        """Transient failures retried so far."""

    async def apublish(self, events: Sequence[Mapping[str, Any]]) -> None:
        """Send ``events`` (JSON objects, see :func:`prefect_event_json`) until stored.

        Raises :class:`RelayRefusedError` when Prefect refuses them for good (one bad event
        refuses its whole request), and the last transient error when the retry bounds are
        reached.
        """
        if not events:
            return
        pending = list(events)

        async def attempt() -> None:
            nonlocal pending
            try:
                await self._send(pending)
                if self.confirm:
                    pending = await self._confirm(pending)
                    if pending:
                        raise RelayNotStoredError(
                            f"Prefect has not stored {len(pending)} of the events after "
                            f"{self.confirm_timeout:g} s; sending them again"
                        )
            except Exception as exc:
                if classify(exc) is not False:
                    self.retries += 1
                    metrics.RELAY_RETRIES.inc()
                    logger.warning("relay: publish to Prefect failed, retrying: %s", exc)
                raise

        await _retry.arun(
            attempt,
            classify=classify,
            attempts=self.attempts or 2**31,
            timeout=self.timeout,
            wait_initial=0.5,
            wait_max=self.wait_max,
            wait_jitter=0.5,
            translate=_refused,
        )

    async def _send(self, events: Sequence[Mapping[str, Any]]) -> None:
        for body in _chunks(events, self.max_request_bytes):
            self.requests += 1
            await self.client.request(
                "POST", "/events", content=body, headers={"Content-Type": "application/json"}
            )

    async def _confirm(self, events: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """The events the server has not stored within ``confirm_timeout`` (none: all stored)."""
        from prefect.types._datetime import parse_datetime

        left = {str(body["id"]): body for body in events}
        when = [parse_datetime(str(body["occurred"])) for body in events]
        since = (min(when) - timedelta(seconds=1)).isoformat()
        until = (max(when) + timedelta(seconds=1)).isoformat()
        deadline = time.monotonic() + self.confirm_timeout
        pause = 0.05
        while True:
            found = 0
            ids = list(left)
            for start in range(0, len(ids), READ_PAGE):
                chunk = ids[start : start + READ_PAGE]
                response = await self.client.request(
                    "POST",
                    "/events/filter",
                    json={
                        "filter": {
                            "id": {"id": chunk},
                            "occurred": {"since": since, "until": until},
                        },
                        "limit": READ_PAGE,
                    },
                )
                for stored in orjson.loads(response.content).get("events", []):
                    if left.pop(str(stored.get("id")), None) is not None:
                        found += 1
            if not left or time.monotonic() >= deadline:
                return list(left.values())
            if not found:  # the persister flushes every few seconds: wait a little longer
                pause = min(pause * 2, 1.0)
            await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))


def _chunks(events: Iterable[Mapping[str, Any]], max_bytes: int) -> Iterable[bytes]:
    """JSON arrays of ``events`` of at most ``max_bytes`` each (an event larger alone)."""
    parts: list[bytes] = []
    size = 2
    for body in events:
        data = orjson.dumps(body)
        if parts and size + len(data) + 1 > max_bytes:
            yield b"[" + b",".join(parts) + b"]"
            parts, size = [], 2
        parts.append(data)
        size += len(data) + 1
    if parts:
        yield b"[" + b",".join(parts) + b"]"


@dataclass(frozen=True)
class RelayStats:
    """What one relay run did."""

    relayed: int
    """Events published (and confirmed stored) by this run."""
    dead_lettered: int
    """Events Prefect refused, parked as the consumer's dead letters."""
    batches: int
    """Consumer batches committed."""
    requests: int
    """``POST /events`` requests sent (retries included)."""
    retries: int
    """Transient publish failures retried."""
    caught_up: bool
    """Whether the relay reached the log's commit-safe head."""
    seconds: float
    """How long the run took."""

    @property
    def events_per_second(self) -> float:
        """Relayed events per second of this run."""
        return self.relayed / self.seconds if self.seconds > 0 else math.inf


class PrefectRelay:
    """The ``prefect-relay`` consumer: publishes the event log into Prefect's events.

    Example:
        ```py
        from prefect_atlas import DatabaseBlock, EventStore
        from prefect_atlas.events.relay import PrefectRelay

        db = await DatabaseBlock.aload("BLOCK_NAME")
        stats = await PrefectRelay(EventStore(db, mode="strict")).arun()  # catch up, return
        ```

    One batch is ``batch_size`` events after the consumer's checkpoint, in the log's
    commit-safe order: they are read, published with :class:`PrefectPublisher` and confirmed
    stored by Prefect, and only then does a consumer transaction
    (:meth:`EventStore.aconsume <prefect_atlas.events.store.EventStore.aconsume>`) move the
    checkpoint past them. So every event reaches Prefect at least once across crashes and
    restarts, and Prefect's event store holds it once (it keeps one event per id). The
    publishing happens *outside* the consumer's transaction: that transaction holds a
    transaction id while it is open, and every commit-safe reader of the log waits for it,
    so it must not wait for another server.

    ``arun`` catches up and returns; ``arun(follow=True)`` keeps relaying until ``stop`` is
    set. A stop lets the batch in flight finish and commit; one still waiting for Prefect
    after ``grace`` seconds is abandoned (nothing was committed for it: it is sent again on
    the next start). While Prefect is unreachable the relay retries with backoff and waits,
    its lag growing; events Prefect refuses are parked as the consumer's dead letters.
    ``event_types`` relays only those types (the checkpoint remembers them).
    """

    def __init__(
        self,
        store: EventStore,
        *,
        name: str = CONSUMER,
        event_types: Sequence[str] | None = None,
        batch_size: int = 200,
        poll_interval: float = 1.0,
        max_attempts: int = 3,
        confirm: bool = True,
        confirm_timeout: float = 30.0,
        grace: float = 30.0,
        max_bytes: int | None = None,
        max_related: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be > 0 seconds, got {poll_interval}")
        if grace < 0:
            raise ValueError(f"grace must be >= 0 seconds, got {grace}")
        self.store = store
        """The event log relayed (a strict store is best: the relay only reads)."""
        self.name = name
        """The consumer name the checkpoint and dead letters are kept under."""
        self.event_types = sorted(set(event_types)) if event_types else None
        """Only these event types are relayed (None: all)."""
        self.batch_size = batch_size
        """Events per batch (one acknowledged publish, one checkpoint commit)."""
        self.poll_interval = poll_interval
        """Seconds between reads of the log when following and nothing woke the relay."""
        self.max_attempts = max_attempts
        """Tries of a refused batch before the consumer isolates and parks the refused event."""
        self.confirm = confirm
        """Whether a batch counts as published only once Prefect has stored it (default)."""
        self.confirm_timeout = confirm_timeout
        """Seconds one publish waits for Prefect to store a batch before sending it again."""
        self.grace = grace
        """Seconds a stop waits for the batch in flight before abandoning it uncommitted."""
        self.max_bytes = max_bytes
        """Largest serialized Prefect event (None: ``PREFECT_EVENTS_MAXIMUM_SIZE_BYTES``)."""
        self.max_related = max_related
        """Most related resources (None: ``PREFECT_EVENTS_MAXIMUM_RELATED_RESOURCES``)."""

    async def arun(
        self,
        *,
        follow: bool = False,
        stop: asyncio.Event | None = None,
        client: PrefectClient | None = None,
    ) -> RelayStats:
        """Relay up to the log's commit-safe head and return (``follow=True``: until ``stop``).

        ``client`` is an open Prefect client to publish through (default: ``get_client()``,
        opened and closed here).
        """
        if client is None:
            from prefect.client.orchestration import get_client

            async with get_client() as opened:
                return await self._run(opened, follow=follow, stop=stop)
        return await self._run(client, follow=follow, stop=stop)

    def run(self, *, follow: bool = False, stop: asyncio.Event | None = None) -> RelayStats:
        """Sync face of :meth:`arun` (awaitable in async code)."""
        return sync_or_await(self.arun(follow=follow, stop=stop))

    async def _run(
        self, client: PrefectClient, *, follow: bool, stop: asyncio.Event | None
    ) -> RelayStats:
        stop = stop if stop is not None else asyncio.Event()
        loop = _Loop(self, client)
        running = asyncio.ensure_future(loop.run(follow, stop))
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not running.done():  # stopped: let the batch in flight finish and commit
                await asyncio.wait({running}, timeout=self.grace)
            if not running.done():
                logger.warning(
                    "relay: the batch in flight was not published within %g s of the stop; "
                    "abandoned (nothing committed for it: it is sent again on the next start)",
                    self.grace,
                )
            else:
                running.result()  # raise what the loop raised
        finally:
            stopping.cancel()
            if not running.done():
                running.cancel()
                with suppress(asyncio.CancelledError):
                    await running
        return loop.stats()


class _Loop:
    """One run of a relay: read a batch, publish it, commit the checkpoint; again."""

    def __init__(self, relay: PrefectRelay, client: PrefectClient) -> None:
        self.relay = relay
        self.store = relay.store
        self.publisher = PrefectPublisher(
            client, confirm=relay.confirm, confirm_timeout=relay.confirm_timeout
        )
        # The bounded publisher of the consumer's transaction (rare: a refused batch being
        # isolated, or a batch another process of the relay changed): an outage there is
        # raised as RelayUnavailableError, which the consumer never parks, and retried here.
        self.bounded = PrefectPublisher(
            client,
            confirm=relay.confirm,
            confirm_timeout=relay.confirm_timeout,
            attempts=3,
            timeout=relay.confirm_timeout,
        )
        max_bytes, max_related = relay.max_bytes, relay.max_related
        if max_bytes is None or max_related is None:
            default_bytes, default_related = limits()
            max_bytes = default_bytes if max_bytes is None else max_bytes
            max_related = default_related if max_related is None else max_related
        self.max_bytes = max_bytes
        self.max_related = max_related
        self.started = time.monotonic()
        self.relayed = 0
        self.dead_lettered = 0
        self.batches = 0
        self.caught_up = False
        self.progressed = False  # whether the current session committed a batch
        self._read = _read_query(relay.event_types)

    def stats(self) -> RelayStats:
        return RelayStats(
            relayed=self.relayed,
            dead_lettered=self.dead_lettered,
            batches=self.batches,
            requests=self.publisher.requests + self.bounded.requests,
            retries=self.publisher.retries + self.bounded.retries,
            caught_up=self.caught_up,
            seconds=time.monotonic() - self.started,
        )

    async def run(self, follow: bool, stop: asyncio.Event) -> None:
        outage = 0
        while not stop.is_set():
            try:
                await self._session(follow, stop)
                return
            except Exception as exc:
                # Prefect unreachable: wait, whatever the mode (nothing is lost meanwhile).
                # PostgreSQL unreachable: a follower waits too; a catch-up run fails.
                prefect_down = isinstance(exc, RelayUnavailableError)
                if not prefect_down and not (follow and is_connection_failure(exc)):
                    raise
                outage = 1 if self.progressed else outage + 1
                wait = min(30.0, 0.5 * 2 ** min(outage, 6))
                logger.warning(
                    "relay: %s unavailable, retrying in %g s: %s",
                    "Prefect" if prefect_down else "PostgreSQL",
                    wait,
                    exc,
                )
                await _sleep(wait, stop)

    async def _session(self, follow: bool, stop: asyncio.Event) -> None:
        """Relay until caught up (``follow``: until ``stop``) on one listening connection."""
        self.progressed = False
        await self._register()
        async with AsyncExitStack() as stack:
            listener: AsyncConnection[Any] | None = None
            if follow:  # listening before the first read: no commit's NOTIFY falls between
                listener = await stack.enter_async_context(self.store.db.connection())
                await listener.set_autocommit(True)
                await listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
                stack.push_async_callback(_unlisten, listener)
            while not stop.is_set():
                events = await self._peek()
                handled = await self._relay(events) if events else 0
                self.progressed = self.progressed or handled > 0
                # caught up: the read reached the head, and the consumer went past all of it
                # (a refused event's isolation commits in parts)
                self.caught_up = len(events) < self.relay.batch_size and handled == len(events)
                if not self.caught_up:
                    continue
                if listener is None:
                    return
                await _wait(listener, self.relay.poll_interval, stop)

    async def _register(self) -> None:
        """Create the consumer's checkpoint now (its lag shows before the first batch)."""
        stopped = asyncio.Event()
        stopped.set()  # the consumer checks its row, then stops before reading anything

        async def nothing(batch: Sequence[StoredEvent], conn: AsyncConnection[Any]) -> None:
            raise AssertionError("unreachable: the consumer was stopped before its first batch")

        await self.store.aconsume(
            self.relay.name, nothing, event_types=self.relay.event_types, stop=stopped
        )

    async def _peek(self) -> list[StoredEvent]:
        """The next batch after the checkpoint, by the log's commit-safe rule (no lock)."""
        async with self.store.db.connection() as conn:
            cur = await conn.execute(
                "SELECT last_xid::text, last_position FROM atlas.consumers "
                "WHERE name = %s AND member = 0",
                [self.relay.name],
            )
            row = await cur.fetchone()
            xid, position = (row[0], row[1]) if row is not None else ("0", 0)
            cur = await conn.execute(
                self._read,
                {
                    "cx": xid,
                    "cp": position,
                    "types": self.relay.event_types or [],
                    "limit": self.relay.batch_size,
                },
            )
            return [stored_event(found) for found in await cur.fetchall()]

    async def _relay(self, events: Sequence[StoredEvent]) -> int:
        """Publish ``events`` and wait until stored, then commit the checkpoint past them;
        returns how many the checkpoint passed (relayed or parked)."""
        bodies = {event.event_id: self._json(event) for event in events}
        published: set[uuid.UUID] = set()
        try:
            await self.publisher.apublish(list(bodies.values()))
        except RelayRefusedError as exc:
            # One of them is refused for good: the consumer finds it (publishing halves in
            # its transactions) and parks it as its dead letter.
            logger.warning("relay: %s; finding the refused event", exc)
        else:
            published.update(bodies)
        one = asyncio.Event()

        async def handle(batch: Sequence[StoredEvent], conn: AsyncConnection[Any]) -> None:
            missing = [self._json(event) for event in batch if event.event_id not in published]
            if missing:
                try:
                    await self.bounded.apublish(missing)
                except RelayRefusedError:
                    raise
                except Exception as exc:
                    if classify(exc) is False:
                        raise
                    raise RelayUnavailableError(f"cannot publish to Prefect: {exc}") from exc
                published.update(uuid.UUID(str(body["id"])) for body in missing)
            one.set()  # one committed batch per call: the next is published outside it

        result = await self.store.aconsume(
            self.relay.name,
            handle,
            event_types=self.relay.event_types,
            batch_size=len(events),
            max_attempts=self.relay.max_attempts,
            stop=one,
        )
        self.relayed += result.processed
        self.dead_lettered += result.dead_lettered
        self.batches += result.batches
        metrics.RELAY_EVENTS.inc(result.processed)
        return result.processed + result.dead_lettered

    def _json(self, event: StoredEvent) -> dict[str, Any]:
        return prefect_event_json(event, max_bytes=self.max_bytes, max_related=self.max_related)


def _read_query(event_types: Sequence[str] | None) -> str:
    """The next events after a cursor, by the log's commit-safe rule and order."""
    types = "AND event_type = ANY(%(types)s) " if event_types else ""
    return (
        f"SELECT {EVENT_COLUMNS} FROM atlas.events "
        "WHERE xid < pg_snapshot_xmin(pg_current_snapshot()) "
        f"AND (xid, position) > (%(cx)s::xid8, %(cp)s) {types}"
        "ORDER BY events.xid, events.position LIMIT %(limit)s"
    )


async def _wait(listener: AsyncConnection[Any], timeout: float, stop: asyncio.Event) -> None:
    """Until a NOTIFY of a new event, ``timeout`` seconds, or ``stop``, whichever first."""

    async def notified() -> None:
        async for _ in listener.notifies(timeout=timeout, stop_after=1):
            pass

    waiters = {asyncio.ensure_future(notified()), asyncio.ensure_future(stop.wait())}
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)


async def _unlisten(listener: AsyncConnection[Any]) -> None:
    if not listener.closed and not listener.broken:
        with suppress(psycopg.Error):
            await listener.execute("UNLISTEN *")
            await listener.set_autocommit(False)


async def _sleep(seconds: float, stop: asyncio.Event) -> None:
    with suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
