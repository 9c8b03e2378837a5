"""prefect-atlas: a Prefect 3 collection for Atlas, the video-monitoring data platform.

The blocks are re-exported here so that ``prefect block register -m prefect_atlas`` finds
them (it looks for module members; blocks are imported eagerly so that ``vars()`` sees them
too). Nothing heavy is imported: pgserver, pyarrow, google-cloud-storage, prefect-gcp and
huggingface_hub load only when a feature that needs them is used, and the event store's
names (``EventStore``...) when first read from here (``bench/import_time.py`` measures it).
"""

from typing import TYPE_CHECKING

from prefect_atlas._lazy import lazy_attributes
from prefect_atlas._version import __version__
from prefect_atlas.database import DatabaseBlock, HealthReport, PoolStats
from prefect_atlas.discord import AlertLevel, Channel, Delivery, DiscordBlock
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

if TYPE_CHECKING:
    from prefect_atlas.events import ConcurrencyError, EventStore, NewEvent, StoredEvent

# Read from their module on first use (PEP 562): the event store is not needed to use blocks.
_LAZY = {
    "ConcurrencyError": "prefect_atlas.events",
    "EventStore": "prefect_atlas.events",
    "NewEvent": "prefect_atlas.events",
    "StoredEvent": "prefect_atlas.events",
}


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)

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
