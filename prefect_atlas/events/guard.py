"""The guarded write: one deadline, the circuit breaker, and the spool when PostgreSQL is out.

``Guard`` sits between ``EventStore``'s emits and ``writer.py``: it stores events within
``emit_timeout`` or, by mode, spools them (durable) or raises (strict); while older events
wait in the spool, new ones queue behind them so a process keeps its own order.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3

from prefect_atlas import metrics
from prefect_atlas.events.batch import Batch
from prefect_atlas.events.draining import Draining
from prefect_atlas.events.validation import PreparedEvent
from prefect_atlas.events.writer import append_batch, append_one
from prefect_atlas.exceptions import DatabaseConnectionError
from prefect_atlas.resilience import is_connection_failure, within

logger = logging.getLogger("prefect_atlas.events")


class Guard(Draining):
    """The write path of an :class:`EventStore`: deadline, breaker, spool fallback."""

    async def _to_spool(
        self, events: PreparedEvent | Batch, cause: BaseException | None, why: str = ""
    ) -> None:
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
                f"event not stored: PostgreSQL is unreachable ({_cause(cause)}) and the local "
                f"spool {self.spool_path} cannot be written ({type(exc).__name__}: {exc}). "
                "Make ATLAS_HOME a writable folder (or pass spool_path=...) so that events can "
                "wait there.",
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
            reason = (
                f"no answer from PostgreSQL within {self.emit_timeout:g} s "
                "(EventStore emit_timeout)"
            )
        return DatabaseConnectionError(
            f"event not stored (mode='strict'): {reason}", target=self.db.describe()
        )

    async def _write(self, events: PreparedEvent | Batch) -> None:
        async with self._connection() as conn:
            if isinstance(events, PreparedEvent):
                await append_one(conn, events, notify=self.notify)
            else:
                await append_batch(conn, events, notify=self.notify)

    async def _guarded(self, events: PreparedEvent | Batch) -> None:
        """Store ``events`` within ``emit_timeout``, or spool them, per mode and breaker."""
        rt = self._rt()
        checks_version = isinstance(events, PreparedEvent) and events.expected_version is not None
        if self.mode == "durable" and not checks_version:  # a version check needs the server now
            if rt.pending is None:
                await asyncio.to_thread(self._count_spool)
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


def _cause(cause: BaseException | None) -> str:
    if cause is None:
        return "circuit breaker open"
    if isinstance(cause, TimeoutError):
        return "no answer within emit_timeout"
    return type(cause).__name__
