"""Vault tasks: ``store_json`` and ``store_batch`` with a block name or a block.

Retries are on: a write is safe to repeat (same path, same bytes), so a transient failure
that outlived the block's own request retries is tried again by Prefect. Results are not
cached: a write must happen every time it is asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefect.cache_policies import NO_CACHE

from prefect_atlas._blocks import resolve_block
from prefect_atlas.tasks._dual import dual_task
from prefect_atlas.vault.block import VaultBlock
from prefect_atlas.vault.errors import VaultAccessError, VaultObjectExistsError, VaultPathError

# Refusals and bad input fail the same way every time: retrying them only delays the error.
_PERMANENT = (VaultAccessError, VaultObjectExistsError, VaultPathError, TypeError, ValueError)


def retry_unless_permanent(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry condition: retry unless the failure is one of the permanent kinds."""
    data = getattr(state, "data", None)
    error = getattr(data, "result", data)  # a ResultRecord wraps it; a plain state holds it
    return not isinstance(error, _PERMANENT)


_OPTIONS: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": [1, 5, 15],
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": retry_unless_permanent,
    "cache_policy": NO_CACHE,
}


@dual_task(name="atlas-vault-store-json", **_OPTIONS)
async def store_json(vault: str | VaultBlock, path: str, obj: Any, overwrite: bool = True) -> str:
    """Store ``obj`` as JSON at ``path`` in the vault; returns the normalised path."""
    block = await resolve_block(VaultBlock, vault)
    return await block.astore_json(path, obj, overwrite=overwrite)


@dual_task(name="atlas-vault-store-batch", **_OPTIONS)
async def store_batch(
    vault: str | VaultBlock, items: Sequence[tuple[str, Any]], overwrite: bool = True
) -> list[str]:
    """Store many ``(path, obj)`` pairs in one call (one commit per 100 files on Hugging Face)."""
    block = await resolve_block(VaultBlock, vault)
    return await block.astore_batch(items, overwrite=overwrite)
