"""The Atlas event log: durable, idempotent event emission with commit-safe replay."""

from prefect_atlas.events.store import (
    ConcurrencyError,
    EventStore,
    EventStoreHealth,
    NewEvent,
    StoredEvent,
)

__all__ = ["ConcurrencyError", "EventStore", "EventStoreHealth", "NewEvent", "StoredEvent"]
