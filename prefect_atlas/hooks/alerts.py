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
import contextlib
import datetime as dt
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeAlias

from prefect.client.schemas.objects import StateType

from prefect_atlas import metrics, settings
from prefect_atlas._blocks import resolve_block
from prefect_atlas._redact import redact_text
from prefect_atlas.discord.block import DiscordBlock, LoggerLike, alert_text
from prefect_atlas.discord.enums import AlertLevel, Channel
from prefect_atlas.hooks.context import (
    RootCause,
    RunFacts,
    _from_message,
    dig_root_cause,
    duration_of,
    format_duration,
    redact_parameters,
    run_link,
)
from prefect_atlas.hooks.memory import (
    AlertMemory,
    Claim,
    DatabaseAlertMemory,
    Resolved,
    default_memory,
)

BLOCK_ENV = "ATLAS_DISCORD_BLOCK"
DEFAULT_BLOCK = "default"
DEFAULT_REPEAT_INTERVAL = dt.timedelta(hours=1)

_fallback_logger = logging.getLogger("prefect_atlas.hooks")

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun, State, TaskRun
    from prefect.flows import Flow, FlowStateHook
    from prefect.tasks import Task

    FlowHook: TypeAlias = FlowStateHook[..., Any]
    TaskHook: TypeAlias = Callable[[Task[..., Any], TaskRun, State[Any]], Awaitable[None]]


FAILURE_STATES = frozenset({StateType.FAILED, StateType.CRASHED})
CRASHED_STATES = frozenset({StateType.CRASHED})
CANCELLATION_STATES = frozenset({StateType.CANCELLED, StateType.CANCELLING})
COMPLETION_STATES = frozenset({StateType.COMPLETED})

# Bounds on the look-ups that feed an alert: a hung Prefect API must not hold the alert back.
CONTEXT_TIMEOUT_SECONDS = 20.0


async def _load_block(ref: str | DiscordBlock | None, log: LoggerLike) -> DiscordBlock | None:
    """The block to alert through; None (the alert then goes to this log) if it cannot load."""
    if isinstance(ref, DiscordBlock):
        return ref
    name = ref or settings.read("atlas_discord_block") or DEFAULT_BLOCK
    try:
        async with asyncio.timeout(CONTEXT_TIMEOUT_SECONDS):
            return await resolve_block(DiscordBlock, name)
    except Exception as exc:
        log.warning(
            "Atlas Discord block %r could not be loaded (%s); alerts go to this log. Save one with "
            "DiscordBlock(alerts=...).save(%r) or set %s.",
            name,
            type(exc).__name__,
            name,
            BLOCK_ENV,
        )
        return None


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


class _Alerter:
    """The behaviour shared by every hook the factories return."""

    def __init__(
        self,
        *,
        block: str | DiscordBlock | None,
        channel: Channel,
        level: AlertLevel,
        repeat_interval: dt.timedelta | float,
        notify_completion: bool,
        include_parameters: bool,
        memory: AlertMemory | DatabaseAlertMemory | None,
        states: Iterable[StateType] | None = None,
        name: str = "discord_hook",
    ) -> None:
        self.block = block
        self.states = None if states is None else frozenset(StateType(s) for s in states)
        self.name = name
        self.channel = Channel(channel)
        self.level = AlertLevel(level)
        self.repeat_interval = (
            repeat_interval.total_seconds()
            if isinstance(repeat_interval, dt.timedelta)
            else float(repeat_interval)
        )
        self.notify_completion = notify_completion
        self.include_parameters = include_parameters
        self._memory = memory

    @property
    def memory(self) -> AlertMemory | DatabaseAlertMemory:
        # Resolved on use so that ATLAS_HOME / ATLAS_ALERT_MEMORY_DATABASE set after import count.
        return self._memory if self._memory is not None else default_memory()

    def _memory_or_none(
        self, log: LoggerLike, consequence: str = "dedup skipped, the alert is sent anyway"
    ) -> AlertMemory | DatabaseAlertMemory | None:
        try:
            return self.memory
        except Exception as exc:  # e.g. ATLAS_HOME is a file, or not writable
            log.warning(
                "Atlas alert memory unavailable (%s: %s); %s", type(exc).__name__, exc, consequence
            )
            return None

    def _acts_on(self, state: Any, log: LoggerLike) -> bool:
        if self.states is None or state.type in self.states:
            return True
        log.warning(
            "Atlas alert hook %s acts on %s states only; a %s state is ignored (alert_on_state, or "
            "discord_hook() without states=, acts on every state)",
            self.name,
            "/".join(sorted(s.value.title() for s in self.states)),
            getattr(state, "name", None) or state.type,
        )
        return False

    async def handle(
        self, facts_factory: Callable[[], Awaitable[RunFacts]], state: Any, log: LoggerLike
    ) -> None:
        try:
            if self._acts_on(state, log):
                await self._handle(facts_factory, state, log)
        except Exception as exc:  # a hook never raises into Prefect
            log.error("Atlas alert hook failed: %s: %s", type(exc).__name__, exc)

    async def _handle(
        self, facts_factory: Callable[[], Awaitable[RunFacts]], state: Any, log: LoggerLike
    ) -> None:
        if state.is_failed() or state.is_crashed():
            await self._failure(await facts_factory(), state, log)
        elif state.is_cancelled() or state.is_cancelling():
            facts = await facts_factory()
            await self._send(
                facts,
                log,
                title=f"{facts.kind.title()} {facts.name} was cancelled",
                description=f"Run **{facts.run_name}** ended in state **{facts.state_name}**.",
                level=AlertLevel.WARNING,
                extra={},
            )
        elif state.is_completed():
            await self._completion(await facts_factory(), log)

    async def _failure(self, facts: RunFacts, state: Any, log: LoggerLike) -> None:
        root = facts.root
        assert root is not None
        exc_key = f"{facts.state_name}:{root.type}"
        fingerprint = f"{facts.scope}|{exc_key}"
        memory = self._memory_or_none(log)
        claim: Claim | None = None
        if memory is not None:
            try:
                claim = await memory.aclaim(
                    fingerprint, facts.scope, root.type, self.repeat_interval
                )
            except Exception as exc:  # fail open: a duplicate is better than a lost alert
                log.warning(
                    "Atlas alert memory unavailable (%s: %s); "
                    "dedup skipped, the alert is sent anyway",
                    type(exc).__name__,
                    exc,
                )
        if claim is not None and not claim.send:
            metrics.ALERTS_SUPPRESSED.inc()
            log.info(
                "Atlas alert for %s %s (%s) suppressed: already "
                "sent within the repeat interval (%d suppressed)",
                facts.kind,
                facts.name,
                root.type,
                claim.suppressed,
            )
            return
        lines = [
            f"Run **{facts.run_name}** ended in state **{facts.state_name}**.",
            "",
            f"**{root.type}**: {root.message}" if root.message else f"**{root.type}**",
        ]
        if root.wrapped_as:
            lines.append(f"(raised as {root.wrapped_as})")
        if root.source != "state":
            lines.append(f"(from {root.source})")
        if claim is not None and claim.suppressed:
            since = dt.datetime.fromtimestamp(claim.first_seen, dt.UTC).strftime(
                "%Y-%m-%d %H:%M UTC"
            )
            lines += [
                "",
                f"{claim.suppressed} similar failure(s) suppressed; failing since {since}.",
            ]
        delivered = False
        try:
            delivered = await self._send(
                facts,
                log,
                title=f"{facts.kind.title()} {facts.name} {facts.state_name.lower()}: {root.type}",
                description="\n".join(lines),
                level=self.level,
                extra={"Exception": root.type},
            )
        finally:
            # The claim holds only for a delivered alert: otherwise the next failure must try again.
            if not delivered and claim is not None and memory is not None:
                await self._release(memory, fingerprint, claim, log)

    async def _release(
        self,
        memory: AlertMemory | DatabaseAlertMemory,
        fingerprint: str,
        claim: Claim,
        log: LoggerLike,
    ) -> None:
        try:
            await memory.arelease(fingerprint, claim)
        except Exception as exc:
            log.error(
                "Atlas alert memory: the claim of an undelivered alert could not be released (%s); "
                "the same failure may stay suppressed for the repeat interval",
                type(exc).__name__,
            )

    async def _completion(self, facts: RunFacts, log: LoggerLike) -> None:
        memory = self._memory_or_none(log, "no resolved message this time")
        resolved: list[Resolved] = []
        if memory is not None:
            try:
                resolved = await memory.aresolve(facts.scope)
            except Exception as exc:
                log.warning(
                    "Atlas alert memory unavailable (%s); no resolved message this time",
                    type(exc).__name__,
                )
        if resolved:
            lines = [f"Run **{facts.run_name}** completed; these failures are resolved:"]
            for item in resolved:
                since = dt.datetime.fromtimestamp(item.first_seen, dt.UTC).strftime(
                    "%Y-%m-%d %H:%M UTC"
                )
                lines.append(f"- **{item.exc_type}**: {item.total} failure(s) since {since}")
            await self._send(
                facts,
                log,
                title=f"Resolved: {facts.kind} {facts.name}",
                description="\n".join(lines),
                level=AlertLevel.SUCCESS,
                extra={},
            )
        elif self.notify_completion:
            await self._send(
                facts,
                log,
                title=f"{facts.kind.title()} {facts.name} completed",
                description=f"Run **{facts.run_name}** completed.",
                level=AlertLevel.SUCCESS,
                extra={},
            )

    async def _send(
        self,
        facts: RunFacts,
        log: LoggerLike,
        *,
        title: str,
        description: str,
        level: AlertLevel,
        extra: dict[str, str],
    ) -> bool:
        fields: dict[str, Any] = {
            facts.kind.title(): facts.name,
            "Run": facts.run_name,
            "State": facts.state_name,
            **extra,
            "Duration": format_duration(facts.duration),
        }
        if facts.deployment_id is not None:
            fields["Deployment"] = str(facts.deployment_id)
        if self.include_parameters and facts.parameters:
            fields["Parameters"] = (
                "```json\n" + json.dumps(facts.parameters, default=str, indent=1)[:900] + "\n```"
            )
        # A flow that takes a ``discord`` parameter (the ingest flow does) names its block there.
        named = facts.parameters.get("discord")
        block = await _load_block(self.block or (named if isinstance(named, str) else None), log)
        if block is None:
            log.error(
                "Discord alert not delivered (the Discord "
                "block could not be loaded) [%s -> #%s] %s",
                level.value,
                self.channel.value,
                redact_text(alert_text(title, description, fields=fields, url=facts.link)),
            )
            return False
        try:
            delivery = await block.asend(
                title,
                description,
                level=level,
                channel=self.channel,
                fields=fields,
                url=facts.link,
                log=log,
            )
        finally:
            with contextlib.suppress(Exception):
                await block.aclose()
            if not isinstance(self.block, DiscordBlock) and block.state_database is not None:
                # loaded for this alert only: its nested database's pool goes with it
                with contextlib.suppress(Exception):
                    await block.state_database.aclose()
        if delivery.delivered:
            log.info(
                "Atlas alert sent to Discord #%s (message %s)",
                delivery.channel,
                delivery.message_id,
            )
        return delivery.delivered


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

    async def hook(flow: Flow[..., Any], flow_run: FlowRun, state: State[Any]) -> None:
        log = _flow_logger(flow_run, flow)
        await alerter.handle(lambda: _flow_facts(flow, flow_run, state, log), state, log)

    hook.__name__ = hook.__qualname__ = name
    return hook


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

    async def hook(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> None:
        log = _task_logger(task_run, task)
        await alerter.handle(lambda: _task_facts(task, task_run, state, log), state, log)

    hook.__name__ = hook.__qualname__ = name
    return hook


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
