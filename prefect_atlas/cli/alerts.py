"""``prefect-atlas alerts install-automation``: server-side alerts for crashes hooks never see.

A process killed by the OOM killer, a lost node or ``kill -9`` runs no client-side hook, and
a frozen one (stopped, deadlocked, cut off) never ends at all. The Prefect *server* still
sees both: the worker reports the dead process (``prefect.flow-run.Crashed``), and the frozen
run's heartbeats (``prefect.flow-run.heartbeat``, every ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY``
seconds) stop. Two Automations act on those from the server, through Prefect's own
``SendNotification`` action and the Atlas ``DiscordBlock`` itself (a notification block the
server loads, so the server's environment must import prefect-atlas):

* ``atlas-crashed-<block>``: on ``prefect.flow-run.Crashed`` (and ``Failed`` with
  ``--include-failed``), one alert per run;
* ``atlas-zombie-<block>``: a proactive trigger, after a heartbeat expecting another heartbeat
  or a final (or paused) state within ``missed x frequency`` seconds, per flow run; it alerts
  and (unless ``--no-mark-crashed``) marks the run Crashed, as Prefect's "detect zombie flows"
  recipe does.

Every alert names its flow run and state type in an options line the block reads: the block
claims ``flow-run:<id>|CRASHED`` (or ``FAILED``) in the alert memory before posting, as the
flow hooks do, so the hook, the crash automation and the zombie automation announce one
failure of one run once between them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID

from cyclopts import App, Parameter

from prefect_atlas.cli._errors import require_command
from prefect_atlas.discord.enums import AlertLevel, Channel
from prefect_atlas.discord.notify import options_line

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient
    from prefect.events.schemas.automations import AutomationCore

alerts = App(name="alerts", help="Discord alerts: server-side automation.")
require_command(alerts, "alerts")

# States after which a run rightly sends no more heartbeats: final ones, and the waits of a
# paused or suspended run and of a flow retry's delay (no false zombie for those).
QUIET_EVENTS = frozenset(
    f"prefect.flow-run.{name}"
    for name in (
        "Completed",
        "Failed",
        "Cancelled",
        "Crashed",
        "Paused",
        "Suspended",
        "AwaitingRetry",
    )
)
HEARTBEAT_EVENT = "prefect.flow-run.heartbeat"
DEFAULT_MISSED_HEARTBEATS = 3
MIN_HEARTBEAT_FREQUENCY = 30  # Prefect's floor (flow_engine.MINIMUM_HEARTBEAT_INTERVAL)

# The lines every message shows; the options line after them makes them embed fields.
_FACTS = (
    "Flow: {{ flow.name }}\n"
    "Deployment: {{ deployment.name if deployment else '(none)' }}\n"
    "Run: {{ flow_run.name }} ({{ flow_run.id }})\n"
    "State: {{ flow_run.state.name }}\n"
    "Link: {{ flow_run|ui_url }}\n"
)

CRASHED_SUBJECT = "Flow {{ flow.name }} {{ flow_run.state.name|lower }}: run {{ flow_run.name }}"
ZOMBIE_SUBJECT = "Flow {{ flow.name }} stopped responding: run {{ flow_run.name }}"


def _facts_and_options(channel: Channel, state: str) -> str:
    """The fields block and the ``atlas-alert:`` line every automation message ends with."""
    return _FACTS + options_line(
        channel=channel,
        level=AlertLevel.CRITICAL,
        run="{{ flow_run.id }}",
        state=state,
        url="{{ flow_run|ui_url }}",
    )


def crashed_body(channel: Channel) -> str:
    return (
        "Run **{{ flow_run.name }}** of flow **{{ flow.name }}** ended in state "
        "**{{ flow_run.state.name }}**"
        "{% if flow_run.state.message %}: {{ flow_run.state.message }}{% endif %}\n\n"
        + _facts_and_options(channel, "{{ flow_run.state.type.value }}")
    )


def zombie_body(channel: Channel, within: dt.timedelta, mark_crashed: bool) -> str:
    seconds = int(within.total_seconds())
    consequence = " It is marked Crashed." if mark_crashed else ""
    return (
        "Run **{{ flow_run.name }}** of flow **{{ flow.name }}** sent no heartbeat for "
        f"{seconds} s (the last one at {{{{ event.occurred }}}}): its process is frozen, "
        f"killed without a trace or cut off from the server.{consequence}\n\n"
        # a zombie is a crash: the Crashed state it may get next is the same failure
        + _facts_and_options(channel, "CRASHED")
    )


def crashed_name(block_name: str) -> str:
    return f"atlas-crashed-{block_name}"


def zombie_name(block_name: str) -> str:
    return f"atlas-zombie-{block_name}"


def legacy_name(block_name: str) -> str:
    """The automation (and Prefect DiscordWebhook block) earlier versions installed."""
    return f"atlas-alerts-{block_name}"


@dataclass(frozen=True)
class Installed:
    """What ``install_automation`` left on the server."""

    crashed: Any  # prefect.automations.Automation
    zombie: Any | None
    block_document_id: UUID
    removed_legacy: int


async def install_automation(
    block_name: str,
    *,
    channel: Channel = Channel.ALERTS,
    include_failed: bool = False,
    zombie: bool = True,
    heartbeat_frequency: int | None = None,
    missed_heartbeats: int = DEFAULT_MISSED_HEARTBEATS,
    mark_crashed: bool = True,
) -> Installed:
    """Create or update the automations of ``block_name`` (idempotent: one of each per block).

    ``heartbeat_frequency`` defaults to this environment's ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY``
    (Prefect's default 180 s): it must be what the workers' flow runs use.
    """
    from prefect.automations import (
        Automation,
        ChangeFlowRunState,
        EventTrigger,
        Posture,
        SendNotification,
    )
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.events.schemas.automations import AutomationCore

    from prefect_atlas._blocks import resolve_block
    from prefect_atlas.discord.block import DiscordBlock

    block = await resolve_block(DiscordBlock, block_name)
    if not list(block._route(channel)):
        raise ValueError(
            f"block {block_name!r} has no webhook for channel {channel.value} nor its fallback "
            f"{block.fallback_channel.value}: set the `{channel.value}` field of the block"
        )
    document_id = block._block_document_id
    if document_id is None:  # pragma: no cover - a loaded block always has one
        raise ValueError(f"block {block_name!r} has no block document id: save it first")

    events = {"prefect.flow-run.Crashed"} | (
        {"prefect.flow-run.Failed"} if include_failed else set()
    )
    crashed = AutomationCore(
        name=crashed_name(block_name),
        description=(
            f"Atlas: alert Discord #{channel.value} (block {block_name!r}) when a flow run "
            + ("crashes or fails" if include_failed else "crashes")
            + ", including crashes that kill the process before its hooks run."
        ),
        trigger=EventTrigger(
            expect=events,
            match={"prefect.resource.id": "prefect.flow-run.*"},
            posture=Posture.Reactive,
            threshold=1,
            within=dt.timedelta(0),
        ),
        actions=[
            SendNotification(
                block_document_id=document_id,
                subject=CRASHED_SUBJECT,
                body=crashed_body(channel),
            )
        ],
    )
    zombie_core: AutomationCore | None = None
    if zombie:
        within = zombie_window(heartbeat_frequency, missed_heartbeats)
        actions: list[Any] = [
            SendNotification(
                block_document_id=document_id,
                subject=ZOMBIE_SUBJECT,
                body=zombie_body(channel, within, mark_crashed),
            )
        ]
        if mark_crashed:
            actions.append(
                ChangeFlowRunState(
                    state=StateType.CRASHED,
                    message=(
                        f"No heartbeat for {int(within.total_seconds())} s: marked Crashed by "
                        f"the automation {zombie_name(block_name)!r}."
                    ),
                )
            )
        zombie_core = AutomationCore(
            name=zombie_name(block_name),
            description=(
                f"Atlas: alert Discord #{channel.value} (block {block_name!r}) when a flow run "
                f"misses {missed_heartbeats} heartbeats"
                + (" and mark it Crashed." if mark_crashed else ".")
            ),
            trigger=EventTrigger(
                after={HEARTBEAT_EVENT},
                expect={HEARTBEAT_EVENT, *QUIET_EVENTS},
                match={"prefect.resource.id": "prefect.flow-run.*"},
                for_each={"prefect.resource.id"},
                posture=Posture.Proactive,
                threshold=1,
                within=within,
            ),
            actions=actions,
        )

    async with get_client() as client:
        removed = await _remove_legacy(client, block_name)
        crashed_id = await _upsert(client, crashed)
        zombie_id = None
        if zombie_core is not None:
            zombie_id = await _upsert(client, zombie_core)
        else:
            await _delete_named(client, zombie_name(block_name))
    return Installed(
        crashed=await Automation.aread(id=crashed_id),
        zombie=await Automation.aread(id=zombie_id) if zombie_id is not None else None,
        block_document_id=document_id,
        removed_legacy=removed,
    )


def zombie_window(heartbeat_frequency: int | None, missed_heartbeats: int) -> dt.timedelta:
    """``missed x frequency``: how long a run may go without a heartbeat before it is a zombie."""
    if heartbeat_frequency is None:
        from prefect.settings import get_current_settings

        heartbeat_frequency = get_current_settings().flows.heartbeat_frequency
        if heartbeat_frequency is None:
            raise ValueError(
                "flow-run heartbeats are off here (PREFECT_FLOWS_HEARTBEAT_FREQUENCY is unset): "
                "turn them on for the workers and pass --heartbeat-frequency, or use --no-zombie"
            )
    if heartbeat_frequency < MIN_HEARTBEAT_FREQUENCY:
        raise ValueError(
            f"--heartbeat-frequency must be at least {MIN_HEARTBEAT_FREQUENCY} s "
            f"(Prefect sends heartbeats no faster), got {heartbeat_frequency}"
        )
    if missed_heartbeats < 2:
        raise ValueError(
            f"--missed-heartbeats must be at least 2 (one late heartbeat is not a zombie), "
            f"got {missed_heartbeats}"
        )
    return dt.timedelta(seconds=heartbeat_frequency * missed_heartbeats)


async def _upsert(client: PrefectClient, automation: AutomationCore) -> UUID:
    """Update the automation of that name in place (deleting any duplicates), or create it."""
    existing = await client.read_automations_by_name(automation.name)
    if not existing:
        return await client.create_automation(automation)
    keep, *extra = sorted(existing, key=lambda a: str(a.id))
    await client.update_automation(keep.id, automation)
    for duplicate in extra:
        await client.delete_automation(duplicate.id)
    return keep.id


async def _delete_named(client: PrefectClient, name: str) -> int:
    existing = await client.read_automations_by_name(name)
    for automation in existing:
        await client.delete_automation(automation.id)
    return len(existing)


async def _remove_legacy(client: PrefectClient, block_name: str) -> int:
    """Remove what earlier versions installed: the automation and its DiscordWebhook copy of
    the webhook token (it would announce every crash a second time)."""
    from prefect.exceptions import ObjectNotFound

    removed = await _delete_named(client, legacy_name(block_name))
    try:
        document = await client.read_block_document_by_name(
            legacy_name(block_name), block_type_slug="discord-webhook"
        )
    except ObjectNotFound:
        return removed
    await client.delete_block_document(document.id)
    return removed + 1


@alerts.command(name="install-automation")
async def install(
    *,
    block: Annotated[str, Parameter(help="a saved Atlas Discord block")],
    channel: Annotated[
        Channel, Parameter(help="channel to alert (the block's fallback when it has no webhook)")
    ] = Channel.ALERTS,
    include_failed: Annotated[
        bool,
        Parameter(help="also alert on Failed (deduplicated with the flow hooks)"),
    ] = False,
    zombie: Annotated[
        bool,
        Parameter(
            help="also alert on flow runs whose heartbeats stop (--no-zombie: remove that)",
            negative="--no-zombie",
        ),
    ] = True,
    heartbeat_frequency: Annotated[
        int | None,
        Parameter(
            help="seconds between flow-run heartbeats on the workers "
            "(default: PREFECT_FLOWS_HEARTBEAT_FREQUENCY here, Prefect's default 180)"
        ),
    ] = None,
    missed_heartbeats: Annotated[
        int, Parameter(help="heartbeats a run may miss before it is a zombie")
    ] = DEFAULT_MISSED_HEARTBEATS,
    mark_crashed: Annotated[
        bool,
        Parameter(
            help="mark a zombie run Crashed (one alert all the same)",
            negative="--no-mark-crashed",
        ),
    ] = True,
) -> int:
    """Create or update the Prefect Automations that alert Discord on crashed and zombie runs."""
    installed = await install_automation(
        block,
        channel=channel,
        include_failed=include_failed,
        zombie=zombie,
        heartbeat_frequency=heartbeat_frequency,
        missed_heartbeats=missed_heartbeats,
        mark_crashed=mark_crashed,
    )
    crashed = installed.crashed
    events = ", ".join(sorted(crashed.trigger.expect))
    print(f"automation {crashed.name!r} ({crashed.id}) installed: on {events} -> {block}")
    if installed.zombie is not None:
        seconds = int(installed.zombie.trigger.within.total_seconds())
        print(
            f"automation {installed.zombie.name!r} ({installed.zombie.id}) installed: "
            f"no heartbeat for {seconds} s -> {block}"
            + (", run marked Crashed" if mark_crashed else "")
        )
    if installed.removed_legacy:
        print(f"removed {installed.removed_legacy} object(s) of the earlier DiscordWebhook setup")
    return 0
