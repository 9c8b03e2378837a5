"""``prefect-atlas demo``: the first run of a new user, on embedded defaults.

No server to install and no credentials: Prefect runs its ephemeral API, the database is
the embedded PostgreSQL under ``$ATLAS_HOME``. A second run reuses both.
"""

from __future__ import annotations

import time

from prefect import flow, get_run_logger

from prefect_atlas._blocks import resolve_block
from prefect_atlas.database import DatabaseBlock, HealthReport

DEMO_BLOCK = "atlas-demo"


@flow(name="atlas-demo", log_prints=True)
async def demo_flow(block_name: str = DEMO_BLOCK) -> HealthReport:
    """Load the Atlas Database block, apply the schema and report the database's health."""
    logger = get_run_logger()
    db = await resolve_block(DatabaseBlock, block_name)
    async with db:
        started = time.perf_counter()
        applied = await db.asetup()
        if applied:
            logger.info("applied %d migration(s) in %.2f s", len(applied), time.perf_counter() - started)
        else:
            logger.info("schema already up to date (reused database)")
        return await db.ahealth()


async def run_demo() -> int:
    """Save the demo block (embedded PostgreSQL), run the flow, print the report."""
    print("prefect-atlas demo: starting (the first run initialises Prefect and PostgreSQL; ~20 s)")
    await DatabaseBlock().asave(DEMO_BLOCK, overwrite=True)
    report = await demo_flow(DEMO_BLOCK)
    print()
    print("Database health report")
    print("----------------------")
    for key, value in report.model_dump(exclude={"pool"}).items():
        print(f"  {key:<15} {value}")
    if report.pool is not None:
        print(f"  {'pool':<15} {report.pool.model_dump()}")
    print()
    print(report.summary())
    return 0 if report.ok else 1
