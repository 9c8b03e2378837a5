"""Retries and a circuit breaker for code that talks to PostgreSQL.

Why two tools: a *retry* rides out a blip (a dropped connection, a deadlock victim, a
serialization failure) by trying again after an exponential, jittered wait; a *circuit
breaker* stops trying for a while after several connection failures in a row, so a
pipeline does not spend its time waiting on a database that is down (the event store
sends events to its local spool instead).

Retries run on :mod:`prefect_atlas._retry` (stamina); this module declares the database's
classifier, :func:`is_transient`, and the decorator around it. The breaker is ours:
``pybreaker`` has no asyncio support and the breaker needed here is a few lines of state,
tested in ``tests/events/test_resilience.py``.
"""

from __future__ import annotations

import asyncio
import enum
import random
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, ParamSpec, TypeVar

import psycopg
import psycopg.errors
from psycopg_pool import PoolTimeout

from prefect_atlas import _retry
from prefect_atlas.exceptions import DatabaseConfigurationError, DatabaseConnectionError

P = ParamSpec("P")
T = TypeVar("T")

# 08 connection exceptions, 40001 serialization failure, 40P01 deadlock, 57P0x operator
# intervention (shutdown, crash), 53300 too many connections. Not all of class 40: 40002
# (integrity constraint violation at commit) is permanent.
_TRANSIENT_SQLSTATE_PREFIXES = ("08", "40001", "40P01", "57P0", "53300")


def is_connection_failure(exc: BaseException) -> bool:
    """True when ``exc`` says the database could not be reached (the breaker counts these)."""
    if isinstance(exc, DatabaseConnectionError | PoolTimeout | ConnectionError | TimeoutError):
        return True
    if isinstance(exc, psycopg.OperationalError):
        state = exc.sqlstate
        # No SQLSTATE: libpq failed to connect or lost the socket.
        return state is None or state.startswith(("08", "57P0", "53300"))
    return isinstance(exc, psycopg.InterfaceError)


def is_transient(exc: BaseException) -> bool:
    """True for errors a retry can cure: connection loss, serialization failure, deadlock.

    Constraint violations, bad SQL and permission errors are permanent: retrying them only
    repeats the failure, so they are never retried.
    """
    if isinstance(exc, DatabaseConfigurationError):
        return False  # a wrong password or database name does not heal by itself
    if is_connection_failure(exc):
        return True
    if isinstance(exc, psycopg.Error):
        state = exc.sqlstate or ""
        return state.startswith(_TRANSIENT_SQLSTATE_PREFIXES)
    return False


def retrying(
    *,
    on: Callable[[Exception], bool] | type[Exception] | tuple[type[Exception], ...] = is_transient,
    attempts: int = 5,
    timeout: float | None = 60.0,
    wait_initial: float = 0.1,
    wait_max: float = 5.0,
    wait_jitter: float = 1.0,
) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """Retry a sync or async function on transient errors with exponential backoff and jitter.

    On :func:`prefect_atlas._retry.decorator` (stamina): waits grow from ``wait_initial`` by
    2x up to ``wait_max`` plus up to ``wait_jitter`` random seconds, for at most ``attempts``
    tries and ``timeout`` seconds overall; the last error is re-raised unchanged.
    ``on`` defaults to :func:`is_transient`, so constraint violations and bad SQL fail at once.

    Example:
        ```python
        from prefect_atlas.resilience import retrying

        @retrying(attempts=3)
        async def refresh(db):
            await db.aexecute("REFRESH MATERIALIZED VIEW atlas.daily")
        ```
    """
    return _retry.decorator(
        on=on,
        attempts=attempts,
        timeout=timeout,
        wait_initial=wait_initial,
        wait_max=wait_max,
        wait_jitter=wait_jitter,
    )


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class CircuitBreaker:
    """Opens after ``failure_threshold`` consecutive failures; half-opens after ``reset_timeout``.

    Closed: every call may go through. Open: :meth:`allow` says no until ``reset_timeout``
    seconds have passed since it opened. Half-open: one caller at a time gets through as a
    probe; its success closes the breaker, its failure opens it again for another
    ``reset_timeout``. Thread-safe, and cheap enough to consult on every call.
    """

    def __init__(
        self,
        failure_threshold: int = 3,
        reset_timeout: float = 5.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1, got {failure_threshold}")
        if reset_timeout <= 0:
            raise ValueError(f"reset_timeout must be > 0 seconds, got {reset_timeout}")
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> BreakerState:
        with self._lock:
            return self._state()

    def _state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock() - self._opened_at >= self.reset_timeout:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def allow(self) -> bool:
        """May a call go through now? In half-open state only one probe at a time may."""
        with self._lock:
            state = self._state()
            if state is BreakerState.CLOSED:
                return True
            if state is BreakerState.HALF_OPEN and not self._probing:
                self._probing = True
                return True
            return False

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            self._opened_at = None
            self._probing = False

    def record_failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._probing or self._failures >= self.failure_threshold:
                self._opened_at = self._clock()
            self._probing = False

    def release(self) -> None:
        """End a probe that neither succeeded nor failed on the connection (another error)."""
        with self._lock:
            self._probing = False

    def __repr__(self) -> str:
        return f"CircuitBreaker(state={self.state.value}, failures={self._failures})"


async def within(coro: Coroutine[Any, Any, T], timeout: float) -> T:
    """Await ``coro`` for at most ``timeout`` seconds, *including* its cancellation.

    Why not ``asyncio.timeout``: it waits for the cancelled work to finish unwinding, and
    psycopg answers a cancellation by sending the server a cancel request and waiting for
    the query to end (up to 10 s more) — on a silently partitioned connection the caller
    would wait that long again. Here the work runs as its own task; at the deadline it is
    cancelled and left to unwind in the background (its connection is discarded there),
    and the caller gets ``TimeoutError`` at once.
    """
    task = asyncio.ensure_future(coro)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except asyncio.CancelledError:
        task.cancel()
        task.add_done_callback(_consume)
        raise
    if task in done:
        return task.result()
    task.cancel()
    task.add_done_callback(_consume)
    raise TimeoutError(f"no answer within {timeout:g} s")


def _consume(task: asyncio.Future[Any]) -> None:
    # Retrieve the abandoned attempt's outcome so asyncio does not log it as never retrieved.
    if not task.cancelled():
        task.exception()


def backoff_delays(
    initial: float = 1.0, maximum: float = 30.0, jitter: float = 1.0
) -> Iterator[float]:
    """Exponential waits with jitter for a loop that retries until told to stop.

    The same curve as :func:`retrying` (``initial`` doubling up to ``maximum``, plus up to
    ``jitter`` random seconds), for the background loops that must keep trying for as long
    as the process lives (a decorator with a fixed number of attempts does not fit them).
    """
    wait = initial
    while True:
        yield wait + random.uniform(0, jitter)  # noqa: S311 - jitter, not cryptography
        wait = min(maximum, wait * 2)
