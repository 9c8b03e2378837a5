"""The process runtime: state that lives as long as the process, owned once, shared by all.

Why: Prefect builds blocks anew all the time — ``aload`` in every task call, a deep copy for
every task parameter, unpickled copies in other processes. State that must accumulate or be
shared (connection pools, an event store's circuit breaker, spool and drainer, Discord's rate
limiters and HTTP sessions) cannot live on such throw-away objects: a breaker that starts
closed on every task call never opens, and two hooks with two limiters each think they own
the webhook's budget. So that state lives here, keyed by what it serves (a connection
target, a spool file, a webhook), created on first use and shut down once at interpreter
exit (in reverse order of creation, each shutdown bounded and guarded).

Blocks stay configuration plus thin faces; they look their runtime up by key.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Callable, Hashable
from typing import Any, TypeVar, cast

logger = logging.getLogger("prefect_atlas.runtime")

T = TypeVar("T")

_lock = threading.RLock()
_owned: dict[tuple[str, Hashable], Any] = {}
_shutdowns: list[tuple[str, Callable[[], None]]] = []
_exit_registered = False


def shared(kind: str, key: Hashable, factory: Callable[[], T]) -> T:
    """The process's one ``kind`` object for ``key``, made by ``factory()`` on first use."""
    entry = _owned.get((kind, key))  # lock-free hit: this sits on hot paths
    if entry is not None:
        return cast(T, entry)
    with _lock:
        entry = _owned.get((kind, key))
        if entry is None:
            entry = _owned[(kind, key)] = factory()
        return cast(T, entry)


def forget(kind: str, key: Hashable) -> None:
    """Drop the ``kind`` object of ``key`` (the next :func:`shared` call makes a new one)."""
    with _lock:
        _owned.pop((kind, key), None)


def on_exit(name: str, callback: Callable[[], None]) -> None:
    """Run ``callback`` at interpreter exit (latest registered first); errors are logged."""
    global _exit_registered
    with _lock:
        _shutdowns.append((name, callback))
        if not _exit_registered:
            atexit.register(shutdown)
            _exit_registered = True


def shutdown() -> None:
    """Run every exit callback once (interpreter exit calls this; tests may too)."""
    with _lock:
        callbacks = list(reversed(_shutdowns))
        _shutdowns.clear()
    for name, callback in callbacks:
        try:
            callback()
        except Exception:
            logger.exception("prefect-atlas runtime: shutting down %s failed", name)
