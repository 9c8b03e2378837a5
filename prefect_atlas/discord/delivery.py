"""``Delivery``: what became of one alert.

Prefect's own Discord block fails silently (Prefect issue #18718). Every ``DiscordBlock.asend``
returns one of these instead, so a caller (or a test) can tell a delivered alert from one
that was only logged, and read why.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from prefect_atlas.discord.enums import Channel


class Delivery(BaseModel):
    """The outcome of one alert: delivered or not, where, after how many tries, and why not."""

    model_config = ConfigDict(frozen=True)

    delivered: bool = Field(
        description="True when Discord stored the message (it answered with its id)."
    )
    channel: Channel | None = Field(
        default=None,
        description="The channel whose webhook was used last (None when none was tried).",
    )
    requested_channel: Channel | None = Field(
        default=None, description="The channel the caller asked for."
    )
    attempts: int = Field(
        default=0, description="HTTP requests made for this alert, over all webhooks tried."
    )
    message_id: str | None = Field(default=None, description="Discord's id of the stored message.")
    reason: str | None = Field(
        default=None, description="Why the alert was not delivered, or how it was routed."
    )
    logged: bool = Field(
        default=False,
        description="True when the alert was written to the log because it could not be sent.",
    )

    @property
    def used_fallback(self) -> bool:
        """True when the alert went to another channel than the one asked for."""
        return (
            self.delivered and self.channel is not None and self.channel != self.requested_channel
        )

    def __bool__(self) -> bool:
        return self.delivered
