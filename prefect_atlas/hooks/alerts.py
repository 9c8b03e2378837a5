"""Flow and task state hooks that post Atlas alerts to Discord, once.

``@flow(on_failure=[alert_on_failure], on_crashed=[alert_on_crashed],
on_completion=[alert_on_completion])`` is all a pipeline needs: the hooks load the
``DiscordBlock`` named by ``$ATLAS_DISCORD_BLOCK`` (default ``"default"``), dig out the root
exception, deduplicate through :class:`~prefect_atlas.hooks.memory.AlertMemory`, and post.

Each ready hook acts on the states its name says (``alert_on_failure`` on Failed and Crashed,
``alert_on_crashed`` on Crashed, ``alert_on_cancellation`` on Cancelled and Cancelling,
``alert_on_completion`` on Completed) and logs a warning for any other; ``alert_on_state`` acts
on every state. :func:`discord_hook` builds either kind (``states=``).

A hook never raises into Prefect: whatever goes wrong is logged on the run's logger
(``flow_run_logger``; ``get_run_logger`` does not work inside hooks). Nor does it lose the alert
to its own bookkeeping: each piece of context (root cause, Prefect API look-ups, alert memory,
the block) is gathered on its own, and what could not be gathered is left out or said so; an
alert no channel took is logged in full at ERROR. Crashes that kill the
process never reach a client-side hook; ``prefect-atlas alerts install-automation`` covers
those from the server side.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeAlias, cast

from prefect.client.schemas.objects import StateType

from prefect_atlas.discord.block import DiscordBlock, LoggerLike
from prefect_atlas.discord.enums import AlertLevel, Channel
from prefect_atlas.hooks.alerter import (
    BLOCK_ENV as BLOCK_ENV,
)
from prefect_atlas.hooks.alerter import (
    CONTEXT_TIMEOUT_SECONDS,
    _Alerter,
)
from prefect_atlas.hooks.context import (
    RootCause,
    RunFacts,
    _from_message,
    dig_root_cause,
    duration_of,
    redact_parameters,
    run_link,
)
from prefect_atlas.hooks.memory import AlertMemory, DatabaseAlertMemory

DEFAULT_REPEAT_INTERVAL = dt.timedelta(hours=1)
"""How long the same failure stays silent after its alert before it is sent again."""

_fallback_logger = logging.getLogger("prefect_atlas.hooks")

if TYPE_CHECKING:
    from prefect.client.schemas.objects import State, TaskRun
    from prefect.flows import FlowStateHook
    from prefect.tasks import Task

    FlowHook: TypeAlias = FlowStateHook[..., Any]
    TaskHook: TypeAlias = Callable[[Task[..., Any], TaskRun, State[Any]], Awaitable[None]]


FAILURE_STATES = frozenset({StateType.FAILED, StateType.CRASHED})
CRASHED_STATES = frozenset({StateType.CRASHED})
CANCELLATION_STATES = frozenset({StateType.CANCELLED, StateType.CANCELLING})
COMPLETION_STATES = frozenset({StateType.COMPLETED})


def _fallback_cause(state: Any, exc: BaseException) -> RootCause:
    """What the state itself says, when digging deeper failed (Prefect API down, say)."""
    message = str(getattr(state, "message", "") or "")
    note = f"root cause unavailable: {type(exc).__name__}"
    parsed = _from_message(message, f"state message; {note}")
    if parsed is not None:
        return parsed
    return RootCause(
        type=str(getattr(state, "name", None) or "Failed"),
        message=message,
        source=f"state message; {note}",
    )


async def _root_cause(state: Any, flow_run_id: Any, log: LoggerLike) -> RootCause:
    try:
        async with asyncio.timeout(CONTEXT_TIMEOUT_SECONDS):
            return await dig_root_cause(state, flow_run_id)
    except Exception as exc:
        log.warning(
            "Atlas alert: root cause could not be dug out (%s); alerting with the state's message",
            type(exc).__name__,
        )
        return _fallback_cause(state, exc)


def _guarded(what: str, compute: Callable[[], Any], default: Any, log: LoggerLike) -> Any:
    """``compute()``, or ``default`` with a warning: one missing detail never stops an alert."""
    try:
        return compute()
    except Exception as exc:
        log.warning("Atlas alert: %s unavailable (%s); sent without it", what, type(exc).__name__)
        return default


async def _flow_facts(flow: Any, flow_run: Any, state: Any, log: LoggerLike) -> RunFacts:
    root = None
    if state.is_failed() or state.is_crashed():
        root = await _root_cause(state, getattr(flow_run, "id", None), log)
    return RunFacts(
        kind="flow",
        name=_guarded("flow name", lambda: str(flow.name), "unknown", log),
        run_name=_guarded("run name", lambda: str(flow_run.name), "unknown", log),
        run_id=getattr(flow_run, "id", None),
        state_name=str(getattr(state, "name", None) or state.type),
        deployment_id=getattr(flow_run, "deployment_id", None),
        duration=_guarded("duration", lambda: duration_of(flow_run.start_time, state), None, log),
        parameters=_guarded(
            "parameters", lambda: redact_parameters(dict(flow_run.parameters or {})), {}, log
        ),
        link=_guarded("run link", lambda: run_link("flow", flow_run.id), None, log),
        root=root,
    )


async def _task_facts(task: Any, task_run: Any, state: Any, log: LoggerLike) -> RunFacts:
    root = (
        await _root_cause(state, None, log) if (state.is_failed() or state.is_crashed()) else None
    )
    return RunFacts(
        kind="task",
        name=_guarded("task name", lambda: str(task.name), "unknown", log),
        run_name=_guarded("run name", lambda: str(task_run.name), "unknown", log),
        run_id=getattr(task_run, "id", None),
        state_name=str(getattr(state, "name", None) or state.type),
        duration=_guarded("duration", lambda: duration_of(task_run.start_time, state), None, log),
        link=_guarded("run link", lambda: run_link("task", task_run.id), None, log),
        root=root,
    )


def _flow_logger(flow_run: Any, flow: Any) -> LoggerLike:
    try:
        from prefect.logging.loggers import flow_run_logger

        return flow_run_logger(flow_run, flow)
    except Exception:
        return _fallback_logger


def _task_logger(task_run: Any, task: Any) -> LoggerLike:
    try:
        from prefect.logging.loggers import task_run_logger

        return task_run_logger(task_run, task)
    except Exception:
        return _fallback_logger


def _state_hook(
    alerter: _Alerter,
    logger_of: Callable[[Any, Any], LoggerLike],
    facts_of: Callable[[Any, Any, Any, LoggerLike], Awaitable[RunFacts]],
) -> Callable[[Any, Any, State[Any]], Awaitable[None]]:
    """A ``(flow or task, run, state)`` hook named ``alerter.name``: it takes the run's logger,
    and ``alerter`` gathers the run's facts only when the state calls for an alert."""

    async def hook(owner: Any, run: Any, state: State[Any]) -> None:
        log = logger_of(run, owner)
        await alerter.handle(lambda: facts_of(owner, run, state, log), state, log)

    hook.__name__ = hook.__qualname__ = alerter.name
    return hook


def discord_hook(
    block: str | DiscordBlock | None = None,
    channel: Channel = Channel.ALERTS,
    level: AlertLevel = AlertLevel.CRITICAL,
    *,
    repeat_interval: dt.timedelta | float = DEFAULT_REPEAT_INTERVAL,
    notify_completion: bool = False,
    include_parameters: bool = True,
    memory: AlertMemory | DatabaseAlertMemory | None = None,
    name: str = "discord_hook",
    states: Iterable[StateType] | None = None,
) -> FlowHook:
    """A flow state hook posting to ``channel`` of ``block`` (a name, a block, or None for
    ``$ATLAS_DISCORD_BLOCK``).

    On Failed/Crashed it posts a ``level`` alert (deduplicated per flow, deployment and
    exception type for ``repeat_interval``); on Cancelled a WARNING; on Completed one
    "resolved" message if the flow had an open failure (and a SUCCESS message every time with
    ``notify_completion=True``). With ``states`` (e.g. ``{StateType.FAILED}``) it acts on those
    states only and logs a warning for any other; without, it acts on every state, so it fits
    any hook list.
    """
    alerter = _Alerter(
        block=block,
        channel=channel,
        level=level,
        repeat_interval=repeat_interval,
        notify_completion=notify_completion,
        include_parameters=include_parameters,
        memory=memory,
        states=states,
        name=name,
    )

    # the flow hook protocol names its parameters; the hook takes them positionally, as Prefect
    # calls it
    return cast("FlowHook", _state_hook(alerter, _flow_logger, _flow_facts))


def discord_task_hook(
    block: str | DiscordBlock | None = None,
    channel: Channel = Channel.ALERTS,
    level: AlertLevel = AlertLevel.CRITICAL,
    *,
    repeat_interval: dt.timedelta | float = DEFAULT_REPEAT_INTERVAL,
    notify_completion: bool = False,
    memory: AlertMemory | DatabaseAlertMemory | None = None,
    name: str = "discord_task_hook",
    states: Iterable[StateType] | None = None,
) -> TaskHook:
    """The task-level twin of :func:`discord_hook`: ``@task(on_failure=[discord_task_hook()])``."""
    alerter = _Alerter(
        block=block,
        channel=channel,
        level=level,
        repeat_interval=repeat_interval,
        notify_completion=notify_completion,
        include_parameters=False,
        memory=memory,
        states=states,
        name=name,
    )

    return _state_hook(alerter, _task_logger, _task_facts)


alert_on_state = discord_hook(name="alert_on_state")
"""Acts on every state: fits any flow hook list."""
alert_on_failure = discord_hook(name="alert_on_failure", states=FAILURE_STATES)
"""``on_failure``: a Failed (or Crashed) flow run posts a CRITICAL alert."""
alert_on_crashed = discord_hook(name="alert_on_crashed", states=CRASHED_STATES)
"""``on_crashed``: a Crashed flow run posts a CRITICAL alert."""
alert_on_cancellation = discord_hook(
    level=AlertLevel.WARNING, name="alert_on_cancellation", states=CANCELLATION_STATES
)
"""``on_cancellation``: a Cancelled flow run posts a WARNING."""
alert_on_completion = discord_hook(name="alert_on_completion", states=COMPLETION_STATES)
"""``on_completion``: a Completed flow run posts "resolved" once after an open failure."""
alert_on_task_failure = discord_task_hook(name="alert_on_task_failure", states=FAILURE_STATES)
"""Task ``on_failure``: a Failed (or Crashed) task run posts a CRITICAL alert."""
