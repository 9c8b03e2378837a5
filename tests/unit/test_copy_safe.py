"""One mechanism for every block: copies carry configuration, never an instance's live state."""

from __future__ import annotations

import copy
import pickle
import threading
from pathlib import Path

from pydantic import SecretStr

from prefect_atlas import DatabaseBlock, VaultBlock


def _copies(block: object) -> list[object]:
    model_copy = block.model_copy  # type: ignore[attr-defined]
    return [
        copy.copy(block),
        copy.deepcopy(block),
        pickle.loads(pickle.dumps(block)),
        model_copy(),
        model_copy(deep=True),
    ]


def test_database_block_copies_are_users_of_their_own() -> None:
    db = DatabaseBlock(url=SecretStr("postgresql://atlas:secret@127.0.0.1:1/atlas"), max_size=3)
    for clone in _copies(db):
        assert isinstance(clone, DatabaseBlock)
        assert clone._pool_user is not db._pool_user
        assert clone.model_dump() == db.model_dump()


def test_vault_block_copies_never_carry_the_provider(tmp_path: Path) -> None:
    vault = VaultBlock(provider="local", root=str(tmp_path))
    sentinel_lock = threading.Lock()  # neither deep-copied nor pickled: it must not travel
    vault._provider = sentinel_lock  # type: ignore[assignment]
    for clone in _copies(vault):
        assert isinstance(clone, VaultBlock)
        assert clone._provider is None
        assert clone.model_dump() == vault.model_dump()
    original: object = vault._provider
    assert original is sentinel_lock
