"""Module attributes read from another module on first use (PEP 562).

Why: ``import prefect_atlas`` and a block's UI form should not pay for what only running code
needs (the event store, the HTTP side of Discord). A module lists such names and where they
live; the first access imports that module and caches the value in the caller's namespace,
so later reads are plain attribute reads.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_attributes(
    module: str, table: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``module``: each name of ``table`` from its module."""
    namespace = sys.modules[module].__dict__

    def __getattr__(name: str) -> Any:
        source = table.get(name)
        if source is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(source), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *table})

    return __getattr__, __dir__
