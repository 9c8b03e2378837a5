"""Typed health reports returned by :meth:`DatabaseBlock.ahealth`."""

from __future__ import annotations

import warnings

from pydantic import BaseModel, ConfigDict, Field

from prefect_atlas._health import Health


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

    target: str = Field(description="Where the block connects (host, port, database, user; no password).")
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
        schema = f", schema v{self.schema_version}" if self.schema_version is not None else ", schema not set up"
        return (
            f"OK {self.target}: PostgreSQL {self.server_version}, {self.latency_ms:.1f} ms"
            f"{schema}{pool}"
        )
