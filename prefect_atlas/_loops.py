"""``PerLoop``: runtime state kept once per event loop, never copied or pickled.

Why per loop: asyncio resources (connection pools, aiohttp sessions, locks) belong to the
loop that created them, and Prefect runs code on several loops in one process (async flows,
sync tasks in worker threads, its shared "run sync" loop). Why never copied: Prefect pickles
and deep-copies blocks (task parameters, results, other processes); a copy starts empty and
creates its own state lazily. State of a loop that has been closed is dropped on next access.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class PerLoop(Generic[T]):
    """A value of type ``T`` per running event loop, created on demand."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_loop: dict[int, tuple[weakref.ReferenceType[asyncio.AbstractEventLoop], T]] = {}

    def __reduce__(self) -> tuple[type[PerLoop[T]], tuple[()]]:
        return (type(self), ())

    def __copy__(self) -> PerLoop[T]:
        return type(self)()

    def __deepcopy__(self, memo: dict[int, Any]) -> PerLoop[T]:
        return type(self)()

    def __len__(self) -> int:
        with self._lock:
            self._prune()
            return len(self._by_loop)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(loops={len(self)})"

    def get(self) -> T | None:
        """The running loop's value, if one was created (lock-free: this is the hot path)."""
        loop = asyncio.get_running_loop()
        entry = self._by_loop.get(id(loop))
        # the identity check guards against a dead loop whose id a new loop reused
        if entry is not None and entry[0]() is loop:
            return entry[1]
        return None

    def get_or_create(
        self, factory: Callable[[T | None], T], *, reuse: Callable[[T], bool] = lambda _: True
    ) -> T:
        """The running loop's value; ``factory(previous)`` makes one when there is none or
        ``reuse(value)`` says the current one is spent (e.g. a closed session)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            self._prune()
            entry = self._by_loop.get(id(loop))
            if entry is not None and entry[0]() is loop and reuse(entry[1]):
                return entry[1]
            value = factory(entry[1] if entry is not None else None)
            self._by_loop[id(loop)] = (weakref.ref(loop), value)
            return value

    def pop(self) -> T | None:
        """Remove and return the running loop's value (to close it); None outside a loop."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        with self._lock:
            entry = self._by_loop.pop(id(loop), None)
            return entry[1] if entry is not None else None

    def _prune(self) -> None:
        for key, (ref, _) in list(self._by_loop.items()):
            owner = ref()
            if owner is None or owner.is_closed():
                # The loop is gone, and with it the tasks of whatever lived on it.
                del self._by_loop[key]


async def close_at_loop_shutdown(close: Callable[[], Awaitable[object]]) -> AsyncGenerator[None]:
    """Arrange for ``close()`` to run when the running loop shuts down; keep what it returns.

    ``asyncio.run`` (and Prefect, which runs async tasks of sync flows on short-lived loops)
    calls ``loop.shutdown_asyncgens()`` before closing a loop: it closes every async generator
    still suspended. The returned generator is parked at its ``yield``, so that shutdown turns
    into a clean ``close()`` instead of resources (pool workers, an HTTP session) destroyed
    with the loop. The loop holds it only weakly: the caller keeps a reference for as long as
    the resource lives, and may ``aclose()`` it to close early.
    """

    async def parked() -> AsyncGenerator[None]:
        try:
            yield
        finally:
            await close()

    closer = parked()
    await anext(closer)
    return closer
