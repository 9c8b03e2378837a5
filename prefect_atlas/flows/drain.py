"""Drain the event spool: store what waits locally and what lost workers left in the vault.

Why a flow: on Docker and Kubernetes work pools a worker's events that PostgreSQL could not
take at exit are shipped to the spool vault as segments. A running worker claims them on
its next contact with the database, but when no flow runs for a while (or the failure was
the last run of the day) this scheduled flow is what brings them home.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from prefect_atlas import DatabaseBlock, EventStore
from prefect_atlas._blocks import resolve_block
from prefect_atlas.vault import VaultBlock


@flow(name="drain-events", log_prints=True)
async def drain_events(database: str = "default", vault: str | None = "default") -> dict[str, int]:
    """Store every spooled event (local spool and vault segments); fails if dead letters wait."""
    logger = get_run_logger()
    db = await resolve_block(DatabaseBlock, database)
    spool_vault = await resolve_block(VaultBlock, vault) if vault else None
    async with db:
        store = EventStore(db, mode="strict", spool_vault=spool_vault, background_drain=False)
        stored = await store.adrain()
        dead = await store.adead_letter_count()
    logger.info("stored %d spooled event(s); %d dead letter(s) waiting", stored, dead)
    if dead:
        raise RuntimeError(
            f"{dead} dead letter(s) in atlas.dead_events: inspect them with "
            "`prefect-atlas events dead-letters list`, then retry or discard them"
        )
    return {"stored": stored, "dead_letters": dead}
