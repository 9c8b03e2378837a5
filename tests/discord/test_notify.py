"""`DiscordBlock` as a Prefect `NotificationBlock`, against the local Discord-like server."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from prefect.blocks.abstract import NotificationBlock, NotificationError
from pydantic import SecretStr

from prefect_atlas import DiscordBlock
from prefect_atlas.discord.notify import options_line, parse
from tests.discord._server import DiscordServer, Webhook


def block_on(server: DiscordServer, hook: Webhook, **kwargs: Any) -> DiscordBlock:
    return DiscordBlock(alerts=SecretStr(server.url(hook)), allowed_hosts=["127.0.0.1"], **kwargs)


def body_for(run: str, state: str = "CRASHED", channel: str = "alerts") -> str:
    return (
        "Run **sly-fox** of flow **ingest** ended in state **Crashed**: exit -9\n\n"
        "Flow: ingest\n"
        "Deployment: prod\n"
        f"Run: sly-fox ({run})\n"
        "State: Crashed\n"
        + options_line(
            channel=channel,
            level="critical",
            run=run,
            state=state,
            url=f"http://127.0.0.1:4200/runs/flow-run/{run}",
        )
    )


def test_block_is_a_notification_block() -> None:
    assert issubclass(DiscordBlock, NotificationBlock)
    assert "notify" in DiscordBlock.get_block_capabilities()


def test_sync_notify_posts_subject_and_body(discord_server: DiscordServer) -> None:
    hook = discord_server.add_webhook()
    block = block_on(discord_server, hook, env_tag="[prod]")
    try:
        delivery = block.notify("Plain text from Prefect", subject="Hello")
    finally:
        block.close()
    assert delivery.delivered
    (message,) = hook.received
    embed = message["embeds"][0]
    assert embed["title"] == "[prod] Hello"
    assert embed["description"] == "Plain text from Prefect"
    assert not embed.get("fields")


async def test_notify_is_awaitable_as_the_automation_action_calls_it(
    discord_server: DiscordServer,
) -> None:
    hook = discord_server.add_webhook()
    ops = discord_server.add_webhook()
    block = block_on(discord_server, hook, ops=SecretStr(discord_server.url(ops)))
    run = str(uuid.uuid4())
    async with block:
        with block.raise_on_failure():
            delivery = await block.notify(
                subject="Flow ingest crashed", body=body_for(run, channel="ops")
            )
    assert delivery.delivered and delivery.channel == "ops"
    assert hook.received == []
    embed = ops.received[0]["embeds"][0]
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields == {
        "Flow": "ingest",
        "Deployment": "prod",
        "Run": f"sly-fox ({run})",
        "State": "Crashed",
    }
    assert embed["description"].endswith("exit -9") and "atlas-alert" not in embed["description"]
    assert embed["url"] == f"http://127.0.0.1:4200/runs/flow-run/{run}"


async def test_one_run_and_state_is_announced_once(discord_server: DiscordServer) -> None:
    hook = discord_server.add_webhook()
    run = str(uuid.uuid4())
    async with block_on(discord_server, hook) as block:
        first = await block.anotify(body_for(run), "Flow ingest crashed")
        second = await block.anotify(body_for(run), "Flow ingest crashed")
        other_state = await block.anotify(body_for(run, state="FAILED"), "Flow ingest failed")
        other_run = await block.anotify(body_for(str(uuid.uuid4())), "Flow ingest crashed")
    assert first.delivered and not second.delivered
    assert second.reason is not None and "already announced" in second.reason
    assert other_state.delivered and other_run.delivered
    assert len(hook.received) == 3


async def test_undelivered_raises_only_inside_raise_on_failure(
    discord_server: DiscordServer,
) -> None:
    hook = discord_server.add_webhook()
    run = str(uuid.uuid4())
    discord_server.set_fault(hook, "404")
    async with block_on(discord_server, hook) as block:
        quiet = await block.anotify(body_for(run), "Flow ingest crashed")
        assert not quiet.delivered and quiet.logged
        with block.raise_on_failure(), pytest.raises(NotificationError) as raised:
            await block.notify(body_for(run), "Flow ingest crashed")
    assert "no live webhook" in raised.value.log
    assert hook.token not in raised.value.log

    # An undelivered alert released its claim: once Discord is back, it goes out.
    discord_server.set_fault(hook, None)
    async with block_on(discord_server, hook) as block:
        assert (await block.anotify(body_for(run), "again")).delivered
    assert len(hook.received) == 1


async def test_secrets_in_the_body_are_redacted(discord_server: DiscordServer) -> None:
    hook = discord_server.add_webhook()
    leaked = "postgresql://atlas:hunter2@db.internal/atlas"
    async with block_on(discord_server, hook) as block:
        await block.anotify(f"could not connect to {leaked} ({discord_server.url(hook)})", "DB")
    text = str(hook.received[0])
    assert "hunter2" not in text and hook.token not in text


def test_options_line_parsing_is_forgiving() -> None:
    notice = parse("text\natlas-alert: channel=nowhere level=loud run=not-a-uuid url=None", "")
    assert notice.title == "Prefect notification"
    assert notice.channel == "alerts" and notice.level == "warning"
    assert notice.run is None and notice.url is None and notice.description == "text"
    # a body without an options line is sent as it is, "Name: value" lines included
    plain = parse("Flow: ingest\nState: Crashed", "s")
    assert plain.description == "Flow: ingest\nState: Crashed" and plain.fields == {}
