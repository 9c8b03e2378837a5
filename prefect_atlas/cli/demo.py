"""``prefect-atlas demo``: the demo flow on embedded defaults (see :mod:`prefect_atlas.demo`)."""

from __future__ import annotations

from typing import Any


async def demo() -> int:
    """Run the demo flow on embedded defaults (no server, no credentials).

    Needs the embedded PostgreSQL: install with ``pip install 'prefect-atlas[embedded]'``
    (without it the command stops at once with one line naming that command).
    """
    from prefect_atlas.demo import precheck, run_demo

    precheck()
    from prefect.settings import (
        PREFECT_SERVER_ANALYTICS_ENABLED,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        get_current_settings,
        temporary_settings,
    )

    # A cold ephemeral server needs ~15 s on a small machine (Prefect's default allows 20),
    # and with no internet its telemetry would only log errors. Values the user set (in the
    # environment or a Prefect profile) win.
    server = get_current_settings().server
    updates: dict[Any, Any] = {}
    if "startup_timeout_seconds" not in server.ephemeral.model_fields_set:
        updates[PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS] = 120
    if "analytics_enabled" not in server.model_fields_set:
        updates[PREFECT_SERVER_ANALYTICS_ENABLED] = False
    with temporary_settings(updates=updates):
        return await run_demo()
