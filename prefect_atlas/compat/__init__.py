"""Atlas 0.2.1's module-level API over the prefect-atlas blocks.

Change one import and a 0.2.1 service runs on prefect-atlas::

    from prefect_atlas.compat import db, vault, events, notifier, AlertLevel

    async with db.get_connection() as conn:
        await conn.execute("SELECT 1")
    vault.store_json("path.json", {"key": "value"})
    await events.emit("event.type", "entity_id", {"n": 1})
    await notifier.send("Title", "Description", level=AlertLevel.INFO)

Each object is a thin face over a block (:class:`~prefect_atlas.DatabaseBlock`,
:class:`~prefect_atlas.VaultBlock`, :class:`~prefect_atlas.DiscordBlock`,
:class:`~prefect_atlas.EventStore`), built on first use from 0.2.1's environment variables
(``DATABASE_URL``, ``VAULT_PROVIDER``, ``DISCORD_WEBHOOK_*``... read through
:mod:`prefect_atlas.settings`) or, with ``ATLAS_BLOCK=prod``, loaded from the blocks saved
under that name. Importing this package connects to nothing and loads no block.

Sync and async are as in 0.2.1: ``db`` and ``events``, ``notifier`` and
``health_check_all`` are async; ``vault``'s methods are sync. Where 0.2.1 hid failures,
this layer does the safe thing (docs/migration.md lists each change): events are spooled
instead of dropped, vault reads that fail raise instead of returning ``None``.
"""

from prefect_atlas.compat._config import reset
from prefect_atlas.compat.config import Settings, settings
from prefect_atlas.compat.db import DatabaseManager, db
from prefect_atlas.compat.events import EventBus, events
from prefect_atlas.compat.notifications import (
    AlertChannel,
    AlertLevel,
    Channel,
    DiscordNotifier,
    notifier,
)
from prefect_atlas.compat.utils import (
    health_check_all,
    retry_async,
    validate_channel_id,
    validate_youtube_id,
)
from prefect_atlas.compat.vault import Vault, vault

__all__ = [
    "AlertChannel",
    "AlertLevel",
    "Channel",
    "DatabaseManager",
    "DiscordNotifier",
    "EventBus",
    "Settings",
    "Vault",
    "db",
    "events",
    "health_check_all",
    "notifier",
    "reset",
    "retry_async",
    "settings",
    "validate_channel_id",
    "validate_youtube_id",
    "vault",
]
