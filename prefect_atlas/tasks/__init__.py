"""Prefect tasks to import into any pipeline: ``from prefect_atlas.tasks import emit_event``.

Each area keeps its tasks in its own module here; this package re-exports them.
"""

from prefect_atlas.tasks.database import upsert_rows
from prefect_atlas.tasks.events import consume_events, emit_event, emit_events
from prefect_atlas.tasks.health import system_health_check
from prefect_atlas.tasks.vault import store_batch, store_json

__all__: list[str] = [
    "consume_events",
    "emit_event",
    "emit_events",
    "store_batch",
    "store_json",
    "system_health_check",
    "upsert_rows",
]
