"""The Atlas vault: metadata, transcripts and visual evidence on local disk, GCS or Hugging Face."""

from prefect_atlas.vault import layout
from prefect_atlas.vault._settings import GcsStorage, HuggingFaceStorage, LocalStorage
from prefect_atlas.vault.block import VaultBlock, VaultHealth
from prefect_atlas.vault.errors import (
    VaultAccessError,
    VaultBatchAccessError,
    VaultBatchError,
    VaultBatchExistsError,
    VaultBatchPathError,
    VaultError,
    VaultIntegrityError,
    VaultObjectExistsError,
    VaultPathError,
)

__all__ = [
    "GcsStorage",
    "HuggingFaceStorage",
    "LocalStorage",
    "VaultAccessError",
    "VaultBatchAccessError",
    "VaultBatchError",
    "VaultBatchExistsError",
    "VaultBatchPathError",
    "VaultBlock",
    "VaultError",
    "VaultHealth",
    "VaultIntegrityError",
    "VaultObjectExistsError",
    "VaultPathError",
    "layout",
]
