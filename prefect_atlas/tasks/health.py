"""The system health task: database, event spool, vault and Discord in one report."""

from __future__ import annotations

from prefect.cache_policies import NO_CACHE

from prefect_atlas.database import DatabaseBlock
from prefect_atlas.discord import DiscordBlock
from prefect_atlas.health import SystemHealth, acheck_system
from prefect_atlas.tasks._dual import dual_task
from prefect_atlas.vault import VaultBlock


@dual_task(name="atlas-system-health-check", cache_policy=NO_CACHE)
async def system_health_check(
    database: str | DatabaseBlock = "default",
    vault: str | VaultBlock = "default",
    discord: str | DiscordBlock = "default",
    timeout: float = 5.0,
) -> SystemHealth:
    """Check every Atlas component (block names or blocks); never raises because one is down.

    Health is read fresh on every call (no cache): a cached "OK" would hide an outage.
    """
    return await acheck_system(database, vault, discord, timeout=timeout)
