"""The database health check (:meth:`DatabaseBlock.ahealth`) and the typed reports it returns."""

from __future__ import annotations

import asyncio
import time
import warnings
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from prefect_atlas import metrics
from prefect_atlas._health import Health
from prefect_atlas.database.migrations import SCHEMA

if TYPE_CHECKING:
    from prefect_atlas.database.block import DatabaseBlock


class PoolStats(BaseModel):
    """A snapshot of the connection pool of the calling event loop."""

    model_config = ConfigDict(frozen=True)

    min_size: int = Field(description="Connections the pool keeps open even when idle.")
    max_size: int = Field(description="Most connections the pool opens.")
    size: int = Field(description="Connections open now, busy or idle.")
    available: int = Field(description="Idle connections ready to be handed out.")
    waiting: int = Field(description="Callers waiting for a connection now.")
    requests: int = Field(description="Connections handed out since the pool opened.")
    errors: int = Field(description="Failed connection attempts since the pool opened.")


class HealthReport(Health):
    """The outcome of a database health check, in the shape every health report has.

    ``ok`` is True when a query round trip succeeded, ``latency_ms`` is that round trip, and
    ``detail`` says what the server is (PostgreSQL version, schema) or why the check failed.
    """

    model_config = ConfigDict(frozen=True)

    target: str = Field(
        description="Where the block connects (host, port, database, user; no password)."
    )
    embedded: bool = Field(description="True when the block uses the embedded PostgreSQL.")
    server_version: str | None = Field(default=None, description="PostgreSQL's server_version.")
    database: str | None = Field(default=None, description="The connected database's name.")
    schema_version: int | None = Field(
        default=None, description="Highest applied Atlas migration; None before setup()."
    )
    pool: PoolStats | None = Field(default=None, description="Pool statistics of this event loop.")

    @property
    def reason(self) -> str | None:
        """Why the check failed (None when it passed). Deprecated: read ``detail``."""
        warnings.warn(
            "HealthReport.reason is deprecated; read HealthReport.detail",
            DeprecationWarning,
            stacklevel=2,
        )
        return None if self.ok else self.detail

    def summary(self) -> str:
        """One line for logs and the CLI."""
        if not self.ok:
            return f"DOWN {self.target}: {self.detail}"
        pool = (
            f", pool {self.pool.size}/{self.pool.max_size} open, {self.pool.available} idle"
            if self.pool
            else ""
        )
        schema = (
            f", schema v{self.schema_version}"
            if self.schema_version is not None
            else ", schema not set up"
        )
        return (
            f"OK {self.target}: PostgreSQL {self.server_version}, {self.latency_ms:.1f} ms"
            f"{schema}{pool}"
        )


async def check_database(block: DatabaseBlock, timeout: float = 5.0) -> HealthReport:
    """Check ``block``'s database with one round trip. Never raises because the server is down."""
    target = block.describe()
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            async with block.connection() as conn:
                cur = await conn.execute(
                    "SELECT current_setting('server_version'), current_database(), "
                    "to_regclass(%s) IS NOT NULL",
                    [f"{SCHEMA}.schema_migrations"],
                )
                version, database, has_migrations = await cur.fetchone() or (None, None, False)
                latency_ms = (time.perf_counter() - started) * 1000
                schema_version = None
                if has_migrations:
                    cur = await conn.execute(f"SELECT max(version) FROM {SCHEMA}.schema_migrations")
                    schema_version = ((await cur.fetchone()) or (None,))[0]
    except Exception as exc:
        reason = str(exc) or f"{type(exc).__name__} after {timeout:g} s"
        detail = block._redact(reason)
        return HealthReport(ok=False, target=target, embedded=block.embedded, detail=detail)
    pool = block.pool_stats()
    if pool is not None:
        metrics.POOL_SIZE.labels(target).set(pool.size)
        metrics.POOL_AVAILABLE.labels(target).set(pool.available)
        metrics.POOL_WAITING.labels(target).set(pool.waiting)
    schema = f"schema v{schema_version}" if schema_version is not None else "schema not set up"
    return HealthReport(
        ok=True,
        target=target,
        embedded=block.embedded,
        latency_ms=round(latency_ms, 3),
        detail=f"PostgreSQL {version} (database {database}), {schema}",
        server_version=version,
        database=database,
        schema_version=schema_version,
        pool=pool,
    )


def pool_stats(block: DatabaseBlock) -> PoolStats | None:
    """Statistics of the primary pool of the running loop (None outside a loop or before use)."""
    try:
        pools = block._pools.get()
    except RuntimeError:
        return None
    if pools is None:
        return None
    stats = pools.primary.get_stats()
    return PoolStats(
        min_size=stats.get("pool_min", block.min_size),
        max_size=stats.get("pool_max", block.max_size),
        size=stats.get("pool_size", 0),
        available=stats.get("pool_available", 0),
        waiting=stats.get("requests_waiting", 0),
        requests=stats.get("requests_num", 0),
        errors=stats.get("connections_errors", 0),
    )
