"""System health: database (and event spool), vault and Discord, checked together.

Used by ``prefect-atlas health``, the ``system_health_check`` task and ``flows/health.py``.
Every check is bounded by a timeout and never raises because a component is down: the
report says which one and why. Each component's line has the shape of every health report
(:class:`Health`: ``ok``, ``latency_ms``, ``detail``) plus its ``component`` name.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from pydantic import BaseModel, Field

from prefect_atlas import metrics
from prefect_atlas._blocks import resolve_block
from prefect_atlas._dispatch import sync_or_await
from prefect_atlas._health import Health
from prefect_atlas._redact import redact_text
from prefect_atlas.database import DatabaseBlock, HealthReport
from prefect_atlas.discord import DiscordBlock
from prefect_atlas.events import EventStore
from prefect_atlas.vault import VaultBlock

__all__ = ["ComponentHealth", "Health", "SystemHealth", "acheck_system", "check_system"]


class ComponentHealth(Health):
    """One component's state (``latency_ms`` is the time its whole check took)."""

    component: str = Field(description="database, event spool, vault or discord.")


class SystemHealth(BaseModel):
    """Every component's state; ``ok`` only when all are."""

    ok: bool
    checked_at: datetime
    """When the check ran (UTC)."""
    components: list[ComponentHealth]
    """One entry per component: database, event spool, vault, Discord."""
    database: HealthReport | None = Field(default=None, description="The database's full report.")

    def down(self) -> list[ComponentHealth]:
        """The components that are not ok."""
        return [c for c in self.components if not c.ok]

    def table(self) -> str:
        """A readable table for terminals and logs."""
        width = max(len(c.component) for c in self.components)
        lines = [f"{'component':<{width}}  state  latency    detail", "-" * (width + 40)]
        for c in self.components:
            latency = f"{c.latency_ms:7.1f} ms" if c.latency_ms is not None else "       - "
            lines.append(
                f"{c.component:<{width}}  {'OK  ' if c.ok else 'DOWN'}   {latency}  {c.detail}"
            )
        lines.append(
            "overall: "
            f"{'OK' if self.ok else 'DOWN: ' + ', '.join(c.component for c in self.down())}"
        )
        return "\n".join(lines)


async def _timed(
    component: str, timeout: float, check: Callable[[], Awaitable[Health]]
) -> ComponentHealth:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            report = await check()
        ok, detail = report.ok, report.detail
    except TimeoutError:
        ok, detail = False, f"no answer within {timeout:g} s"
    except Exception as exc:
        ok, detail = False, redact_text(f"{type(exc).__name__}: {exc}")
    return ComponentHealth(
        component=component,
        ok=ok,
        detail=detail,
        latency_ms=round((time.perf_counter() - started) * 1000, 2),
    )


async def acheck_system(
    database: str | DatabaseBlock | None = None,
    vault: str | VaultBlock | None = None,
    discord: str | DiscordBlock | None = None,
    *,
    timeout: float = 5.0,
) -> SystemHealth:
    """Check each component (a block, a saved block's name, or None for the default block)."""
    db = DatabaseBlock() if database is None else await resolve_block(DatabaseBlock, database)
    owns_db = not isinstance(database, DatabaseBlock)  # never close a pool the caller is using
    store = VaultBlock() if vault is None else await resolve_block(VaultBlock, vault)
    alerts = DiscordBlock() if discord is None else await resolve_block(DiscordBlock, discord)

    database_report: list[HealthReport] = []

    async def check_database() -> Health:
        report = await db.ahealth(timeout=timeout)
        database_report.append(report)
        return Health(ok=report.ok, latency_ms=report.latency_ms, detail=report.summary())

    async def check_spool() -> Health:
        waiting = EventStore(db).spool_size()
        if waiting:
            drain = "`prefect-atlas events drain`"
            return Health(ok=True, detail=f"{waiting} event(s) waiting to be drained ({drain})")
        return Health(ok=True, detail="empty")

    async def check_vault() -> Health:
        # The container itself: an object probe would read a typo'd bucket as "absent".
        return await store.ahealth(timeout=timeout)

    async def check_discord() -> Health:
        if not alerts.configured_channels:
            return Health(ok=True, detail="no webhook configured: alerts go to the Prefect log")
        return await alerts.ahealth()

    try:
        components = list(
            await asyncio.gather(
                _timed("database", timeout + 1, check_database),
                _timed("event spool", timeout, check_spool),
                _timed("vault", timeout, check_vault),
                _timed("discord", timeout, check_discord),
            )
        )
    finally:
        if owns_db:
            await db.aclose()
    for component in components:
        metrics.COMPONENT_UP.labels(component.component).set(1 if component.ok else 0)
    return SystemHealth(
        ok=all(c.ok for c in components),
        checked_at=datetime.now(UTC),
        components=components,
        database=database_report[0] if database_report else None,
    )


def check_system(
    database: str | DatabaseBlock | None = None,
    vault: str | VaultBlock | None = None,
    discord: str | DiscordBlock | None = None,
    *,
    timeout: float = 5.0,
) -> SystemHealth:
    """Sync face of :func:`acheck_system` (awaitable in async code)."""
    return sync_or_await(acheck_system(database, vault, discord, timeout=timeout))
