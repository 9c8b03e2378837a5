"""Building a :class:`~prefect_atlas.vault.VaultBlock`'s provider strategy from its fields.

Provider modules (and their extras) are imported only for the provider chosen.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prefect_atlas._extras import require
from prefect_atlas.vault._base import StorageProvider
from prefect_atlas.vault._settings import GcsStorage

if TYPE_CHECKING:
    from prefect_atlas.vault.block import VaultBlock


async def build_provider(block: VaultBlock) -> StorageProvider:
    """The provider strategy (and its client factory) the block's fields describe."""
    if block.provider == "local":
        from prefect_atlas.vault._local import LocalProvider

        return LocalProvider(block.local_root())
    if block.provider == "gcs":
        from prefect_atlas.vault._gcs import GcsProvider

        assert block.bucket is not None
        return GcsProvider(
            bucket=block.bucket,
            prefix=block.prefix,
            client_factory=await gcs_client_factory(block),
            max_concurrency=block.max_concurrency,
            timeout=block.timeout,
            attempts=block.retry_attempts,
        )
    from prefect_atlas.vault._hf import HfProvider

    assert block.dataset_id is not None
    return HfProvider(
        dataset_id=block.dataset_id,
        revision=block.revision,
        endpoint=block.endpoint,
        token=block.token.get_secret_value() if block.token else None,
        prefix=block.prefix,
        timeout=block.timeout,
        attempts=block.retry_attempts,
    )


async def gcs_client_factory(block: VaultBlock) -> Any:
    """A callable making the GCS client: from a saved GcpCredentials block, a key, or ADC."""
    purpose = "The GCS vault provider"
    storage = require("google.cloud.storage", extra="gcs", purpose=purpose)
    gcs = block.storage if isinstance(block.storage, GcsStorage) else None
    creds_block = await gcs.aload_credentials() if gcs is not None else None
    if creds_block is not None:
        return lambda: creds_block.get_cloud_storage_client(project=block.project)
    if block.service_account_info is not None:
        service_account = require("google.oauth2.service_account", extra="gcs", purpose=purpose)
        info = dict(block.service_account_info.get_secret_value())

        def from_info() -> Any:
            creds = service_account.Credentials.from_service_account_info(info)
            return storage.Client(
                project=block.project or info.get("project_id"), credentials=creds
            )

        return from_info
    return lambda: storage.Client(project=block.project)
