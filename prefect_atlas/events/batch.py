"""A batch of events on its way to one COPY: checked up front, payloads serialized as it streams.

Why a batch is not a list of prepared events (measured on 10,000 events, see bench/events.py):

* Serializing the payloads is the largest part of a batch's work in this process. Done while
  the COPY streams, it overlaps with PostgreSQL parsing and indexing the rows already sent,
  instead of running before any of it starts.
* Every object that outlives a batch call counts towards CPython's full garbage collection,
  which walks every object of a process that imported Prefect (~90 ms here). One extra tuple
  per event made a full collection run every other batch. A batch therefore keeps the
  caller's values as they are plus one list of ids; each row tuple lives only until it is
  written.

A drained spool gives a :class:`PreparedBatch` (payloads already bytes); both kinds offer the
same operations to the store.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from prefect_atlas.events.validation import (
    MAX_ENTITY_ID_LENGTH,
    PreparedEvent,
    check_entity_id,
    check_event_id,
    check_event_type,
    check_occurred_at,
    new_event_ids,
    serialize_payload,
)

Row = tuple[uuid.UUID, str, str, bytes, datetime]
"""(event_id, event_type, entity_id, payload JSON, occurred_at): one event ready for COPY."""

EventFields = tuple[Any, Any, Any, Any, Any]
"""(event_type, entity_id, payload, event_id, occurred_at) of one event, as the caller gave it."""


class CheckedBatch:
    """Events with every field checked but the payloads; ids fixed (kept across retries and
    the spool, so each event is stored once whichever way it goes)."""

    __slots__ = ("_items", "_keep", "_max_bytes", "_now", "ids")

    def __init__(self, items: Sequence[EventFields], *, max_payload_bytes: int) -> None:
        """Check ``items``; errors name the event: ``events[3]: event_type 'BAD' is invalid ...``.

        An event type already accepted in this batch is not matched again, fresh ids come
        from :func:`new_event_ids`, and events without a time get the batch's time.
        """
        self._items = items
        self._max_bytes = max_payload_bytes
        self._now = datetime.now(UTC)
        fresh = iter(new_event_ids(sum(1 for item in items if item[3] is None)))
        known_types: set[str] = set()
        ids: list[uuid.UUID] = []
        append = ids.append
        supplied = False
        for index, (event_type, entity_id, payload, event_id, occurred_at) in enumerate(items):
            try:
                if not (type(event_type) is str and event_type in known_types):
                    known_types.add(check_event_type(event_type))
                if not (
                    type(entity_id) is str
                    and 0 < len(entity_id) <= MAX_ENTITY_ID_LENGTH
                    and "\x00" not in entity_id
                    and entity_id.isascii()
                ):
                    check_entity_id(entity_id)
                if payload is not None and not isinstance(payload, Mapping):
                    raise TypeError(
                        f"payload must be a mapping (a JSON object), got {type(payload).__name__}"
                    )
                if occurred_at is not None:
                    check_occurred_at(occurred_at)
                if event_id is None:
                    append(next(fresh))
                else:
                    supplied = True
                    append(check_event_id(event_id))
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"events[{index}]: {exc}") from None
        self.ids = ids
        self._keep: Sequence[int] = range(len(items))
        if supplied and len(set(ids)) != len(ids):
            # The same id twice in one batch (fresh ids never repeat): keep its first occurrence.
            seen: set[uuid.UUID] = set()
            keep = []
            for index, event_id in enumerate(ids):
                if event_id not in seen:
                    seen.add(event_id)
                    keep.append(index)
            self._keep = keep

    def __len__(self) -> int:
        return len(self._keep)

    def event_ids(self) -> list[uuid.UUID]:
        """The ids to store (duplicates within the batch removed)."""
        ids = self.ids
        return [ids[i] for i in self._keep]

    def entity_ids(self) -> list[str]:
        """Each entity once, in first-seen order."""
        items = self._items
        return list(dict.fromkeys(items[i][1] for i in self._keep))

    def entity_counts(self, skip: set[uuid.UUID]) -> dict[str, int]:
        """Each entity's number of events to store (ids in ``skip`` left out), first-seen order."""
        items, ids = self._items, self.ids
        counts: dict[str, int] = {}
        for index in self._keep:
            if not (skip and ids[index] in skip):
                entity_id = items[index][1]
                counts[entity_id] = counts.get(entity_id, 0) + 1
        return counts

    def rows(self, skip: set[uuid.UUID]) -> Iterator[Row]:
        """The rows, payloads serialized one by one; events whose id is in ``skip`` left out.

        A payload orjson cannot serialize (or too large, or with a NUL) raises here, naming
        the event, in the middle of the COPY: the transaction rolls back, nothing is stored.
        """
        items, ids, now, limit = self._items, self.ids, self._now, self._max_bytes
        for index in self._keep:
            event_id = ids[index]
            if skip and event_id in skip:
                continue
            event_type, entity_id, payload, _, occurred_at = items[index]
            try:
                data = serialize_payload(payload, max_bytes=limit)
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"events[{index}]: {exc}") from None
            yield event_id, event_type, entity_id, data, now if occurred_at is None else occurred_at

    def prepared(self) -> list[PreparedEvent]:
        """Every event serialized (for the spool, which stores payloads as bytes)."""
        return [PreparedEvent(*row) for row in self.rows(set())]


class PreparedBatch:
    """Events already serialized (drained from the spool)."""

    __slots__ = ("events",)

    def __init__(self, events: Sequence[PreparedEvent]) -> None:
        self.events = events

    def __len__(self) -> int:
        return len(self.events)

    def event_ids(self) -> list[uuid.UUID]:
        return [e.event_id for e in self.events]

    def entity_ids(self) -> list[str]:
        return list(dict.fromkeys(e.entity_id for e in self.events))

    def entity_counts(self, skip: set[uuid.UUID]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for e in self.events:
            if not (skip and e.event_id in skip):
                counts[e.entity_id] = counts.get(e.entity_id, 0) + 1
        return counts

    def rows(self, skip: set[uuid.UUID]) -> Iterator[Row]:
        for e in self.events:
            if not (skip and e.event_id in skip):
                yield e.event_id, e.event_type, e.entity_id, e.payload, e.occurred_at

    def prepared(self) -> list[PreparedEvent]:
        return list(self.events)


Batch = CheckedBatch | PreparedBatch
