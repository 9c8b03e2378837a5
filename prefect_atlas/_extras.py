"""Lazy imports of optional dependencies, with an error that names the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from prefect_atlas.exceptions import MissingExtraError


def require(module: str, *, extra: str, purpose: str, alternative: str = "") -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming ``prefect-atlas[extra]``.

    Heavy libraries (pgserver, pyarrow, google-cloud-storage, huggingface_hub) are only
    imported through here, when a feature that needs them is first used, so that
    ``import prefect_atlas`` stays cheap.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if exc.name is not None and exc.name.split(".")[0] != module.split(".")[0]:
            # The module is there but one of *its* own imports failed: not a missing extra.
            raise
        raise MissingExtraError(module, extra, purpose, alternative) from exc
