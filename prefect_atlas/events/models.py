"""The event store's value types: what callers pass in and what they get back."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Literal, NamedTuple

import orjson

from prefect_atlas._health import Health
from prefect_atlas.database import HealthReport
from prefect_atlas.events.batch import EventFields

Mode = Literal["durable", "strict"]

_FIELDS = frozenset({"event_type", "entity_id", "payload", "event_id", "occurred_at"})


class NewEvent(NamedTuple):
    """An event to append with :meth:`EventStore.emit_many` (a mapping with these keys works too).

    A named tuple: immutable like a frozen dataclass, but built about four times faster,
    which a caller building 10,000 of them for one batch notices.
    """

    event_type: str
    """What happened, such as ``video.ingested``."""
    entity_id: str
    """The entity it happened to; versions count per entity."""
    payload: Mapping[str, Any] | None = None
    """JSON-serialisable details (None for none)."""
    event_id: uuid.UUID | str | None = None
    """Idempotency key: an id already in the log is not appended again (default: new UUID)."""
    occurred_at: datetime | None = None
    """When it happened (default: now)."""


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event read back from the log."""

    position: int
    """Position in the log (a sequence number, unique across the log)."""
    event_id: uuid.UUID
    """The event's id (its idempotency key)."""
    event_type: str
    """What happened."""
    entity_id: str
    """The entity it happened to."""
    version: int
    """The entity's version after this event (1 for its first)."""
    payload: Any
    """The event's details, as stored."""
    occurred_at: datetime
    """When it happened."""
    recorded_at: datetime
    """When the log stored it."""
    xid: int = field(repr=False)
    """Id of the PostgreSQL transaction that wrote it (commit-safe replay orders by it)."""

    def to_json(self) -> bytes:
        """One JSON object (the CLI prints these as JSON lines)."""
        return orjson.dumps(
            {
                "position": self.position,
                "event_id": str(self.event_id),
                "event_type": self.event_type,
                "entity_id": self.entity_id,
                "version": self.version,
                "payload": self.payload,
                "occurred_at": self.occurred_at.isoformat(),
                "recorded_at": self.recorded_at.isoformat(),
            }
        )


# A frozen dataclass's __init__ sets each field through object.__setattr__: for StoredEvent's
# nine, 1.5 µs, a third of what reading an event costs, and readers build millions. The slots'
# own descriptors set the same fields of the same frozen object in a third of that time. The
# unpacking fails at import if a field is added without being given here.
_new_event = object.__new__
(
    _set_position,
    _set_event_id,
    _set_event_type,
    _set_entity_id,
    _set_version,
    _set_payload,
    _set_occurred_at,
    _set_recorded_at,
    _set_xid,
) = (StoredEvent.__dict__[f.name].__set__ for f in fields(StoredEvent))


def stored_event_of(
    position: int,
    event_id: uuid.UUID,
    event_type: str,
    entity_id: str,
    version: int,
    payload: Any,
    occurred_at: datetime,
    recorded_at: datetime,
    xid: int,
    /,
) -> StoredEvent:
    """``StoredEvent(position, ..., xid)``, built without the dataclass ``__init__`` (for the
    readers' hot loops; the fields in declaration order)."""
    event: StoredEvent = _new_event(StoredEvent)
    _set_position(event, position)
    _set_event_id(event, event_id)
    _set_event_type(event, event_type)
    _set_entity_id(event, entity_id)
    _set_version(event, version)
    _set_payload(event, payload)
    _set_occurred_at(event, occurred_at)
    _set_recorded_at(event, recorded_at)
    _set_xid(event, xid)
    return event


@dataclass(frozen=True, slots=True)
class ConsumerLag:
    """One consumer member's checkpoint and how far behind the head of the log it is."""

    name: str
    """The consumer's name."""
    member: int
    """The member of its group."""
    group_size: int
    """The group's size."""
    event_types: tuple[str, ...] | None
    """The event types it reads (None: all)."""
    position: int
    """Position of the checkpoint (0: nothing processed yet)."""
    xid: int
    """Transaction id of the checkpoint."""
    processed: int
    """Events it processed since it was created (or last rebuilt)."""
    dead_lettered: int
    """Events it parked since it was created (or last rebuilt)."""
    dead_letters: int
    """Its dead letters waiting now (parked, not yet retried or discarded)."""
    events_behind: int
    """Committed events of its share of the log after its checkpoint."""
    seconds_behind: float
    """Age of the oldest of those events (0 when none wait)."""
    updated_at: datetime
    """When its checkpoint last moved."""


class EventStoreHealth(Health):
    """The database's health plus what only the event store knows (spool, breaker, dead letters).

    ``ok`` is the database's: events reach PostgreSQL. When it is False a durable store still
    accepts events into its local spool (``spool_size`` says how many wait there).
    """

    database: HealthReport
    """The database's own health report."""
    spool_size: int
    """Events waiting in the local spool."""
    spool_path: str
    """The local spool file."""
    breaker: str
    """The circuit breaker's state (``closed``, ``open`` or ``half-open``)."""
    dead_letters: int | None = None  # None when the database could not be asked
    """Events PostgreSQL refused, or None when the database could not be asked."""
    consumers: list[ConsumerLag] | None = None  # None when the database could not be asked
    """Each checkpointed consumer member and its lag, or None when the database could not be
    asked."""


class DrainResult(NamedTuple):
    stored: int
    parked: int
    left: int
    locked: bool = True
    contacted: bool = False  # whether a batch reached PostgreSQL


def event_fields(item: NewEvent | Mapping[str, Any], index: int) -> EventFields:
    """The fields of ``events[index]`` given to ``emit_many`` (a NewEvent or a mapping)."""
    if isinstance(item, NewEvent):
        return item  # already (event_type, entity_id, payload, event_id, occurred_at)
    if isinstance(item, Mapping):
        if not item.keys() <= _FIELDS:
            unknown = set(item) - _FIELDS
            raise ValueError(
                f"events[{index}] has unknown key(s) {sorted(unknown)}: allowed are event_type, "
                "entity_id, payload, event_id, occurred_at"
            )
        get = item.get
        return (
            get("event_type"),
            get("entity_id"),
            get("payload"),
            get("event_id"),
            get("occurred_at"),
        )
    raise TypeError(f"events[{index}] must be a NewEvent or a mapping, got {type(item).__name__}")
