"""``events``: Atlas 0.2.1's event bus (``atlas.events``) over :class:`EventStore`.

``await events.emit(event_type, entity_id, payload)`` is still non-blocking in 0.2.1's
sense: a database outage never reaches the caller. What changed is that the event is no
longer lost: 0.2.1 logged the error and dropped the event; here an event PostgreSQL cannot
take within the store's ``emit_timeout`` goes to the local spool under ``ATLAS_HOME`` and
its background drainer stores it, id intact, when the server answers again.

What still raises, because no retry can fix it and silence would lose the event: an invalid
event (a bad ``event_type``, a payload that is not JSON) and a server that refuses the
write for another reason than being unreachable (permissions, for example).

The first emit of a process applies the Atlas schema migrations (``atlas.events`` and the
rest; safe to repeat, an advisory lock serializes concurrent runs), which 0.2.1 left to
``make setup``; that check is bounded by ``emit_timeout`` too and skipped while the server
is unreachable (the event is spooled, the check tried again on the next emit).
"""

from __future__ import annotations

import logging
import threading
import uuid
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from prefect_atlas.compat import _config

if TYPE_CHECKING:
    from prefect_atlas.events import EventStore

# The event store, its spool and the retry machinery load on the first emit, not at import.

logger = logging.getLogger("prefect_atlas.compat")


class EventBus:
    """The ``events`` object: ``emit`` appends to the Atlas event log, durably."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._store: EventStore | None = None
        # stores whose database has the Atlas schema (weak: a store gone with its block is
        # forgotten; an id() could be reused by a block of another database)
        self._schema_ready: weakref.WeakSet[EventStore] = weakref.WeakSet()

    async def store(self) -> EventStore:
        """The :class:`EventStore` behind ``events``, on the ``db`` object's block."""
        from prefect_atlas.database import DatabaseBlock
        from prefect_atlas.events import EventStore

        database = await _config.ablock(DatabaseBlock)
        with self._lock:
            if self._store is None or self._store.db is not database:
                self._store = EventStore(database)
            return self._store

    async def _ensure_schema(self, store: EventStore) -> None:
        from prefect_atlas.resilience import BreakerState, is_connection_failure, within

        if store in self._schema_ready or store.breaker.state is not BreakerState.CLOSED:
            return
        try:
            await within(store.db.asetup(), store.emit_timeout)
        except Exception as exc:
            if not is_connection_failure(exc):
                raise
            # Unreachable: the emit below spools the event; setup is tried again next time.
            logger.debug("schema check skipped, PostgreSQL unreachable: %s", type(exc).__name__)
            return
        self._schema_ready.add(store)

    async def emit(
        self, event_type: str, entity_id: str, payload: Mapping[str, Any] | None = None
    ) -> uuid.UUID:
        """Append one event (stored, or spooled while PostgreSQL is out); returns its id."""
        store = await self.store()
        await self._ensure_schema(store)
        return await store.aemit(event_type, entity_id, payload if payload is not None else {})

    def __repr__(self) -> str:
        return f"<atlas events: {self._store!r}>" if self._store else "<atlas events: not used yet>"


events = EventBus()
