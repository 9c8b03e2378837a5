"""The event log's maintenance: partitions created ahead, old partitions archived and dropped.

Why a flow: ``setup()`` creates a week of daily partitions ahead, but a deployment that runs
for months needs them created continually, and retention (``ATLAS_EVENT_RETENTION_DAYS``, or
30 days in compliance mode) has to be enforced by something that runs on a schedule. Each
whole partition older than the retention is exported to the vault as Parquet, read back and
verified, recorded in ``atlas.event_archives``, and only then dropped; ``EventStore.replay(
include_archive=True)`` still reads it. Any failure stops the run there, leaves that
partition (and the later ones) in place, fails the run and alerts through the Discord hooks.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_markdown_artifact

from prefect_atlas import DatabaseBlock
from prefect_atlas._blocks import resolve_block
from prefect_atlas.events.archive import aenforce_retention
from prefect_atlas.hooks import alert_on_completion, alert_on_failure
from prefect_atlas.vault import VaultBlock


@flow(
    name="event-maintenance",
    log_prints=True,
    on_failure=[alert_on_failure],
    on_completion=[alert_on_completion],
)
async def event_maintenance(
    database: str = "default",
    vault: str = "default",
    retention_days: int | None = None,
    ahead_days: int = 7,
    verify_content: bool = True,
) -> dict[str, Any]:
    """Create partitions ``ahead_days`` ahead, then archive, verify and drop every whole
    partition older than ``retention_days`` (default: the settings' ``retention_days``;
    none: only create partitions). Fails, and alerts, when a partition cannot be archived.
    """
    from prefect_atlas.settings import AtlasSettings

    logger = get_run_logger()
    days = AtlasSettings().retention_days if retention_days is None else retention_days
    db = await resolve_block(DatabaseBlock, database)
    archive_vault = await resolve_block(VaultBlock, vault) if days is not None else None
    async with db:
        result = await aenforce_retention(
            db,
            archive_vault,
            retention_days=days,
            ahead=timedelta(days=ahead_days),
            verify_content=verify_content,
        )
    for done in result.archived:
        logger.info(
            "partition %s: %d event(s) archived to %s (sha256 %s): %s",
            done.partition,
            done.rows,
            done.parquet_key,
            done.sha256,
            ", ".join(done.steps),
        )
    logger.info(
        "%d partition(s) created ahead, %d archived, %d kept (retention %s)",
        len(result.created),
        len(result.archived),
        len(result.kept),
        "none" if days is None else f"{days} days",
    )
    rows = "\n".join(
        f"| {a.partition} | {a.rows} | `{a.parquet_key}` | {', '.join(a.steps)} |"
        for a in result.archived
    )
    await acreate_markdown_artifact(
        key="atlas-event-maintenance",
        markdown=(
            f"# Event log maintenance\n\nRetention: {days if days is not None else 'none'} days; "
            f"{len(result.created)} partition(s) created ahead, {len(result.kept)} kept.\n\n"
            "| partition | events | archive | steps |\n|---|---|---|---|\n" + rows + "\n"
        ),
        description="Partitions archived to the vault and dropped by the event maintenance.",
    )
    return {
        "retention_days": days,
        "created": list(result.created),
        "archived": [
            {
                "partition": a.partition,
                "rows": a.rows,
                "parquet": a.parquet_key,
                "manifest": a.manifest_key,
                "sha256": a.sha256,
                "steps": list(a.steps),
            }
            for a in result.archived
        ],
        "kept": list(result.kept),
    }
