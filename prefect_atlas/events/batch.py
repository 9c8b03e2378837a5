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
same four operations to the store.
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
from prefect_atlas.events.validation import _uuid_from_int as _uuid_from_int

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
                    raise TypeError(f"payload must be a mapping (a JSON object), got {type(payload).__name__}")
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


class StreamedBatch:
    """Events from an iterator, serialized as they arrive and kept as plain columns.

    Why another kind: a caller that hands ``emit_many`` a generator keeps no objects of its
    own alive, and neither should the batch. Each event becomes an id (an ``int``), two
    strings, the payload's JSON bytes and a datetime — none of which CPython's cyclic
    garbage collector tracks — so the caller's event objects and payload dicts die at once
    and a batch of 10,000 does not provoke a full collection (~90 ms in a process that
    imported Prefect). The lock round trip still needs every entity before the COPY, which is
    why the iterator is consumed first.
    """

    __slots__ = ("_given", "_ids", "entities", "payloads", "times", "types")

    def __init__(self, items: Iterator[Any], fields: Any, *, max_payload_bytes: int) -> None:
        now = datetime.now(UTC)
        ids: list[int] = []
        types: list[str] = []
        entities: list[str] = []
        payloads: list[bytes] = []
        times: list[datetime] = []
        known_types: set[str] = set()
        fresh: Iterator[uuid.UUID] = iter(())
        seen: set[int] | None = None
        given: list[int] | None = None  # every id in input order, once an id repeats
        for index, item in enumerate(items):
            event_type, entity_id, payload, event_id, occurred_at = fields(item, index)
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
                data = serialize_payload(payload, max_bytes=max_payload_bytes)
                when = now if occurred_at is None else check_occurred_at(occurred_at)
                if event_id is None:
                    fresh_id = next(fresh, None)
                    if fresh_id is None:
                        fresh = iter(new_event_ids(1024))
                        fresh_id = next(fresh)
                    key = fresh_id.int
                else:
                    key = check_event_id(event_id).int
                    if seen is None:
                        seen = set(ids)
                    if key in seen:
                        # the same id twice in one batch: stored once, returned at both places
                        if given is None:
                            given = list(ids)
                        given.append(key)
                        continue
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"events[{index}]: {exc}") from None
            if seen is not None:
                seen.add(key)
            if given is not None:
                given.append(key)
            ids.append(key)
            types.append(event_type)
            entities.append(entity_id)
            payloads.append(data)
            times.append(when)
        self._ids, self.types, self.entities, self.payloads, self.times = ids, types, entities, payloads, times
        self._given = given

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> list[uuid.UUID]:
        """Every event's id in input order (a repeated id at each of its places)."""
        return [_uuid_from_int(i) for i in (self._ids if self._given is None else self._given)]

    def event_ids(self) -> list[uuid.UUID]:
        """The ids to store (each once)."""
        return [_uuid_from_int(i) for i in self._ids]

    def entity_ids(self) -> list[str]:
        return list(dict.fromkeys(self.entities))

    def rows(self, skip: set[uuid.UUID]) -> Iterator[Row]:
        for key, event_type, entity_id, payload, when in zip(
            self._ids, self.types, self.entities, self.payloads, self.times, strict=True
        ):
            event_id = _uuid_from_int(key)
            if not (skip and event_id in skip):
                yield event_id, event_type, entity_id, payload, when

    def prepared(self) -> list[PreparedEvent]:
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

    def rows(self, skip: set[uuid.UUID]) -> Iterator[Row]:
        for e in self.events:
            if not (skip and e.event_id in skip):
                yield e.event_id, e.event_type, e.entity_id, e.payload, e.occurred_at

    def prepared(self) -> list[PreparedEvent]:
        return list(self.events)


Batch = CheckedBatch | StreamedBatch | PreparedBatch
