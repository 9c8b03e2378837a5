"""Sync faces for async methods, the way Prefect's own blocks do ``aload``/``load``.

The async method (``ahealth``) is the original. Its sync face (``health``) dispatches on
the caller's context:

* in async code (a running event loop, an async flow or task) it returns the coroutine,
  so ``await db.health()`` works as the abstract :class:`prefect.blocks.abstract.DatabaseBlock`
  interface promises;
* in sync code (a sync flow, a sync task in a worker thread, a script) it runs the coroutine
  to completion on Prefect's shared "run sync" event loop and returns the result.

Running every sync call on that one long-lived loop matters for pooled resources: a block
keeps one connection pool per event loop, so sync callers from many threads share one pool
instead of opening (and leaking) a pool per call.

Prefect's deprecated ``sync_compatible`` is not used, nor its private ``async_dispatch``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar, cast

from prefect.context import get_run_context
from prefect.exceptions import MissingContextError
from prefect.utilities.asyncutils import run_coro_as_sync

R = TypeVar("R")


def in_async_context() -> bool:
    """True when the caller can ``await``: inside an async flow/task or a running loop."""
    try:
        run_ctx = get_run_context()
    except MissingContextError:
        pass
    else:
        parent = getattr(run_ctx, "task", None) or getattr(run_ctx, "flow", None)
        if parent is not None:
            return bool(getattr(parent, "isasync", True))
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def run_sync(coro: Coroutine[Any, Any, R]) -> R:
    """Run ``coro`` to completion from sync code on Prefect's shared run-sync loop."""
    return run_coro_as_sync(coro)


def sync_or_await(coro: Coroutine[Any, Any, R]) -> R:
    """The body of every sync face: the coroutine itself in async code, its result in sync code.

    Typed as the result, as Prefect types ``Block.load``; typed async code should await the
    ``a``-prefixed original instead.
    """
    if in_async_context():
        return cast(R, coro)
    return run_sync(coro)
