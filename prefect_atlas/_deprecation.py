"""Old public names kept for one release: each use warns with ``DeprecationWarning`` and works.

``warn_renamed`` is for an old name that is still defined (a method or function wrapper);
``moved_attribute`` backs a module ``__getattr__`` for names that moved to another module.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Iterable
from typing import Any


def warn_renamed(old: str, new: str, *, stacklevel: int = 3) -> None:
    """Warn that ``old`` is deprecated in favour of ``new`` (the caller's caller is blamed)."""
    warnings.warn(
        f"{old} is deprecated and will be removed in the next release; use {new} instead",
        DeprecationWarning,
        stacklevel=stacklevel,
    )


def moved_attribute(module: str, name: str, new_module: str, names: Iterable[str]) -> Any:
    """``new_module.name`` with a warning if ``name`` is one of ``names``; AttributeError
    otherwise."""
    if name not in names:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    warn_renamed(f"{module}.{name}", f"{new_module}.{name}", stacklevel=4)
    return getattr(importlib.import_module(new_module), name)
