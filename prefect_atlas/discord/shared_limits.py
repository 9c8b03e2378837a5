"""Discord's rate-limit budget shared through the Atlas database, across processes and hosts.

Discord's budget is per webhook, not per process: 4 workers that each respect the headers
they saw still provoke 429s, because none saw the others' requests (and Cloudflare bans IPs
that keep hitting 429s). So with a database configured, the budget lives in the table
``atlas.discord_ratelimits`` and each request takes its turn under the webhook row's lock:

1. ``SELECT ... FOR UPDATE`` the webhook's row (and read the global row);
2. if the last answer said the bucket is empty, wait until its reset (holding the lock, so
   the next process waits behind this one instead of racing it);
3. send; write what the answer's headers said (or the 429's ``retry_after``); commit.

Every request to one webhook is therefore made knowing the previous answer, whichever
process made it: reservations are exact. Times are the database's clock
(``clock_timestamp()``), so hosts with skewed clocks still agree.

The database is bookkeeping, never a reason to lose an alert: when it cannot be reached the
limiter falls back to this process's own limiter with a warning and tries the database again
after ``RETRY_DATABASE_SECONDS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any

from prefect_atlas.discord.ratelimit import (
    MAX_WAIT_SECONDS,
    SAFETY_MARGIN_SECONDS,
    RateLimiter,
    Turn,
    WaitTooLong,
    parse_seconds,
)

if TYPE_CHECKING:
    from psycopg import AsyncConnection

    from prefect_atlas.database import DatabaseBlock

logger = logging.getLogger("prefect_atlas.discord")

GLOBAL_BUCKET = "*"
RETRY_DATABASE_SECONDS = 30.0


class SharedRateLimiter(RateLimiter):
    """A :class:`RateLimiter` whose budget is kept in the Atlas database.

    ``database`` is a DatabaseBlock or the name of a saved one (resolved on first use). What
    this process learns is also kept locally, which is what it falls back on.
    """

    def __init__(self, database: DatabaseBlock | str) -> None:
        super().__init__()
        self.database = database
        self._db: DatabaseBlock | None = None
        self._owned = False  # a block this limiter loaded by name (it closes it)
        self._down_until = 0.0
        self._locks: dict[str, asyncio.Lock] = {}
        self.shared_turns = 0  # turns taken through the database (for tests and benchmarks)

    async def _database(self) -> DatabaseBlock:
        if self._db is None:
            from prefect_atlas._blocks import resolve_block
            from prefect_atlas.database import DatabaseBlock

            db = await resolve_block(DatabaseBlock, self.database)
            await db.asetup()  # a no-op when current; creates atlas.discord_ratelimits otherwise
            self._db, self._owned = db, isinstance(self.database, str)
        return self._db

    @asynccontextmanager
    async def slot(self, route: str, *, max_wait: float = MAX_WAIT_SECONDS) -> AsyncIterator[Turn]:
        lock = self._locks.setdefault(route, asyncio.Lock())
        async with lock:  # one turn per process at a time; the row lock orders the processes
            shared = (
                await self._enter(route, max_wait) if time.monotonic() >= self._down_until else None
            )
            if shared is None:
                async with super().slot(route, max_wait=max_wait) as turn:
                    yield turn
                return
            connection, conn, turn = shared
            failure: BaseException | None = None
            try:
                yield turn
            except BaseException as exc:  # the request's own failure: its answer is still recorded
                failure = exc
            if failure is not None and not isinstance(failure, Exception):  # cancelled mid-request
                with contextlib.suppress(Exception):
                    await connection.__aexit__(type(failure), failure, failure.__traceback__)
                raise failure
            try:
                await self._record(conn, turn)
            except Exception as exc:
                with contextlib.suppress(Exception):
                    await connection.__aexit__(type(exc), exc, exc.__traceback__)
                self._database_failed(exc)
            else:
                try:
                    await connection.__aexit__(None, None, None)  # commit: the next process may go
                    self.shared_turns += 1
                except Exception as exc:
                    self._database_failed(exc)
            if failure is not None:
                raise failure

    async def _enter(
        self, route: str, max_wait: float
    ) -> (
        tuple[AbstractAsyncContextManager[AsyncConnection[Any]], AsyncConnection[Any], Turn] | None
    ):
        """Hold the webhook row's lock and wait out its budget; None when the database failed."""
        connection: AbstractAsyncContextManager[AsyncConnection[Any]] | None = None
        try:
            db = await self._database()
            connection = db.connection()
            conn = await connection.__aenter__()
            turn = await self._take_turn(conn, route, max_wait)
        except WaitTooLong:
            if connection is not None:
                await connection.__aexit__(None, None, None)
            raise
        except Exception as exc:
            if connection is not None:
                with contextlib.suppress(Exception):
                    await connection.__aexit__(type(exc), exc, exc.__traceback__)
            self._database_failed(exc)
            return None
        except BaseException as exc:  # cancelled while waiting for the lock or the reset
            if connection is not None:
                with contextlib.suppress(Exception):
                    await connection.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return connection, conn, turn

    async def _take_turn(self, conn: AsyncConnection[Any], route: str, max_wait: float) -> Turn:
        await conn.execute(
            "INSERT INTO atlas.discord_ratelimits (bucket) VALUES (%s), (%s) "
            "ON CONFLICT (bucket) DO NOTHING",
            [route, GLOBAL_BUCKET],
        )
        cur = await conn.execute(
            "SELECT remaining, reset_at, extract(epoch FROM clock_timestamp())::float8 "
            "FROM atlas.discord_ratelimits WHERE bucket = %s FOR UPDATE",
            [route],
        )
        row = await cur.fetchone()
        assert row is not None  # inserted above
        remaining, reset_at, now = row
        cur = await conn.execute(
            "SELECT reset_at FROM atlas.discord_ratelimits WHERE bucket = %s", [GLOBAL_BUCKET]
        )
        global_row = await cur.fetchone()
        wait = max(0.0, float(global_row[0]) - now) if global_row is not None else 0.0
        if remaining is not None and remaining <= 0:
            wait = max(wait, float(reset_at) - now)
        if wait > max_wait:
            raise WaitTooLong(wait)
        if wait > 0:
            self.waited_seconds += wait
            await asyncio.sleep(wait + SAFETY_MARGIN_SECONDS)
            await conn.execute(
                "UPDATE atlas.discord_ratelimits SET remaining = NULL WHERE bucket = %s", [route]
            )
        return Turn(self, route)

    async def _record(self, conn: AsyncConnection[Any], turn: Turn) -> None:
        """Write what the answer said, under the lock still held."""
        headers = turn.headers
        if headers is not None:
            remaining = _int(headers.get("X-RateLimit-Remaining"))
            reset_after = parse_seconds(headers.get("X-RateLimit-Reset-After"))
            limit = _int(headers.get("X-RateLimit-Limit"))
            if remaining is not None or reset_after is not None:
                await conn.execute(
                    "UPDATE atlas.discord_ratelimits SET remaining = %s, "
                    "reset_at = CASE WHEN %s::float8 IS NULL THEN reset_at "
                    "ELSE extract(epoch FROM clock_timestamp()) + %s::float8 END, "
                    '"limit" = COALESCE(%s, "limit"), updated_at = now() WHERE bucket = %s',
                    [remaining, reset_after, reset_after, limit, turn.route],
                )
        if turn.penalty is not None:
            retry_after, is_global = turn.penalty
            await conn.execute(
                "UPDATE atlas.discord_ratelimits SET remaining = 0, reset_at = "
                "greatest(reset_at, extract(epoch FROM clock_timestamp()) + %s), "
                "updated_at = now() WHERE bucket = %s",
                [retry_after, GLOBAL_BUCKET if is_global else turn.route],
            )

    def _database_failed(self, exc: BaseException) -> None:
        self._down_until = time.monotonic() + RETRY_DATABASE_SECONDS
        logger.warning(
            "Discord rate-limit state in the Atlas database unavailable (%s); this process uses "
            "its own limiter for %.0f s (other processes' requests are not counted meanwhile)",
            type(exc).__name__,
            RETRY_DATABASE_SECONDS,
        )

    async def aclose(self) -> None:
        """Close the pools of a database this limiter loaded by name."""
        if self._db is not None and self._owned:
            await self._db.aclose()
            self._db = None


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None
