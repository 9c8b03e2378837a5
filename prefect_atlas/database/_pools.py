"""Connection pools of a :class:`DatabaseBlock`: one set per event loop, never pickled.

Why one set per event loop: an ``AsyncConnectionPool`` binds its locks, workers and
connections to the loop that opened it. Prefect runs sync tasks in worker threads and
sync faces on its own "run sync" loop, so a block can be used from several loops during
one flow run; sharing a pool across loops would corrupt it. Pools of a loop that has
since been closed are dropped on the next access.

Why never pickled or copied: Prefect pickles and deep-copies blocks (task parameters,
results, workers in other processes). A copy gets an empty registry and opens its own
pools lazily on first use.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

Pool = AsyncConnectionPool[AsyncConnection[Any]]


@dataclass(eq=False)
class Replica:
    """A read replica's pool and when it may next be tried after a failure."""

    pool: Pool
    target: str
    down_until: float = 0.0

    def usable(self, now: float) -> bool:
        return now >= self.down_until


@dataclass(eq=False)
class LoopPools:
    """The pools a block uses on one event loop."""

    loop: asyncio.AbstractEventLoop
    primary: Pool
    replicas: list[Replica] = field(default_factory=list)
    verified: bool = False
    _next_replica: int = 0
    _closer: AsyncGenerator[None, None] | None = None

    async def close(self) -> None:
        """Close every pool of this loop (idempotent)."""
        for pool in self.all_pools():
            if not pool.closed:
                await pool.close()
        closer, self._closer = self._closer, None
        if closer is not None:
            await closer.aclose()

    async def close_with_loop(self) -> None:
        """Close the pools when their loop shuts down, even if nobody calls ``aclose()``.

        ``asyncio.run`` (and Prefect, which runs async tasks of sync flows on short-lived
        loops) calls ``loop.shutdown_asyncgens()`` before closing a loop: it closes every
        async generator still suspended. A generator parked at a ``yield`` here turns that
        into a clean ``pool.close()``, instead of pending pool workers destroyed with the loop.
        """
        if self._closer is None:
            self._closer = _close_on_shutdown(self)
            await self._closer.__anext__()

    def replica_order(self) -> Iterator[Replica]:
        """Replicas in round-robin order, skipping those marked down."""
        if not self.replicas:
            return
        start = self._next_replica
        self._next_replica = (start + 1) % len(self.replicas)
        now = time.monotonic()
        for offset in range(len(self.replicas)):
            replica = self.replicas[(start + offset) % len(self.replicas)]
            if replica.usable(now):
                yield replica

    def all_pools(self) -> list[Pool]:
        return [self.primary, *(r.pool for r in self.replicas)]


async def _close_on_shutdown(pools: LoopPools) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        for pool in pools.all_pools():
            if not pool.closed:
                with contextlib.suppress(Exception):
                    await pool.close(timeout=2.0)


class PoolRegistry:
    """Per-loop pools of one block instance. Copies and unpickled copies start empty."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_loop: dict[int, LoopPools] = {}

    def __reduce__(self) -> tuple[type[PoolRegistry], tuple[()]]:
        return (PoolRegistry, ())

    def __copy__(self) -> PoolRegistry:
        return PoolRegistry()

    def __deepcopy__(self, memo: dict[int, Any]) -> PoolRegistry:
        return PoolRegistry()

    def __repr__(self) -> str:
        return f"PoolRegistry(loops={len(self._by_loop)})"

    def current(self) -> LoopPools | None:
        """The pools of the running loop, if any were created."""
        loop = asyncio.get_running_loop()
        with self._lock:
            self._prune()
            return self._by_loop.get(id(loop))

    def get_or_create(self, factory: Callable[[asyncio.AbstractEventLoop], LoopPools]) -> LoopPools:
        """The pools of the running loop, created (not yet opened) by ``factory`` if needed."""
        loop = asyncio.get_running_loop()
        with self._lock:
            self._prune()
            pools = self._by_loop.get(id(loop))
            if pools is None:
                pools = factory(loop)
                self._by_loop[id(loop)] = pools
            return pools

    def pop_current(self) -> LoopPools | None:
        """Remove and return the running loop's pools (to close them)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            self._prune()
            return self._by_loop.pop(id(loop), None)

    def _prune(self) -> None:
        for key, pools in list(self._by_loop.items()):
            if pools.loop.is_closed():
                # Its loop is gone, and with it the pool's workers; the sockets close when
                # the connection objects are collected.
                del self._by_loop[key]
