"""Process metrics of prefect-atlas, in Prometheus text format.

One registry of our own (not prometheus_client's global one), so that exposing Atlas metrics
never mixes in, or collides with, an application's. Modules increment the counters below;
``render()`` returns the exposition text (``prefect-atlas metrics`` prints it).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)

# Events (prefect_atlas.events)
EVENTS_EMITTED = Counter(
    "atlas_events_emitted", "Events stored in PostgreSQL.", ["path"], registry=REGISTRY
)
EVENTS_SPOOLED = Counter(
    "atlas_events_spooled",
    "Events written to the local spool because PostgreSQL was unavailable.",
    registry=REGISTRY,
)
EVENTS_DRAINED = Counter(
    "atlas_events_drained", "Spooled events later stored in PostgreSQL.", registry=REGISTRY
)
SPOOL_SIZE = Gauge(
    "atlas_events_spool_size", "Events waiting in the local spool.", registry=REGISTRY
)
DEAD_LETTERS = Gauge(
    "atlas_events_dead_letters",
    "Spooled events PostgreSQL refused, parked in atlas.dead_events.",
    registry=REGISTRY,
)
EVENTS_DEAD_LETTERED = Counter(
    "atlas_events_dead_lettered",
    "Spooled events this process parked as dead letters.",
    registry=REGISTRY,
)
SPOOL_LEFT_AT_EXIT = Gauge(
    "atlas_events_spool_left_at_exit",
    "Events still spooled after the final drain at exit.",
    registry=REGISTRY,
)

# Vault (prefect_atlas.vault)
VAULT_OPERATIONS = Counter(
    "atlas_vault_operations",
    "Vault operations.",
    ["provider", "operation", "outcome"],
    registry=REGISTRY,
)
VAULT_BYTES = Counter(
    "atlas_vault_bytes",
    "Bytes moved to or from the vault.",
    ["provider", "direction"],
    registry=REGISTRY,
)

# Alerts (prefect_atlas.discord, prefect_atlas.hooks)
ALERTS_DELIVERED = Counter(
    "atlas_alerts_delivered", "Alerts Discord accepted.", ["channel"], registry=REGISTRY
)
ALERTS_FAILED = Counter(
    "atlas_alerts_failed", "Alerts that could not be delivered.", ["reason"], registry=REGISTRY
)
ALERTS_SUPPRESSED = Counter(
    "atlas_alerts_suppressed",
    "Repeated failure alerts suppressed by deduplication.",
    registry=REGISTRY,
)

# Database pools (set by DatabaseBlock.ahealth)
POOL_SIZE = Gauge(
    "atlas_db_pool_size", "Open connections in the pool.", ["target"], registry=REGISTRY
)
POOL_AVAILABLE = Gauge(
    "atlas_db_pool_available", "Idle connections in the pool.", ["target"], registry=REGISTRY
)
POOL_WAITING = Gauge(
    "atlas_db_pool_waiting", "Callers waiting for a connection.", ["target"], registry=REGISTRY
)


# System health (set by prefect_atlas.health.acheck_system)
COMPONENT_UP = Gauge(
    "atlas_component_up",
    "1 when the component passed its last health check, else 0.",
    ["component"],
    registry=REGISTRY,
)

# Checkpointed consumers (prefect_atlas.events.consumers); the lag gauges are set whenever the
# lag is read (EventStore.aconsumer_lag, the event store's health check).
CONSUMER_EVENTS = Counter(
    "atlas_consumer_events",
    "Events consumers of this process processed (committed with their checkpoint).",
    ["consumer"],
    registry=REGISTRY,
)
CONSUMER_DEAD_LETTERED = Counter(
    "atlas_consumer_dead_lettered",
    "Events consumers of this process parked as dead letters after their handler kept failing.",
    ["consumer"],
    registry=REGISTRY,
)
CONSUMER_LAG_EVENTS = Gauge(
    "atlas_consumer_lag_events",
    "Committed events of a consumer member's share of the log after its checkpoint.",
    ["consumer", "member"],
    registry=REGISTRY,
)
CONSUMER_LAG_SECONDS = Gauge(
    "atlas_consumer_lag_seconds",
    "Age of the oldest event a consumer member has not processed yet (0 when caught up).",
    ["consumer", "member"],
    registry=REGISTRY,
)


def render() -> str:
    """The current metrics in Prometheus text exposition format."""
    return generate_latest(REGISTRY).decode()
