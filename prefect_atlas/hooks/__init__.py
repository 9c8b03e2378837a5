"""Prefect state hooks that alert Atlas operators on Discord.

``from prefect_atlas.hooks import alert_on_failure, alert_on_crashed, alert_on_completion``:
each acts on the states its name says; ``alert_on_state`` acts on every state.
"""

from prefect_atlas.hooks.alerts import (
    BLOCK_ENV,
    DEFAULT_REPEAT_INTERVAL,
    alert_on_cancellation,
    alert_on_completion,
    alert_on_crashed,
    alert_on_failure,
    alert_on_state,
    alert_on_task_failure,
    discord_hook,
    discord_task_hook,
)
from prefect_atlas.hooks.context import RootCause, RunFacts, dig_root_cause
from prefect_atlas.hooks.memory import MEMORY_DATABASE_ENV, AlertMemory, DatabaseAlertMemory

__all__ = [
    "BLOCK_ENV",
    "DEFAULT_REPEAT_INTERVAL",
    "MEMORY_DATABASE_ENV",
    "AlertMemory",
    "DatabaseAlertMemory",
    "RootCause",
    "RunFacts",
    "alert_on_cancellation",
    "alert_on_completion",
    "alert_on_crashed",
    "alert_on_failure",
    "alert_on_state",
    "alert_on_task_failure",
    "dig_root_cause",
    "discord_hook",
    "discord_task_hook",
]
