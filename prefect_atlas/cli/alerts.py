"""``prefect-atlas alerts install-automation``: server-side alerts for crashes hooks never see.

A process killed by the OOM killer, a lost node or ``kill -9`` runs no client-side hook.
The Prefect *server* still marks the run Crashed (when its heartbeat or the worker says so)
and emits ``prefect.flow-run.Crashed``; an Automation on that event notifies Discord from the
server, through Prefect's own ``SendNotification`` action and a Prefect ``DiscordWebhook``
notification block built from the same webhook URL.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from cyclopts import App, Parameter

from prefect_atlas.cli._errors import require_command
from prefect_atlas.discord.enums import Channel

alerts = App(name="alerts", help="Discord alerts: server-side automation.")
require_command(alerts, "alerts")

BODY = (
    "Flow run {{ flow.name }} / {{ flow_run.name }} entered {{ flow_run.state.name }}: "
    "{{ flow_run.state.message }}\n{{ flow_run|ui_url }}"
)


def automation_name(block_name: str) -> str:
    return f"atlas-alerts-{block_name}"


async def install_automation(
    block_name: str, *, channel: Channel = Channel.ALERTS, include_failed: bool = False
) -> Any:
    """Create (or replace) the Automation for ``block_name``; returns it (with its id)."""
    from prefect.automations import Automation, EventTrigger, Posture, SendNotification
    from prefect.blocks.notifications import DiscordWebhook

    from prefect_atlas._blocks import resolve_block
    from prefect_atlas.discord.block import DiscordBlock, parse_webhook_url

    block = await resolve_block(DiscordBlock, block_name)
    used = channel if block.webhook(channel) is not None else block.fallback_channel
    secret = block.webhook(used)
    if secret is None:
        raise ValueError(
            f"block {block_name!r} has no webhook for channel {channel.value} nor its fallback "
            f"{block.fallback_channel.value}: set the `{channel.value}` field of the block"
        )
    webhook_id, token = parse_webhook_url(secret.get_secret_value(), block.allowed_hosts)
    notifier = DiscordWebhook(webhook_id=webhook_id, webhook_token=token, botname=block.username)
    notifier_name = automation_name(block_name)
    notifier_id = await notifier.asave(notifier_name, overwrite=True)

    events = {"prefect.flow-run.Crashed"} | (
        {"prefect.flow-run.Failed"} if include_failed else set()
    )
    name = automation_name(block_name)
    try:
        existing = await Automation.aread(name=name)
    except ValueError:
        existing = None
    if existing is not None:
        await existing.adelete()
    prefix = f"{block.env_tag} " if block.env_tag else ""
    automation = Automation(
        name=name,
        description=(
            f"Atlas: notify Discord #{used.value} (block {block_name!r}) when a flow run "
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
                block_document_id=notifier_id,
                subject=prefix + "Flow run {{ flow_run.name }} {{ flow_run.state.name }}",
                body=BODY,
            )
        ],
    )
    return await automation.acreate()


@alerts.command(name="install-automation")
async def install(
    *,
    block: Annotated[str, Parameter(help="a saved Atlas Discord block")],
    channel: Annotated[
        Channel, Parameter(help="channel whose webhook to use (the block's fallback when empty)")
    ] = Channel.ALERTS,
    include_failed: Annotated[
        bool,
        Parameter(help="also notify on Failed (client-side hooks already do, with deduplication)"),
    ] = False,
) -> int:
    """Create a Prefect Automation posting crashed (optionally failed) flow runs to Discord."""
    automation = await install_automation(block, channel=channel, include_failed=include_failed)
    events = ", ".join(sorted(automation.trigger.expect))
    print(f"automation {automation.name!r} ({automation.id}) installed: on {events} -> Discord")
    return 0
