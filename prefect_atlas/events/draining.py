"""Draining the spool: the store's spool runtime, drain passes and dead-letter parking.

``Draining`` is the base of ``EventStore`` (see ``store.py`` for why mixins): it finds the
process's runtime of the store's spool file, starts its background drainer, and runs the
drain passes that store spooled events batch by batch, halving a refused batch until the
refused events stand alone and parking those as dead letters (with one ops alert). The
vault tier of the spool (shipping at exit, claiming segments) is in ``shipping.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from psycopg import AsyncConnection

from prefect_atlas import _runtime, metrics
from prefect_atlas.database import DatabaseBlock
from prefect_atlas.events import dead_letters, shipping
from prefect_atlas.events.batch import PreparedBatch
from prefect_atlas.events.drainer import (
    BATCH_BYTES,
    BATCH_EVENTS,
    FINAL_SHIP_SECONDS,
    Drainer,
    SpoolRuntime,
)
from prefect_atlas.events.models import DrainResult, Mode
from prefect_atlas.events.validation import PreparedEvent
from prefect_atlas.events.writer import append_batch
from prefect_atlas.exceptions import DatabaseConnectionError
from prefect_atlas.resilience import CircuitBreaker, is_connection_failure, within

if TYPE_CHECKING:
    from prefect_atlas.discord import DiscordBlock
    from prefect_atlas.events.store import EventStore
    from prefect_atlas.vault import VaultBlock

logger = logging.getLogger("prefect_atlas.events")

_DRAINER_LOCK = threading.Lock()


class Draining:
    """The spool runtime and drain passes of an :class:`EventStore` (its base class)."""

    # Set by EventStore.__init__.
    db: DatabaseBlock
    mode: Mode
    max_payload_bytes: int
    connect_timeout: float
    emit_timeout: float
    failure_threshold: int
    reset_timeout: float
    notify: bool
    background_drain: bool
    spool_vault: VaultBlock | str | None
    alerts: DiscordBlock | str | None
    _spool_path: str | None
    _runtime: SpoolRuntime | None

    if TYPE_CHECKING:  # EventStore's public face

        @property
        def spool_path(self) -> str: ...

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
                lambda: SpoolRuntime(
                    path, CircuitBreaker(self.failure_threshold, self.reset_timeout)
                ),
            )
            # The drainer serves every store of the spool file: it uses the first vault and
            # alert block any of them was given.
            if self._runtime.spool_vault is None:
                self._runtime.spool_vault = self.spool_vault
            if self._runtime.alerts is None:
                self._runtime.alerts = self.alerts
        return self._runtime

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[AsyncConnection[Any]]:
        """A pooled connection, waiting at most ``connect_timeout`` for it (never blocks long)."""
        async with AsyncExitStack() as stack:
            try:
                async with asyncio.timeout(self.connect_timeout):
                    conn = await stack.enter_async_context(self.db.connection())
            except TimeoutError:
                raise DatabaseConnectionError(
                    f"no database connection within {self.connect_timeout:g} s (EventStore "
                    "connect_timeout)",
                    target=self.db.describe(),
                ) from None
            yield conn

    def _count_spool(self) -> int:
        """Count the spooled events (and start the drainer when there are some); see
        :meth:`EventStore.spool_size`."""
        rt = self._rt()
        try:
            size = rt.count()
        except sqlite3.Error as exc:
            # A damaged spool file must not stop emits that PostgreSQL can take.
            rt.stuck = f"the spool {rt.path} cannot be read ({exc})"
            logger.error(
                "%s: emits go straight to PostgreSQL; move the file away to reset it", rt.stuck
            )
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
        from prefect_atlas.events.store import EventStore

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

    async def _store_spooled(
        self, conn: AsyncConnection[Any], events: Sequence[PreparedEvent]
    ) -> tuple[int, int]:
        """Store spooled events; park those the server refuses. Returns (stored, parked).

        A refused batch is halved until the refused events stand alone (in order, so the
        others keep theirs); a refusal that is not the event's own fault is raised.
        """
        try:
            await append_batch(conn, PreparedBatch(events), notify=self.notify)
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
                "PostgreSQL refused spooled event %s (%s, SQLSTATE %s): parked in "
                "atlas.dead_events; see `prefect-atlas events dead-letters list`",
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
                    fields={
                        "Database": self.db.describe(),
                        "Next step": "prefect-atlas events dead-letters list",
                    },
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
                await shipping.ship(self, vault, FINAL_SHIP_SECONDS)
            raise
        if not result.locked:
            return result.left
        self._drain_succeeded(result)
        if vault is not None:
            if budget is not None and result.left:
                await shipping.ship(self, vault, FINAL_SHIP_SECONDS)
            elif budget is None:
                await shipping.claim_segments(self, vault)
        return result.left

    async def _drain_now(self) -> int:
        """See :meth:`EventStore.adrain`."""
        rt = self._rt()
        vault = await self._spool_vault_block()
        stored = 0
        try:
            if await asyncio.to_thread(rt.count):
                result = await self._drain_pass(None, lock_wait=60.0)
                if not result.locked:
                    raise DatabaseConnectionError(
                        f"another process kept the spool {self.spool_path} locked for 60 s; try "
                        "again",
                        target=self.db.describe(),
                    )
                stored += result.stored
                self._drain_succeeded(result)
            else:
                rt.pending = False
            if vault is not None:
                stored += (await shipping.claim_segments(self, vault))[0]
        except Exception as exc:
            self._drain_failed(exc)
            raise
        return stored

    async def _spool_vault_block(self) -> VaultBlock | None:
        """The spool vault as a block (a name is loaded once); None when unset or unloadable."""
        return await shipping.vault_block(self)


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
            ""
            if rt.spool_vault is not None
            else "; set ATLAS_SPOOL_VAULT where the disk does not outlive the worker",
        )
    if finished:
        rt.close()  # a drainer still running keeps its spool open
