"""The Atlas event log: durable, idempotent event emission with commit-safe replay."""

from prefect_atlas.events.store import (
    ConcurrencyError,
    ConsumerDeadLetter,
    ConsumeResult,
    ConsumerLag,
    EventStore,
    EventStoreHealth,
    NewEvent,
    StoredEvent,
)

__all__ = [
    "ConcurrencyError",
    "ConsumeResult",
    "ConsumerDeadLetter",
    "ConsumerLag",
    "EventStore",
    "EventStoreHealth",
    "NewEvent",
    "StoredEvent",
]
