"""Discord alerts for Atlas: ``DiscordBlock`` and what it returns.

aiohttp is imported on the first send, not here, so ``import prefect_atlas`` stays light.
"""

from prefect_atlas.discord.block import DiscordBlock
from prefect_atlas.discord.delivery import Delivery
from prefect_atlas.discord.enums import AlertLevel, Channel

__all__ = ["AlertLevel", "Channel", "Delivery", "DiscordBlock"]
