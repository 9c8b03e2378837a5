"""``db``: Atlas 0.2.1's database manager (``atlas.db``) over :class:`DatabaseBlock`.

0.2.1's ``DatabaseManager`` was a singleton psycopg 3 pool (0-20 connections). Here the
block's pool plays that part: the same psycopg ``AsyncConnection`` comes out of
``get_connection()``, committed when the ``async with`` ends normally and rolled back on an
exception, one pool per event loop, opened on first use.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from prefect_atlas.compat import _config
from prefect_atlas.database import DatabaseBlock

if TYPE_CHECKING:
    from psycopg import AsyncConnection  # psycopg loads with the first connection


class DatabaseManager:
    """The ``db`` object: ``get_connection()``, ``health_check()``, ``initialize()``,
    ``close()``."""

    async def block(self) -> DatabaseBlock:
        """The :class:`DatabaseBlock` behind ``db`` (saved under ``ATLAS_BLOCK``, or built from
        ``DATABASE_URL``; unset: the embedded PostgreSQL)."""
        return await _config.ablock(DatabaseBlock)

    async def initialize(self) -> None:
        """Open (and verify) the pool now instead of on first use."""
        await (await self.block()).aopen()

    @asynccontextmanager
    async def get_connection(self) -> AsyncIterator[AsyncConnection[Any]]:
        """A pooled ``psycopg.AsyncConnection``; commit on normal exit, rollback on error."""
        database = await self.block()
        async with database.connection() as conn:
            yield conn

    async def health_check(self) -> bool:
        """True when the database answers one round trip within 5 s; never raises."""
        report = await (await self.block()).ahealth()
        return report.ok

    async def close(self) -> None:
        """Release this event loop's pool (a later call opens a new one)."""
        found = _config.built(DatabaseBlock)
        if found is not None:
            await found.aclose()

    def __repr__(self) -> str:
        found = _config.built(DatabaseBlock)
        return f"<atlas db: {found.describe() if found else 'not connected yet'}>"


db = DatabaseManager()
