"""``notifier``: Atlas 0.2.1's Discord notifier (``atlas.notifications``) over
:class:`DiscordBlock`.

``await notifier.send(title, description, channel=..., level=..., fields=...)`` posts one
embed to the channel's ``DISCORD_WEBHOOK_*`` webhook, falls back to ALERTS when that
channel has none, and never raises for a delivery problem (as in 0.2.1). With no webhook
configured the alert is written to the log, as before. What it returns now says what
became of the alert (a :class:`~prefect_atlas.Delivery`, truthy when Discord stored it):
0.2.1 returned None, so a lost alert was invisible.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prefect_atlas.compat import _config
from prefect_atlas.discord import AlertLevel, Channel, Delivery, DiscordBlock

AlertChannel = Channel
"""0.2.1's name of :class:`~prefect_atlas.Channel` (ALERTS, HUNT, SURVEILLANCE, OPS)."""

# 0.2.1's AlertChannel.SURVEILLANCE had the value "watch".
_OLD_VALUES = {"watch": Channel.SURVEILLANCE}


def as_channel(channel: Channel | str) -> Channel:
    """A :class:`Channel` from an enum member or its value (0.2.1's ``"watch"`` too)."""
    if isinstance(channel, Channel):
        return channel
    text = str(channel).strip().lower()
    if text in _OLD_VALUES:
        return _OLD_VALUES[text]
    try:
        return Channel(text)
    except ValueError:
        names = ", ".join(c.name for c in Channel)
        raise ValueError(
            f"channel {channel!r} is not an Atlas channel: use one of {names}"
        ) from None


def as_level(level: AlertLevel | str | int) -> AlertLevel:
    """An :class:`AlertLevel` from a member, its name or value, or 0.2.1's colour value."""
    if isinstance(level, AlertLevel):
        return level
    if isinstance(level, int):  # 0.2.1's members were their embed colours
        for member in AlertLevel:
            if member.colour == level:
                return member
    else:
        try:
            return AlertLevel(str(level).strip().lower())
        except ValueError:
            pass
    names = ", ".join(m.name for m in AlertLevel)
    raise ValueError(f"level {level!r} is not an Atlas alert level: use one of {names}")


class DiscordNotifier:
    """The ``notifier`` object: Discord alerts by channel and level."""

    async def block(self) -> DiscordBlock:
        """The :class:`DiscordBlock` behind ``notifier`` (saved under ``ATLAS_BLOCK``, or built
        from ``DISCORD_WEBHOOK_ALERTS``/``_HUNT``/``_SURVEILLANCE``/``_OPS`` and ``ENV``)."""
        return await _config.ablock(DiscordBlock)

    async def send(
        self,
        title: str,
        description: str,
        channel: Channel | str = Channel.ALERTS,
        level: AlertLevel | str | int = AlertLevel.INFO,
        fields: Mapping[str, Any] | None = None,
    ) -> Delivery:
        """Post one alert; never raises for a delivery problem (the result says what happened)."""
        discord = await self.block()
        return await discord.asend(
            title,
            description,
            level=as_level(level),
            channel=as_channel(channel),
            fields=dict(fields) if fields else None,
        )

    async def close(self) -> None:
        """Close this event loop's HTTP session to Discord (the next send opens a new one)."""
        found = _config.built(DiscordBlock)
        if found is not None:
            await found.aclose()

    def __repr__(self) -> str:
        found = _config.built(DiscordBlock)
        if found is None:
            return "<atlas notifier: not used yet>"
        channels = ", ".join(c.value for c in found.configured_channels) or "none (log only)"
        return f"<atlas notifier: webhooks {channels}>"


notifier = DiscordNotifier()

__all__ = ["AlertChannel", "AlertLevel", "Channel", "DiscordNotifier", "notifier"]
