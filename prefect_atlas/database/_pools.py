"""Connection pools of a :class:`DatabaseBlock` on one event loop.

A block keeps one ``LoopPools`` per event loop in a :class:`prefect_atlas._loops.PerLoop`:
an ``AsyncConnectionPool`` binds its locks, workers and connections to the loop that opened
it, and Prefect runs code on several loops in one process. The functions below are the glue
the block delegates to: open (and verify) a loop's pools, route a checkout to a replica or the
primary, release a block's use of them.

psycopg and psycopg_pool are imported by the functions that use them, not by this module:
``import prefect_atlas`` imports the block (Prefect finds blocks by importing them), and
the driver loads with the first connection instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prefect_atlas._loops import close_at_loop_shutdown
from prefect_atlas._redact import describe_conninfo

if TYPE_CHECKING:
    from typing import TypeAlias

    from psycopg import AsyncConnection
    from psycopg_pool import AsyncConnectionPool

    from prefect_atlas.database.block import DatabaseBlock

    Pool: TypeAlias = AsyncConnectionPool[AsyncConnection[Any]]
    ReturnTimes: TypeAlias = weakref.WeakKeyDictionary[AsyncConnection[Any], float]

logger = logging.getLogger("prefect_atlas.database")

# A replica that failed is not tried again for this long; reads go elsewhere meanwhile.
REPLICA_COOLDOWN_SECONDS = 30.0


def liveness_check(
    recent: ReturnTimes, bypass_seconds: float
) -> Callable[[AsyncConnection[Any]], Awaitable[None]]:
    """The pool's ``check`` callback, run at every checkout: undo a READ ONLY the last user set,
    then a round trip, unless the connection came back very recently.

    Why the bypass: checking costs one round trip per checkout (about a third of a short
    query's time on a local server), while a connection returned a moment ago is almost
    certainly alive. Within ``bypass_seconds`` of its return it is handed out as is (HikariCP
    does the same with 500 ms); a server restart inside that window surfaces as the query's
    own connection error, and the pool then discards the connection.

    Why the READ ONLY undo here rather than in the pool's ``reset`` callback: with ``reset``
    set, psycopg_pool hands every returned connection to a background worker, and ``close()``
    drops returns still queued without closing their connections. No one can see a
    connection between its return and its next checkout, and ``set_read_only`` on an idle
    connection is no round trip.
    """

    from psycopg_pool import AsyncConnectionPool

    async def check(conn: AsyncConnection[Any]) -> None:
        if conn.read_only:
            await conn.set_read_only(False)
        if bypass_seconds > 0:
            returned = recent.get(conn)
            if returned is not None and time.monotonic() - returned < bypass_seconds:
                return
        await AsyncConnectionPool.check_connection(conn)

    return check


@dataclass(eq=False)
class Replica:
    """A read replica's pool and when it may next be tried after a failure."""

    pool: Pool
    target: str
    down_until: float = 0.0

    def usable(self, now: float) -> bool:
        return now >= self.down_until


class PoolUser:
    """A block instance's token in :attr:`LoopPools.users` (blocks are unhashable models).

    It lives as long as its block: a block that is garbage collected stops counting as a user.
    """

    __slots__ = ("__weakref__",)


@dataclass(eq=False)
class LoopPools:
    """The pools a block uses on one event loop."""

    loop: asyncio.AbstractEventLoop
    primary: Pool
    returned_at: ReturnTimes = field(default_factory=weakref.WeakKeyDictionary)
    replicas: list[Replica] = field(default_factory=list)
    verified: bool = False
    closed: bool = False
    # The block instances that used these pools and have not closed them: ``aclose()`` on one
    # instance must not close the pools under another (they are shared by settings).
    users: weakref.WeakSet[PoolUser] = field(default_factory=weakref.WeakSet)
    _next_replica: int = 0
    _closer: AsyncGenerator[None, None] | None = None

    async def close(self) -> None:
        """Close every pool of this loop (idempotent)."""
        self.closed = True
        for pool in self.all_pools():
            if not pool.closed:
                await pool.close()
        closer, self._closer = self._closer, None
        if closer is not None:
            await closer.aclose()

    async def close_with_loop(self) -> None:
        """Close the pools when their loop shuts down, even if nobody calls ``aclose()``."""
        if self._closer is None:
            self._closer = await close_at_loop_shutdown(self._close_quietly)

    async def _close_quietly(self) -> None:
        for pool in self.all_pools():
            if not pool.closed:
                with contextlib.suppress(Exception):
                    await pool.close(timeout=2.0)

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


def new_pool(
    db: DatabaseBlock, conninfo: str, name: str, timeout: float, recent: ReturnTimes
) -> Pool:
    """An unopened pool with ``db``'s sizes, lifetimes and liveness check."""
    from psycopg_pool import AsyncConnectionPool

    return AsyncConnectionPool(
        conninfo,
        min_size=db.min_size,
        max_size=db.max_size,
        timeout=timeout,
        max_idle=db.max_idle,
        max_lifetime=db.max_lifetime,
        check=liveness_check(recent, db.check_bypass_seconds),
        name=name,
        open=False,
    )


async def open_loop_pools(db: DatabaseBlock) -> LoopPools:
    """This loop's pools of ``db``, opened; the first use verifies the primary with a direct
    connect."""
    pools = db._pools.get()
    if pools is None or pools.closed:
        primary = await db._primary_conninfo()
        replicas = [db._conninfo(r.get_secret_value()) for r in db.read_replica_urls]

        def factory(previous: LoopPools | None) -> LoopPools:
            loop = asyncio.get_running_loop()
            recent: ReturnTimes = weakref.WeakKeyDictionary()
            return LoopPools(
                loop=loop,
                returned_at=recent,
                primary=new_pool(db, primary, f"atlas-primary-{id(loop):x}", db.timeout, recent),
                replicas=[
                    Replica(
                        pool=new_pool(
                            db, info, f"atlas-replica{i}-{id(loop):x}", db.replica_timeout, recent
                        ),
                        target=describe_conninfo(info),
                    )
                    for i, info in enumerate(replicas)
                ],
            )

        # Atomic replace: two tasks that both found the pools closed build one set, not two.
        pools = db._pools.get_or_create(factory, reuse=lambda current: not current.closed)
    pools.users.add(db._pool_user)
    if not pools.verified:
        # A direct connect turns "refused", "no such host" or "bad password" into one clear
        # error at once, where the pool would retry quietly until `timeout`.
        await probe(db, str(pools.primary.conninfo))
        for pool in pools.all_pools():
            await pool.open()
        await pools.close_with_loop()
        pools.verified = True
    return pools


async def probe(db: DatabaseBlock, conninfo: str) -> None:
    """Connect to ``conninfo`` once, directly; a failure raises ``db``'s clear error."""
    import psycopg

    try:
        async with asyncio.timeout(db.timeout):
            conn = await psycopg.AsyncConnection.connect(conninfo)
    except (psycopg.OperationalError, TimeoutError) as exc:
        raise db._connection_error(conninfo, exc) from None
    await conn.close()


async def checkout(
    db: DatabaseBlock, stack: contextlib.AsyncExitStack, pools: LoopPools, *, readonly: bool
) -> AsyncConnection[Any]:
    """Enter ``pool.connection()`` of a replica (``readonly``) or the primary on ``stack``.

    The pool's own context manager commits or rolls back and returns the connection.
    """
    import psycopg
    from psycopg_pool import PoolTimeout

    if readonly:
        for replica in pools.replica_order():
            try:
                return await stack.enter_async_context(replica.pool.connection())
            except (PoolTimeout, psycopg.OperationalError) as exc:
                replica.down_until = time.monotonic() + REPLICA_COOLDOWN_SECONDS
                logger.warning(
                    "read replica %s did not answer (%s); using the next replica or the primary",
                    replica.target,
                    db._redact(type(exc).__name__),
                )
    try:
        return await stack.enter_async_context(pools.primary.connection())
    except PoolTimeout as exc:
        raise db._connection_error(str(pools.primary.conninfo), exc) from None


async def release(db: DatabaseBlock) -> None:
    """Drop ``db``'s use of the calling loop's pools; the last user closes them."""
    pools = db._pools.get()
    if pools is None:
        return
    pools.users.discard(db._pool_user)
    if pools.users:
        return
    if db._pools.get() is pools:
        db._pools.pop()
    await pools.close()
