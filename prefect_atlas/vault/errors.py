"""Errors raised by :class:`~prefect_atlas.VaultBlock`, defined in :mod:`prefect_atlas.exceptions`.

Re-exported here so that ``from prefect_atlas.vault.errors import VaultPathError`` keeps working.
"""

from __future__ import annotations

from prefect_atlas.exceptions import (
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
    "VaultAccessError",
    "VaultBatchAccessError",
    "VaultBatchError",
    "VaultBatchExistsError",
    "VaultBatchPathError",
    "VaultError",
    "VaultIntegrityError",
    "VaultObjectExistsError",
    "VaultPathError",
]
