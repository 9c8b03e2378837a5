"""Prefect tasks to import into any pipeline: ``from prefect_atlas.tasks import emit_event``.

Each area keeps its tasks in its own module here; this package re-exports them.
"""

__all__: list[str] = []
