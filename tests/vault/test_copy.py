"""Copies and pickles of a used vault: configuration travels, the live client never does."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import pytest

from prefect_atlas import VaultBlock
from tests.vault.conftest import PROVIDERS, make_vault


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_copy_deepcopy_pickle_after_use(
    provider: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    vault = make_vault(provider, request, tmp_path)
    clones: list[VaultBlock] = []
    try:
        await vault.astore_json("copy/a.json", {"a": 1})
        assert vault._provider is not None  # a live client (for GCS: sockets, a thread pool)
        clones = [
            copy.copy(vault),
            copy.deepcopy(vault),
            pickle.loads(pickle.dumps(vault)),
            vault.model_copy(),
            vault.model_copy(deep=True),
        ]
        for clone in clones:
            assert clone._provider is None, (
                "a copy must build its own provider, not share or clone ours"
            )
            assert clone.model_dump() == vault.model_dump()
        for clone in clones:
            assert await clone.afetch_json("copy/a.json") == {"a": 1}
            assert clone._provider is not None and clone._provider is not vault._provider
        # Closing a copy leaves the original working.
        await clones[0].aclose()
        assert await vault.afetch_json("copy/a.json") == {"a": 1}
    finally:
        for clone in clones:
            await clone.aclose()
        await vault.aclose()
