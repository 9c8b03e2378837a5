"""The paging cursors behind ``DatabaseBlock.fetch_one``/``fetch_many``/``fetch_all``.

The contract is the one of Prefect's database blocks (prefect-sqlalchemy's
``SqlAlchemyConnector``, prefect-snowflake's ``SnowflakeConnector``): repeated fetches with the
same operation, parameters and execution keywords do not run the statement again; they return
the next rows of the first execution, until ``reset_cursors()``. Once the rows are used up a
fetch returns ``None`` / ``[]`` (so ``while rows := db.fetch_many(q, size=100)`` ends), and
keeps doing so until ``reset_cursors()``, as SqlAlchemyConnector's exhausted result does.

The rule that keeps paging from pinning connections: the first fetch of a statement reads its
whole result in its own short transaction, as a plain query does, and the connection goes back
to the pool at once. The unread rows wait in memory; no connection, transaction or lock is held
between fetches, so paging can never exhaust the pool, hold back VACUUM, or block a later
``TRUNCATE``/``ALTER TABLE`` the way a server-side cursor in an open transaction would. This is
also what SqlAlchemyConnector does on PostgreSQL in memory terms (psycopg's client cursors read
the whole result), without its pinned connection. Results too large to hold in memory are for
``DatabaseBlock.stream()``, which pages through a server-side cursor.

Bounds, per block instance and event loop: at most :data:`MAX_OPEN_RESULTS` partly read results
(opening one more drops the least recently used: its next fetch raises a
:class:`~prefect_atlas.exceptions.DatabaseError` once, and the fetch after that runs the
statement again), and the end markers of the last :data:`MAX_ENDED_RESULTS` used-up statements
(an older statement starts again from its first row).

Cursors are kept per block instance (a copy starts with none: the instance's ``PoolUser``
token, fresh on copy, is the key; a block Prefect passes to tasks in one process is the same
instance and goes on paging) and per event loop (:class:`~prefect_atlas._loops.PerLoop`):
the sync faces page on Prefect's one run-sync loop, async code on its own loop, and neither
ever sees the other's rows.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prefect_atlas._loops import PerLoop
from prefect_atlas.exceptions import DatabaseError

if TYPE_CHECKING:
    from prefect_atlas.database._pools import PoolUser
    from prefect_atlas.database.block import DatabaseBlock

Row = tuple[Any, ...]
Key = Hashable
Loader = Callable[[], Awaitable[list[Row]]]

# Partly read results one block instance keeps per event loop (least recently used dropped).
MAX_OPEN_RESULTS = 32
# Used-up statements remembered per block instance and loop, so they keep answering None / [].
MAX_ENDED_RESULTS = 256


@dataclass(eq=False)
class _Result:
    """One statement's rows not yet returned (``None`` until its first fetch has read them)."""

    label: str
    rows: deque[Row] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass(eq=False)
class LoopCursors:
    """A block instance's paging cursors on one event loop."""

    open: OrderedDict[Key, _Result] = field(default_factory=OrderedDict)
    # a used-up statement (None) or one dropped before its end (the reason, raised once)
    ended: OrderedDict[Key, str | None] = field(default_factory=OrderedDict)

    async def page(self, key: Key, size: int, load: Loader, operation: object) -> list[Row]:
        """The next ``size`` rows of ``key``'s result; its first call runs ``load()``."""
        if key in self.ended:
            reason = self.ended[key]
            if reason is None:
                self.ended.move_to_end(key)
                return []
            del self.ended[key]  # raised once: the next fetch runs the statement again
            raise DatabaseError(reason)
        result = self.open.get(key)
        if result is None:
            result = self.open[key] = _Result(label=describe_statement(operation))
            self._drop_overflow()
        else:
            self.open.move_to_end(key)
        async with result.lock:  # two tasks paging one statement: one read, distinct rows
            if result.rows is None:
                try:
                    result.rows = deque(await load())
                except BaseException:
                    if self.open.get(key) is result:
                        del self.open[key]
                    raise
            rows = result.rows
            page = [rows.popleft() for _ in range(min(size, len(rows)))]
            if not rows and self.open.get(key) is result:
                del self.open[key]
                self._end(key, None)
        return page

    def rest(self, key: Key) -> list[Row] | None:
        """The unread rows of ``key``'s result, which ends it; None when it has none open."""
        result = self.open.get(key)
        if result is None or result.rows is None:
            return None
        del self.open[key]
        self._end(key, None)
        rows = list(result.rows)
        result.rows.clear()
        return rows

    def reset(self) -> int:
        """Forget every cursor (the next fetch of any statement runs it again); how many."""
        count = len(self.open) + len(self.ended)
        for result in self.open.values():
            if result.rows is not None:
                result.rows.clear()
        self.open.clear()
        self.ended.clear()
        return count

    def _end(self, key: Key, reason: str | None) -> None:
        self.ended[key] = reason
        self.ended.move_to_end(key)
        while len(self.ended) > MAX_ENDED_RESULTS:
            self.ended.popitem(last=False)

    def _drop_overflow(self) -> None:
        while len(self.open) > MAX_OPEN_RESULTS:
            key, dropped = self.open.popitem(last=False)
            if dropped.rows is not None:
                dropped.rows.clear()
            self._end(
                key,
                f"DatabaseBlock: the rest of the result of {dropped.label!r} was dropped unread, "
                f"because more than {MAX_OPEN_RESULTS} results were being paged at once on "
                "this block and event loop (the least recently used goes first). Only this "
                "fetch fails: the next one with the same statement and parameters runs it "
                "again from the first row. Page fewer statements at once, call "
                "reset_cursors() when done with one, or use stream() for large results.",
            )


_lock = threading.Lock()
_by_instance: weakref.WeakKeyDictionary[PoolUser, PerLoop[LoopCursors]] = (
    weakref.WeakKeyDictionary()
)


def _per_loop(db: DatabaseBlock, *, create: bool) -> PerLoop[LoopCursors] | None:
    token = db._pool_user  # one per instance, fresh on copy; dies with the instance
    per_loop = _by_instance.get(token)
    if per_loop is None and create:
        with _lock:
            per_loop = _by_instance.setdefault(token, PerLoop())
    return per_loop


def loop_cursors(db: DatabaseBlock) -> LoopCursors:
    """``db``'s cursors on the running loop, created on first use."""
    per_loop = _per_loop(db, create=True)
    assert per_loop is not None
    current = per_loop.get()  # lock-free on the hot path
    return current if current is not None else per_loop.get_or_create(lambda _: LoopCursors())


async def page(
    db: DatabaseBlock,
    operation: object,
    parameters: object,
    execution_kwargs: Mapping[str, Any],
    size: int,
    load: Loader,
) -> list[Row]:
    """The next ``size`` rows of the statement for ``db`` on this loop (``load()`` reads it)."""
    key = cursor_key(operation, parameters, execution_kwargs)
    return await loop_cursors(db).page(key, size, load, operation)


def rest(
    db: DatabaseBlock, operation: object, parameters: object, execution_kwargs: Mapping[str, Any]
) -> list[Row] | None:
    """The unread rows of the statement if ``db`` is paging it on this loop, which ends it."""
    per_loop = _per_loop(db, create=False)
    current = per_loop.get() if per_loop is not None else None
    if current is None or not current.open:  # the usual case: nothing is being paged
        return None
    return current.rest(cursor_key(operation, parameters, execution_kwargs))


def reset(db: DatabaseBlock) -> int:
    """Forget ``db``'s cursors on the running loop; how many there were."""
    per_loop = _per_loop(db, create=False)
    current = per_loop.pop() if per_loop is not None else None
    return current.reset() if current is not None else 0


def cursor_key(operation: object, parameters: object, execution_kwargs: Mapping[str, Any]) -> Key:
    """What makes two fetches "the same inputs": operation, parameters and execution keywords.

    Values are compared by type and value (``1``, ``1.0`` and ``True`` are different
    parameters), lists and tuples alike, mappings regardless of order, an unhashable value by
    its ``repr``.
    """
    if isinstance(operation, str | bytes):
        op: Hashable = operation
    else:  # psycopg.sql.SQL / Composed: their repr spells out every part
        op = (type(operation).__qualname__, repr(operation))
    return (op, _freeze(parameters), _freeze(dict(execution_kwargs)))


def _freeze(value: object) -> Hashable:
    if value is None or isinstance(value, str | bytes):
        return (type(value).__qualname__, value)
    if isinstance(value, Mapping):
        return ("map", tuple(sorted((repr(k), _freeze(v)) for k, v in value.items())))
    if isinstance(value, list | tuple):  # psycopg reads both as the same parameters
        return ("seq", tuple(_freeze(v) for v in value))
    try:
        hash(value)
    except TypeError:
        return ("repr", type(value).__qualname__, repr(value))
    return (type(value).__qualname__, value)


def describe_statement(operation: object, limit: int = 60) -> str:
    """A short, secret-free label of a statement for messages (parameters are never shown)."""
    if isinstance(operation, bytes):
        text = operation.decode(errors="replace")
    elif isinstance(operation, str):
        text = operation
    else:
        text = type(operation).__name__
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
