"""Tasks that run from a ``def`` flow and from an ``async def`` flow: one task object per name.

Why: a Prefect task over an ``async def`` function returns a coroutine when a plain ``def``
flow calls it, and nothing runs — no error, no task run, no write. Every task we ship is
async (the core is), so each would fail that way silently in a sync flow.

How: :class:`DualTask` is a Prefect :class:`~prefect.Task` over the async function, so its
name, task-run names, retries, retry condition, cache policy, ``.fn`` and the flow-run graph
are Prefect's own. Only a direct call dispatches on the caller, the way the blocks' sync
faces do (:mod:`prefect_atlas._dispatch`):

* in async code (an ``async def`` flow or task, a running event loop) it returns the
  awaitable, exactly as any async task;
* in sync code (a ``def`` flow or task, a script) it drives that same task run to completion
  on Prefect's shared "run sync" event loop and returns the result (or the state, with
  ``return_state=True``). The calling thread waits, as for any sync task; no event loop is
  blocked, because the calling thread runs none that could be waiting (an async flow's loop
  only ever gets the awaitable).

``.submit()`` and ``.map()`` are Prefect's own and already work from both kinds of flow: they
are synchronous, and every task runner (threads, processes, Dask) runs an async task on an
event loop of its own. Either way one call is one task run.

Prefect's integrations (prefect-gcp, prefect-aws) declare twin tasks instead: an
``a``-prefixed async task and a sync task wrapped in the private ``async_dispatch``. One
object per name needs neither the twin nor the private import.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from prefect import Task

from prefect_atlas._dispatch import in_async_context, run_sync

P = ParamSpec("P")
R = TypeVar("R")


class DualTask(Task[P, Coroutine[Any, Any, R]]):
    """A Prefect task over an ``async def`` that also runs when a ``def`` flow calls it.

    Type checkers see an async task (``await task(...)``, ``task.submit(...)``); at run time a
    direct call from sync code returns the result instead of a coroutine.
    """

    if not TYPE_CHECKING:  # keep Task's precise overloads for type checkers

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            outcome = super().__call__(*args, **kwargs)
            if in_async_context() or not inspect.isawaitable(outcome):
                return outcome
            return run_sync(outcome)

        def with_options(self, **options: Any) -> DualTask[P, R]:
            # Task.with_options builds a plain Task; keep the copy dual.
            return _as_dual(super().with_options(**options))


def _as_dual(plain: Task[P, Coroutine[Any, Any, R]]) -> DualTask[P, R]:
    dual: DualTask[P, R] = DualTask.__new__(DualTask)
    dual.__dict__.update(plain.__dict__)
    return dual


def dual_task(
    **options: Any,
) -> Callable[[Callable[P, Coroutine[Any, Any, R]]], DualTask[P, R]]:
    """``@task(**options)`` for an ``async def``, giving a :class:`DualTask`."""

    def decorate(fn: Callable[P, Coroutine[Any, Any, R]]) -> DualTask[P, R]:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"dual_task decorates an async def function, got {fn!r}")
        return DualTask(fn, **options)

    return decorate
