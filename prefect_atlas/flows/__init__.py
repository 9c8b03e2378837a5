"""The reference pipelines: ingest, replay (an incremental projection), the spool drain, the
system health check and the event log's maintenance (partitions ahead, retention with an archive).

They ship in the package so that ``prefect-atlas demo`` runs anywhere the package is
installed; the repository's ``flows/`` folder holds the deployment entrypoints that
``deployments.yaml`` names. Copy a module from here to start your own pipeline.
Importing this package imports the flows (and with them Prefect) but nothing heavy.
"""

from prefect_atlas.flows.drain import drain_events
from prefect_atlas.flows.health import system_health
from prefect_atlas.flows.ingest import IngestSummary, ingest, sample_records
from prefect_atlas.flows.maintenance import event_maintenance
from prefect_atlas.flows.replay import replay_projection

__all__ = [
    "IngestSummary",
    "drain_events",
    "event_maintenance",
    "ingest",
    "replay_projection",
    "sample_records",
    "system_health",
]
