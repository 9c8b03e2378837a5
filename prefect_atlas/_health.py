"""The one shape of every health report: ``ok``, ``latency_ms``, ``detail``, then extras.

The database's :class:`~prefect_atlas.HealthReport`, the event store's
:class:`~prefect_atlas.events.EventStoreHealth`, :class:`~prefect_atlas.vault.VaultHealth`,
:class:`~prefect_atlas.discord.block.DiscordHealth` and the system report's components all
start with these three fields, so a reader (or a dashboard) handles any of them the same way.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class Health(BaseModel):
    """Whether one component can do its job, how long the check took, and what it found."""

    ok: bool = Field(description="False when the component cannot do its job.")
    latency_ms: float | None = Field(
        default=None, description="How long the check took, in milliseconds."
    )
    detail: str = Field(
        default="", description="What was checked and found, or why it failed (no secrets)."
    )
