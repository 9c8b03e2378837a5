"""Typed health reports returned by :meth:`DatabaseBlock.ahealth`."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


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


class HealthReport(BaseModel):
    """The outcome of a database health check. ``ok`` is False with a ``reason`` when down."""

    model_config = ConfigDict(frozen=True)

    ok: bool = Field(description="True when a query round trip succeeded.")
    target: str = Field(description="Where the block connects (host, port, database, user; no password).")
    embedded: bool = Field(description="True when the block uses the embedded PostgreSQL.")
    latency_ms: float | None = Field(default=None, description="Round-trip time of the check query.")
    server_version: str | None = Field(default=None, description="PostgreSQL's server_version.")
    database: str | None = Field(default=None, description="The connected database's name.")
    schema_version: int | None = Field(
        default=None, description="Highest applied Atlas migration; None before setup()."
    )
    pool: PoolStats | None = Field(default=None, description="Pool statistics of this event loop.")
    reason: str | None = Field(default=None, description="Why the check failed, when it did.")

    def summary(self) -> str:
        """One line for logs and the CLI."""
        if not self.ok:
            return f"DOWN {self.target}: {self.reason}"
        pool = (
            f", pool {self.pool.size}/{self.pool.max_size} open, {self.pool.available} idle"
            if self.pool
            else ""
        )
        schema = f", schema v{self.schema_version}" if self.schema_version is not None else ", schema not set up"
        return (
            f"OK {self.target}: PostgreSQL {self.server_version}, {self.latency_ms:.1f} ms"
            f"{schema}{pool}"
        )
