"""The deciding and sending behind every Atlas alert hook: :class:`_Alerter`.

It decides what a state means (an alert, a cancellation warning, a "resolved" message or
nothing), deduplicates failures through the alert memory, and posts through the Discord block
(loaded for the alert, or given); an alert no channel took is logged in full at ERROR. The
hook factories and the ready hooks live in :mod:`prefect_atlas.hooks.alerts`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from prefect.client.schemas.objects import StateType

from prefect_atlas import metrics, settings
from prefect_atlas._blocks import resolve_block
from prefect_atlas._redact import redact_text
from prefect_atlas.discord.block import DiscordBlock, LoggerLike, alert_text
from prefect_atlas.discord.enums import AlertLevel, Channel
from prefect_atlas.hooks.context import RunFacts, format_duration
from prefect_atlas.hooks.memory import (
    RUN_DEDUP_WINDOW,
    AlertMemory,
    Claim,
    DatabaseAlertMemory,
    Resolved,
    default_memory,
    run_key,
    run_key_state,
)

BLOCK_ENV = "ATLAS_DISCORD_BLOCK"
"""The variable naming the DiscordBlock the hooks alert through (default: ``default``)."""
DEFAULT_BLOCK = "default"

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
            await self._failure(facts_factory, state, log)
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

    async def _failure(
        self, facts_factory: Callable[[], Awaitable[RunFacts]], state: Any, log: LoggerLike
    ) -> None:
        memory = self._memory_or_none(log)
        # The run's key first, before the facts are gathered (root cause, API look-ups): the
        # server's automation claims the same key, and the hook's alert says more.
        run_claim: tuple[str, Claim] | None = None
        run_id = _flow_run_id(state)
        if memory is not None and run_id is not None:
            run_claim, memory = await self._claim_run(memory, run_id, state, log)
        if run_claim is not None and not run_claim[1].send:
            metrics.ALERTS_SUPPRESSED.inc()
            log.info(
                "Atlas alert for flow run %s (%s) not sent: already announced, by the server's "
                "automation or another hook",
                run_id,
                getattr(state, "name", None) or state.type,
            )
            return
        keep = False  # the claims hold: the alert went out, or is someone else's to send
        claim: Claim | None = None
        fingerprint = ""
        try:
            facts = await facts_factory()
            if memory is not None and run_claim is None and facts.kind == "flow" and facts.run_id:
                run_claim, memory = await self._claim_run(memory, facts.run_id, state, log)
                if run_claim is not None and not run_claim[1].send:
                    metrics.ALERTS_SUPPRESSED.inc()
                    log.info(
                        "Atlas alert for flow run %s not sent: already announced", facts.run_id
                    )
                    keep = True
                    return
            root = facts.root
            assert root is not None
            fingerprint = f"{facts.scope}|{facts.state_name}:{root.type}"
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
                # unannounced on purpose: the run's claim stays, so the automation keeps quiet
                keep = True
                return
            keep = await self._send(
                facts,
                log,
                title=f"{facts.kind.title()} {facts.name} {facts.state_name.lower()}: {root.type}",
                description="\n".join(_failure_lines(facts, root, claim)),
                level=self.level,
                extra={"Exception": root.type},
            )
        finally:
            # A claim holds only for a delivered alert: otherwise the next failure must try again.
            if not keep and claim is not None and memory is not None:
                await self._release(memory, fingerprint, claim, log)
            if not keep and run_claim is not None and memory is not None:
                await self._release(memory, *run_claim, log)

    async def _claim_run(
        self, memory: AlertMemory | DatabaseAlertMemory, run_id: Any, state: Any, log: LoggerLike
    ) -> tuple[tuple[str, Claim] | None, AlertMemory | DatabaseAlertMemory | None]:
        """Claim "this flow run ended in this state type", the key the server's automations
        (``prefect-atlas alerts install-automation``) claim too; the memory comes back None
        when it is unavailable (said once, no second try for the failure's fingerprint)."""
        key = run_key(run_id, state.type)
        try:
            return (
                key,
                await memory.aclaim(key, key, run_key_state(key), RUN_DEDUP_WINDOW),
            ), memory
        except Exception as exc:  # fail open: a duplicate is better than a lost alert
            log.warning(
                "Atlas alert memory unavailable (%s: %s); dedup skipped, the alert is sent anyway",
                type(exc).__name__,
                exc,
            )
            return None, None

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
            # name and id, as the server's crashed and zombie automations write it
            "Run": facts.run_name if facts.run_id is None else f"{facts.run_name} ({facts.run_id})",
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


def _flow_run_id(state: Any) -> Any:
    """The flow run a *flow* run's state belongs to (None for a task run's state)."""
    details = getattr(state, "state_details", None)
    if details is None or getattr(details, "task_run_id", None) is not None:
        return None
    return getattr(details, "flow_run_id", None)


def _failure_lines(facts: RunFacts, root: Any, claim: Claim | None) -> list[str]:
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
        since = dt.datetime.fromtimestamp(claim.first_seen, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        lines += ["", f"{claim.suppressed} similar failure(s) suppressed; failing since {since}."]
    return lines
