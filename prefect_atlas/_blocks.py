"""Helpers shared by the Atlas blocks."""

from __future__ import annotations

from typing import TypeVar

from prefect.blocks.core import Block
from pydantic import HttpUrl

_REPOSITORY = "prefect-atlas/prefect-atlas"

B = TypeVar("B", bound=Block)


def logo_url(file_name: str) -> HttpUrl:
    """The public URL of a logo shipped in ``prefect_atlas/assets`` (the UI shows it; the block
    test suite checks the shipped file of the same name, since tests run offline)."""
    return HttpUrl(f"https://raw.githubusercontent.com/{_REPOSITORY}/main/prefect_atlas/assets/{file_name}")


def docs_url(page: str) -> HttpUrl:
    """The public URL of a page in ``docs/``."""
    return HttpUrl(f"https://github.com/{_REPOSITORY}/blob/main/docs/{page}")


async def resolve_block(cls: type[B], ref: str | B) -> B:
    """``ref`` itself when it is a block of ``cls``, else the saved block named ``ref``.

    Tasks take "a block name or a block" so that a pipeline can pass either; this also
    gives type checkers the precise type, which Prefect's ``aload`` does not.
    """
    if isinstance(ref, cls):
        return ref
    if not isinstance(ref, str):
        raise TypeError(f"expected a {cls.__name__} or the name of a saved one, got {type(ref).__name__}")
    loaded = await cls.aload(ref)
    if not isinstance(loaded, cls):
        raise TypeError(f"block {ref!r} is a {type(loaded).__name__}, not a {cls.__name__}")
    return loaded
