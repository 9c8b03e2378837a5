"""The scheduled system health check (deployments.yaml runs it every 5 minutes).

The flow fails when a component is down, so the failure hook sends one alert — deduplicated
by the hooks for an hour — and one "resolved" message when the next run passes.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_markdown_artifact

from prefect_atlas.exceptions import ComponentDown as ComponentDown
from prefect_atlas.health import SystemHealth
from prefect_atlas.hooks import alert_on_completion, alert_on_failure
from prefect_atlas.tasks.health import system_health_check


@flow(name="system-health", on_failure=[alert_on_failure], on_completion=[alert_on_completion])
async def system_health(
    database: str = "default",
    vault: str = "default",
    discord: str = "default",
    timeout: float = 5.0,
) -> SystemHealth:
    """Check every Atlas component; fail (and alert) when one is down."""
    report = await system_health_check(database, vault, discord, timeout)
    get_run_logger().info("system health\n%s", report.table())
    await acreate_markdown_artifact(
        key="atlas-system-health",
        markdown=f"```\n{report.table()}\n```\n",
        description="Atlas system health",
    )
    if not report.ok:
        raise ComponentDown("; ".join(f"{c.component} down: {c.detail}" for c in report.down()))
    return report
