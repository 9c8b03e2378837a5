"""``prefect-atlas alerts install-automation``: server-side alerts for crashes hooks never see.

A process killed by the OOM killer, a lost node or ``kill -9`` runs no client-side hook
(Prefect issues #16427, #16436). The Prefect *server* still marks the run Crashed (when its
heartbeat or the worker says so) and emits ``prefect.flow-run.Crashed``; an Automation on
that event notifies Discord from the server, through Prefect's own ``SendNotification``
action and a Prefect ``DiscordWebhook`` notification block built from the same webhook URL.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
from typing import Any

from prefect_atlas._blocks import resolve_block
from prefect_atlas.discord.block import DiscordBlock, parse_webhook_url
from prefect_atlas.discord.enums import Channel

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
    await notifier.asave(notifier_name, overwrite=True)
    assert notifier._block_document_id is not None

    events = {"prefect.flow-run.Crashed"} | ({"prefect.flow-run.Failed"} if include_failed else set())
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
                block_document_id=notifier._block_document_id,
                subject=prefix + "Flow run {{ flow_run.name }} {{ flow_run.state.name }}",
                body=BODY,
            )
        ],
    )
    return await automation.acreate()


def _cmd_install(args: argparse.Namespace) -> int:
    automation = asyncio.run(
        install_automation(args.block, channel=Channel(args.channel), include_failed=args.include_failed)
    )
    events = ", ".join(sorted(automation.trigger.expect))
    print(f"automation {automation.name!r} ({automation.id}) installed: on {events} -> Discord")
    return 0


def register(subparsers: Any) -> None:
    """Add the ``alerts`` command group to the ``prefect-atlas`` parser."""
    alerts = subparsers.add_parser("alerts", help="Discord alerts: server-side automation")
    sub = alerts.add_subparsers(dest="alerts_command", required=True, metavar="COMMAND")
    install = sub.add_parser(
        "install-automation",
        help="create a Prefect Automation that posts crashed (and optionally failed) flow runs to Discord",
    )
    install.add_argument("--block", required=True, metavar="NAME", help="a saved Atlas Discord block")
    install.add_argument(
        "--channel",
        default=Channel.ALERTS.value,
        choices=[c.value for c in Channel],
        help="channel whose webhook to use (default: alerts; the block's fallback when empty)",
    )
    install.add_argument(
        "--include-failed",
        action="store_true",
        help="also notify on Failed (the client-side hooks already do, with deduplication)",
    )
    install.set_defaults(handler=_cmd_install)
