"""The runtime of one spool file: its breaker, its drain lock and its background drainer.

Why one per spool file and per process (kept in :mod:`prefect_atlas._runtime`): every
``EventStore`` on the same database target shares the spool file, so it must share what
decides about it too. A breaker that lives on a throw-away store (one per task call) never
sees the failures of the calls before it; a drainer per store would start twenty threads.

Why a thread with its own event loop: Prefect runs async code on loops that come and go
(each ``asyncio.run``, short-lived loops for async tasks of sync flows); a drainer task on
one of them would die with it. The thread lives as long as the process, sleeps while the
spool is empty, and at interpreter exit makes one bounded final drain.

Why a file lock around each drain pass: several processes on one host share a spool file.
One drains while the others skip (or wait, for an explicit ``drain()``), so every spooled
event is counted by exactly one drainer, and a killed drainer's lock goes with its process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from prefect_atlas import metrics
from prefect_atlas.events.spool import Spool
from prefect_atlas.resilience import CircuitBreaker, backoff_delays, is_connection_failure

logger = logging.getLogger("prefect_atlas.events")

T = TypeVar("T")

# Waits between attempts while PostgreSQL is unreachable: from 0.5 s doubling to 4 s (plus
# up to 1 s of jitter), so the first attempt after a recovery comes within about 5 s.
RETRY_INITIAL = 0.5
RETRY_MAX = 4.0
# How long the final drain at interpreter exit may take, and then the shipping of what is
# left to the spool vault.
FINAL_DRAIN_SECONDS = 10.0
FINAL_SHIP_SECONDS = 20.0
# A drain batch: at most this many events and (after the first event) this many payload bytes.
BATCH_EVENTS = 1000
BATCH_BYTES = 8 * 1024 * 1024


class SpoolRuntime:
    """Everything one process keeps about one spool file."""

    def __init__(self, path: Path, breaker: CircuitBreaker) -> None:
        self.path = path
        self.breaker = breaker
        # None: not looked at yet; then whether events may be waiting in the spool.
        self.pending: bool | None = None
        # Whether this process has looked for spool segments in the vault yet.
        self.vault_checked = False
        # Why the last drain failed when PostgreSQL answered (a missing table, a permission):
        # then emits stop queueing behind the spool and go straight to the server.
        self.stuck: str | None = None
        # Events per drain batch: halved after a batch timed out, doubled back on success.
        self.batch_limit = BATCH_EVENTS
        # The first spool vault and alert block any store of this spool file was given: the
        # drainer serves every store, not only the one that started it.
        self.spool_vault: Any = None
        self.alerts: Any = None
        self.exit_registered = False
        self._spool: Spool | None = None
        self._open_lock = threading.Lock()
        self.drainer: Drainer | None = None

    def spool(self) -> Spool:
        """The spool, opened (and its folder created) on first use."""
        if self._spool is None:
            with self._open_lock:
                if self._spool is None:
                    self._spool = Spool(self.path)
        return self._spool

    def count(self) -> int:
        """Events waiting (0 without creating the file when there is none)."""
        size = 0 if self._spool is None and not self.path.exists() else self.spool().count()
        metrics.SPOOL_SIZE.set(size)
        return size

    def close(self) -> None:
        with self._open_lock:
            if self._spool is not None:
                self._spool.close()
                self._spool = None

    @contextlib.asynccontextmanager
    async def drain_lock(self, wait: float) -> AsyncIterator[bool]:
        """Hold the spool's drain lock (across processes); yields False if not had in ``wait`` s."""
        lock_path = self.path.with_name(self.path.name + ".drain-lock")
        await asyncio.to_thread(lock_path.parent.mkdir, parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        yield False
                        return
                    await asyncio.sleep(0.05)
            try:
                yield True
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


class Drainer:
    """A daemon thread that drains one spool with backoff until it is empty, then sleeps.

    ``drain_pass`` stores what is spooled (returning how many events are left, which is 0
    when the pass ran to the end) on the thread's own loop; ``close_loop`` releases what the
    pass opened on that loop (the database pools).
    """

    def __init__(
        self,
        runtime: SpoolRuntime,
        drain_pass: Callable[[float | None], Awaitable[int]],
        close_loop: Callable[[], Awaitable[None]],
    ) -> None:
        self.runtime = runtime
        self._drain_pass = drain_pass
        self._close_loop = close_loop
        self._wake = threading.Event()
        self._final = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"atlas-drainer-{runtime.path.name}", daemon=True
        )
        self._thread.start()

    def wake(self) -> None:
        """Something was spooled: make sure a drain comes (after the current wait)."""
        self._wake.set()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def finish(self) -> bool:
        """One final bounded drain, then stop the thread (called at interpreter exit).

        Returns whether the thread finished in time."""
        self._final.set()
        self._wake.set()
        # The drain, then (when PostgreSQL is unreachable) the shipping to the spool vault.
        return self._done.wait(FINAL_DRAIN_SECONDS + FINAL_SHIP_SECONDS + 5.0)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        # Blocking calls (SQLite, file locks, DNS) run inline on this thread: it has nothing
        # else to do, and at interpreter exit the shared thread pools refuse new work before
        # the final drain runs.
        loop.set_default_executor(_InlineExecutor())
        delays = backoff_delays(RETRY_INITIAL, RETRY_MAX)
        wait: float | None = next(delays)  # it was just spooled: PostgreSQL failed a moment ago
        try:
            while True:
                self._wake.wait(wait)
                self._wake.clear()
                final = self._final.is_set()
                try:
                    left = loop.run_until_complete(
                        self._drain_pass(FINAL_DRAIN_SECONDS if final else None)
                    )
                except Exception as exc:
                    if final:
                        logger.error(
                            "final drain of %s at exit failed (%s: %s)",
                            self.runtime.path,
                            type(exc).__name__,
                            exc,
                        )
                        break
                    if is_connection_failure(exc):
                        logger.debug(
                            "background drain of %s: PostgreSQL still unreachable",
                            self.runtime.path,
                        )
                    else:
                        logger.error(
                            "background drain of %s failed (%s: %s); retrying with backoff, "
                            "emits go straight to PostgreSQL meanwhile",
                            self.runtime.path,
                            type(exc).__name__,
                            exc,
                        )
                    wait = next(delays)
                    continue
                if final:
                    break
                if left:
                    # Another process holds the drain lock, or events arrived meanwhile.
                    wait = next(delays)
                else:
                    delays = backoff_delays(RETRY_INITIAL, RETRY_MAX)
                    wait = None  # sleep until something is spooled again
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(self._close_loop())
            _cancel_leftovers(loop)
            loop.close()
            self._done.set()


class _InlineExecutor(concurrent.futures.ThreadPoolExecutor):
    """Runs each submitted call at once, on the calling thread (asyncio insists on the type)."""

    def submit(
        self, fn: Callable[..., T], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


def _cancel_leftovers(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what a deadline abandoned (it unwinds in a moment) before the loop closes."""
    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in pending:
        task.cancel()
    if pending:
        with contextlib.suppress(Exception):
            loop.run_until_complete(asyncio.wait(pending, timeout=2.0))
