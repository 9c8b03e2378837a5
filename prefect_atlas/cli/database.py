"""``prefect-atlas setup|health|metrics``: the schema, the system's health, its metrics."""

from __future__ import annotations

from typing import Annotated

from cyclopts import Parameter

from prefect_atlas.cli._options import NO_DATABASE, DatabaseOptions


async def setup(*, database: DatabaseOptions = NO_DATABASE) -> int:
    """Apply the Atlas schema migrations."""
    db = await database.open()
    try:
        applied = await db.asetup()
    finally:
        await db.aclose()
    if applied:
        for migration in applied:
            print(f"applied {migration.version:04d}_{migration.name}")
    else:
        print(f"schema already up to date on {db.describe()}")
    return 0


async def health(
    *,
    database: DatabaseOptions = NO_DATABASE,
    json: Annotated[bool, Parameter(help="print the report as JSON")] = False,
    timeout: Annotated[float, Parameter(help="seconds to wait")] = 5.0,
) -> int:
    """Check database, event spool, vault and Discord; exit 1 when something is down.

    With --block NAME the Atlas Database, Vault and Discord blocks named NAME are checked;
    otherwise the database from --url/$DATABASE_URL/embedded, the default local vault and no
    Discord.
    """
    from prefect_atlas.health import acheck_system

    if database.block:
        report = await acheck_system(
            database.block, database.block, database.block, timeout=timeout
        )
    else:
        report = await acheck_system(await database.open(), None, None, timeout=timeout)
    print(report.model_dump_json(indent=2) if json else report.table())
    return 0 if report.ok else 1


async def metrics(*, database: DatabaseOptions = NO_DATABASE) -> int:
    """Check the system, then print Atlas metrics in Prometheus text format.

    Counters are per process; this command first runs a health check so that the gauges
    (component up, pool, spool size) describe the system now.
    """
    from prefect_atlas.health import acheck_system
    from prefect_atlas.metrics import render

    if database.block:
        await acheck_system(database.block, database.block, database.block)
    else:
        await acheck_system(await database.open(), None, None)
    print(render(), end="")
    return 0
