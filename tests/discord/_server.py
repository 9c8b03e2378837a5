"""The Discord-like webhook server, now public in :mod:`prefect_atlas.testing.discord`."""

from prefect_atlas.testing.discord import DiscordServer, Webhook

__all__ = ["DiscordServer", "Webhook"]
