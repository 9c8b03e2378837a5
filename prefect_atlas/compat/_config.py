"""Where the compat objects get their blocks: saved blocks (``ATLAS_BLOCK``) or the settings.

Nothing here runs at import. The first call of a compat object builds its block once per
process and keeps it (:func:`reset` forgets them, for tests and after the environment changed):

* ``ATLAS_BLOCK=prod`` loads the Atlas Database, Vault and Discord blocks saved as ``prod``
  (the names ``prefect-atlas blocks from-env --name prod`` saves them under);
* otherwise each block is built from :class:`~prefect_atlas.settings.AtlasSettings`, the
  variables Atlas 0.2.1 read (``DATABASE_URL``, ``VAULT_PROVIDER``, ``DISCORD_WEBHOOK_*``...).
"""

from __future__ import annotations

import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from prefect.blocks.core import Block

from prefect_atlas._blocks import (
    database_from_settings,
    discord_from_settings,
    resolve_block,
    vault_from_settings,
)
from prefect_atlas._dispatch import run_sync
from prefect_atlas.database import DatabaseBlock
from prefect_atlas.settings import AtlasSettings
from prefect_atlas.vault import VaultBlock

B = TypeVar("B", bound=Block)
R = TypeVar("R")

_lock = threading.Lock()
_blocks: dict[type[Block], Block] = {}
_settings: AtlasSettings | None = None


def settings() -> AtlasSettings:
    """The settings the compat objects use, read from the environment on first use."""
    global _settings
    with _lock:
        if _settings is None:
            _settings = AtlasSettings()
        return _settings


def reset() -> None:
    """Forget the settings and blocks built so far; the next call builds them anew.

    Pools, spools and Discord sessions belong to the process runtime and are shared by
    settings, so nothing leaks: a block with the same settings finds them again.
    """
    global _settings
    with _lock:
        _settings = None
        _blocks.clear()


def call_sync(coro: Coroutine[Any, Any, R]) -> R:
    """Run ``coro`` to completion and return its result, also from inside a running loop.

    Atlas 0.2.1's sync functions (``vault.store_json``...) were called from async code
    without ``await``; the blocks' sync faces hand a coroutine back there, so the compat
    faces run the block's async method on Prefect's run-sync loop thread and wait, the way
    0.2.1 blocked its caller.
    """
    return run_sync(coro)


def _from_settings(cls: type[Block], found: AtlasSettings) -> Block:
    if cls is DatabaseBlock:
        return database_from_settings(found)
    if cls is VaultBlock:
        # No credentials block: google-cloud-storage's default credentials read
        # GOOGLE_APPLICATION_CREDENTIALS themselves, as they did for Atlas 0.2.1.
        return vault_from_settings(found)[0]
    return discord_from_settings(found)


async def _load_saved(cls: type[B], name: str) -> B:
    try:
        return await resolve_block(cls, name)
    except ValueError as exc:
        raise ValueError(
            f"ATLAS_BLOCK={name}: no saved {cls.get_block_type_name()} block named {name!r} "
            f"({exc}). Save the blocks with `prefect-atlas blocks from-env --name {name}`, "
            "or unset ATLAS_BLOCK to build them from the environment variables"
        ) from None


async def ablock(cls: type[B]) -> B:
    """This process's compat block of ``cls`` (loaded or built on first use)."""
    found = _blocks.get(cls)
    if found is not None:
        return found  # type: ignore[return-value]
    current = settings()
    if current.atlas_block:
        made: Block = await _load_saved(cls, current.atlas_block)
    else:
        made = _from_settings(cls, current)
    with _lock:
        kept = _blocks.setdefault(cls, made)  # two first calls at once keep one block
    return kept  # type: ignore[return-value]


def block(cls: type[B]) -> B:
    """Sync face of :func:`ablock` (runs to completion, also inside a running loop)."""
    found = _blocks.get(cls)
    if found is not None:
        return found  # type: ignore[return-value]
    return call_sync(ablock(cls))


def built(cls: type[B]) -> B | None:
    """The compat block of ``cls`` if one was built already (never builds one)."""
    return _blocks.get(cls)  # type: ignore[return-value]
