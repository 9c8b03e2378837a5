"""Lazy imports of heavy and optional dependencies, with an error that names the fix."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from prefect_atlas.exceptions import MissingExtraError

# Which extra of prefect-atlas installs each heavy library, by top-level module name.
# ``None`` means a core dependency: installed with plain ``pip install prefect-atlas`` but
# still imported lazily to keep ``import prefect_atlas`` cheap.
EXTRAS: dict[str, str | None] = {
    "pgserver": "embedded",
    "google": "gcs",
    "prefect_gcp": "gcs",
    "huggingface_hub": "hf",
    "pyarrow": None,
}


def extra_of(module: str) -> str | None:
    """The extra that installs ``module`` (``None`` for a core dependency).

    >>> extra_of("pyarrow.parquet") is None
    True
    >>> extra_of("google.cloud.storage")
    'gcs'
    """
    top = module.split(".")[0]
    if top not in EXTRAS:
        raise KeyError(f"{module!r} is not a known heavy dependency of prefect-atlas")
    return EXTRAS[top]


def is_installed(module: str) -> bool:
    """True when ``module`` can be imported, found without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a missing parent package, or a None in sys.modules
        return False


def require(
    module: str, *, purpose: str, extra: str | None = None, alternative: str = ""
) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming the install command.

    Heavy libraries (pgserver, pyarrow, google-cloud-storage, huggingface_hub) are only
    imported through here, when a feature that needs them is first used, so that
    ``import prefect_atlas`` stays cheap. The extra named in the error comes from
    :data:`EXTRAS` unless ``extra`` is given.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if exc.name is not None and exc.name.split(".")[0] != module.split(".")[0]:
            # The module is there but one of *its* own imports failed: not a missing extra.
            raise
        raise MissingExtraError(
            module, extra if extra is not None else extra_of(module), purpose, alternative
        ) from exc
