"""prefect-atlas: a Prefect 3 collection for Atlas, the video-monitoring data platform.

The blocks are re-exported here so that ``prefect block register -m prefect_atlas`` finds
them. Nothing heavy is imported: pgserver, pyarrow, google-cloud-storage and
huggingface_hub load only when a feature that needs them is used.
"""

from prefect_atlas._version import __version__
from prefect_atlas.database import DatabaseBlock, HealthReport, PoolStats
from prefect_atlas.discord import AlertLevel, Channel, Delivery, DiscordBlock
from prefect_atlas.events import ConcurrencyError, EventStore, NewEvent, StoredEvent
from prefect_atlas.exceptions import (
    AtlasError,
    DatabaseConfigurationError,
    DatabaseConnectionError,
    DatabaseError,
    MigrationError,
    MissingExtraError,
)
from prefect_atlas.vault import (
    VaultAccessError,
    VaultBatchError,
    VaultBlock,
    VaultError,
    VaultIntegrityError,
    VaultObjectExistsError,
    VaultPathError,
)

__all__ = [
    "AlertLevel",
    "AtlasError",
    "Channel",
    "ConcurrencyError",
    "DatabaseBlock",
    "DatabaseConfigurationError",
    "DatabaseConnectionError",
    "DatabaseError",
    "Delivery",
    "DiscordBlock",
    "EventStore",
    "HealthReport",
    "MigrationError",
    "MissingExtraError",
    "NewEvent",
    "PoolStats",
    "StoredEvent",
    "VaultAccessError",
    "VaultBatchError",
    "VaultBlock",
    "VaultError",
    "VaultIntegrityError",
    "VaultObjectExistsError",
    "VaultPathError",
    "__version__",
]
