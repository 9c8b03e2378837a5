"""The vault tasks in a real flow, with a saved block name and with a block."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from prefect import flow

from prefect_atlas import VaultBlock, VaultPathError
from prefect_atlas.tasks import store_batch, store_json


async def test_tasks_with_block_name_and_block(tmp_path: Path) -> None:
    name = f"vault-{uuid.uuid4().hex[:8]}"
    await VaultBlock(root=str(tmp_path / "v")).asave(name)

    @flow
    async def pipeline() -> list[str]:
        first = await store_json(name, "flow/a.json", {"a": 1})
        rest = await store_batch(VaultBlock(root=str(tmp_path / "v")), [("flow/b.json", {"b": 2})])
        return [first, *rest]

    assert await pipeline() == ["flow/a.json", "flow/b.json"]
    from prefect_atlas._blocks import resolve_block

    vault = await resolve_block(VaultBlock, name)
    assert await vault.afetch_json("flow/b.json") == {"b": 2}
    # On the class, delete is still Block's: it removes the saved block document.
    await VaultBlock.adelete(name)
    with pytest.raises(ValueError, match="Unable to find block document"):
        await VaultBlock.aload(name)


async def test_bad_path_is_not_retried(tmp_path: Path) -> None:
    @flow
    async def pipeline() -> str:
        return await store_json(VaultBlock(root=str(tmp_path / "v")), "../x.json", {})

    with pytest.raises(VaultPathError):
        await pipeline()


def test_retry_condition_skips_permanent_errors() -> None:
    from prefect.states import Failed

    from prefect_atlas.tasks.vault import retry_unless_permanent

    assert retry_unless_permanent(None, None, Failed(data=VaultPathError("bad"))) is False
    assert retry_unless_permanent(None, None, Failed(data=ConnectionError("reset"))) is True


def test_retry_condition_for_batch_errors() -> None:
    """A batch refused for one reason is permanent like that reason; anything else retries."""
    from prefect.states import Failed

    from prefect_atlas import VaultAccessError, VaultError, VaultObjectExistsError
    from prefect_atlas.tasks.vault import retry_unless_permanent
    from prefect_atlas.vault.errors import VaultBatchError

    def batch(*errors: Exception) -> VaultBatchError:
        paths = [f"p{i}.json" for i in range(len(errors))]
        return VaultBatchError.of(
            provider="local",
            written=[],
            not_written=paths,
            unknown=[],
            errors=dict(zip(paths, errors, strict=True)),
        )

    exists, denied, disk_full = (
        VaultObjectExistsError("taken"),
        VaultAccessError("denied"),
        VaultError("ENOSPC"),
    )
    assert retry_unless_permanent(None, None, Failed(data=batch(exists, exists))) is False
    assert retry_unless_permanent(None, None, Failed(data=batch(denied))) is False
    assert retry_unless_permanent(None, None, Failed(data=batch(disk_full))) is True
    assert retry_unless_permanent(None, None, Failed(data=batch(exists, denied))) is True
