"""DiscordBlock against the local Discord-like server: delivery, rate limits, faults, secrets."""

from __future__ import annotations

import asyncio
import logging

import pytest
import stamina
from pydantic import SecretStr, ValidationError

import prefect_atlas
from prefect_atlas import AlertLevel, Channel, Delivery, DiscordBlock
from prefect_atlas.discord.embeds import TRUNCATED, embed_size
from tests.discord._server import DiscordServer

GUARD = 120  # seconds: a hang guard, not a timing assertion


async def test_delivers_with_wait_and_returns_message_id(discord_server: DiscordServer) -> None:
    hook = discord_server.add_webhook()
    block = DiscordBlock(
        allowed_hosts=["127.0.0.1"], ops=SecretStr(discord_server.url(hook)), env_tag="[test]"
    )
    async with block:
        delivery = await block.asend("Hello", "world", fields={"videos": 3})
    assert delivery.delivered and bool(delivery)
    assert delivery.channel is Channel.OPS
    assert delivery.attempts == 1
    assert delivery.message_id == hook.received[0]["id"]
    embed = hook.received[0]["embeds"][0]
    assert embed["title"] == "[test] Hello"
    assert embed["color"] == AlertLevel.INFO.colour
    assert embed["fields"][0]["name"] == "videos"
    assert hook.received[0]["allowed_mentions"] == {"parse": []}


async def test_fifty_concurrent_alerts_arrive_once_without_provoking_429(
    discord_server: DiscordServer,
) -> None:
    """50 concurrent sends through the 5-per-2-s bucket: all arrive once, no 429."""
    hook = discord_server.add_webhook()
    block = DiscordBlock(allowed_hosts=["127.0.0.1"], alerts=SecretStr(discord_server.url(hook)))
    async with block:
        deliveries = await asyncio.wait_for(
            asyncio.gather(*(block.asend(f"alert {i}", channel=Channel.ALERTS) for i in range(50))),
            GUARD,
        )
    assert all(d.delivered for d in deliveries), [d.reason for d in deliveries if not d.delivered]
    titles = sorted(m["embeds"][0]["title"] for m in hook.received)
    assert titles == sorted(f"alert {i}" for i in range(50))  # each exactly once
    assert hook.rate_limited == 0
    assert all(d.attempts == 1 for d in deliveries)


async def test_429_body_retry_after_is_honoured(discord_server: DiscordServer) -> None:
    """Another client drained the bucket: our send gets a 429, waits `retry_after`, succeeds."""
    import aiohttp

    hook = discord_server.add_webhook()
    mine = DiscordBlock(allowed_hosts=["127.0.0.1"], ops=SecretStr(discord_server.url(hook)))
    async with aiohttp.ClientSession() as other:  # another program on the same webhook
        for i in range(5):
            async with other.post(
                discord_server.url(hook) + "?wait=true", json={"content": f"other {i}"}
            ) as r:
                assert r.status == 200
    async with mine:
        delivery = await asyncio.wait_for(mine.asend("mine"), GUARD)
    assert delivery.delivered
    assert delivery.attempts == 2
    assert hook.rate_limited == 1
    assert len(hook.received) == 6


async def test_blocks_loaded_anew_share_the_process_limiter(discord_server: DiscordServer) -> None:
    """Hooks load a fresh block per alert: three instances x 4 concurrent alerts on one
    5-per-2-s webhook all wait their turn in one limiter — 12 received once, no 429."""
    hook = discord_server.add_webhook()
    url = SecretStr(discord_server.url(hook))
    blocks = [DiscordBlock(allowed_hosts=["127.0.0.1"], ops=url) for _ in range(3)]
    assert blocks[0]._runtime() is blocks[1]._runtime()
    deliveries = await asyncio.wait_for(
        asyncio.gather(*(b.asend(f"{n}-{i}") for n, b in enumerate(blocks) for i in range(4))),
        GUARD,
    )
    assert all(d.delivered for d in deliveries)
    assert hook.rate_limited == 0
    assert sorted(m["embeds"][0]["title"] for m in hook.received) == sorted(
        f"{n}-{i}" for n in range(3) for i in range(4)
    )
    await blocks[0].aclose()


async def test_404_marks_webhook_dead_and_uses_fallback(discord_server: DiscordServer) -> None:
    primary, fallback = discord_server.add_webhook(), discord_server.add_webhook()
    block = DiscordBlock(
        allowed_hosts=["127.0.0.1"],
        hunt=SecretStr(discord_server.url(primary)),
        alerts=SecretStr(discord_server.url(fallback)),
        fallback_channel=Channel.ALERTS,
    )
    discord_server.delete(primary)
    async with block:
        first = await block.asend("found", channel=Channel.HUNT)
        second = await block.asend("found again", channel=Channel.HUNT)
    assert first.delivered and first.channel is Channel.ALERTS and first.used_fallback
    assert first.reason is not None and "hunt webhook is gone" in first.reason
    assert second.delivered and second.channel is Channel.ALERTS
    assert second.attempts == 1  # the dead webhook is not hammered again
    assert block.dead_channels == {Channel.HUNT}
    assert len(fallback.received) == 2


async def test_channel_without_webhook_uses_fallback(discord_server: DiscordServer) -> None:
    hook = discord_server.add_webhook()
    block = DiscordBlock(allowed_hosts=["127.0.0.1"], alerts=SecretStr(discord_server.url(hook)))
    async with block:
        delivery = await block.asend("x", channel=Channel.SURVEILLANCE)
    assert delivery.delivered and delivery.channel is Channel.ALERTS
    assert delivery.requested_channel is Channel.SURVEILLANCE


async def test_headerless_429_stops_at_once(discord_server: DiscordServer) -> None:
    hook = discord_server.add_webhook()
    discord_server.set_fault(hook, "ban")
    block = DiscordBlock(
        allowed_hosts=["127.0.0.1"], ops=SecretStr(discord_server.url(hook)), max_attempts=5
    )
    async with block:
        delivery = await asyncio.wait_for(block.asend("x"), GUARD)
    assert not delivery.delivered
    assert delivery.attempts == 1
    assert hook.requests == 1
    assert delivery.reason is not None and "without rate-limit headers" in delivery.reason
    assert delivery.logged


async def test_5xx_is_retried_then_delivered(discord_server: DiscordServer) -> None:
    hook = discord_server.add_webhook()
    discord_server.set_fault(hook, "500", count=2)
    block = DiscordBlock(
        allowed_hosts=["127.0.0.1"], ops=SecretStr(discord_server.url(hook)), max_attempts=4
    )
    with stamina.set_testing(True, attempts=100, cap=True):  # no sleeps; max_attempts still governs
        async with block:
            delivery = await asyncio.wait_for(block.asend("x"), GUARD)
    assert delivery.delivered
    assert delivery.attempts == 3
    assert len(hook.received) == 1


async def test_gives_up_after_max_attempts(discord_server: DiscordServer) -> None:
    hook = discord_server.add_webhook()
    discord_server.set_fault(hook, "500")
    block = DiscordBlock(
        allowed_hosts=["127.0.0.1"], ops=SecretStr(discord_server.url(hook)), max_attempts=3
    )
    with stamina.set_testing(True, attempts=100, cap=True):
        async with block:
            delivery = await asyncio.wait_for(block.asend("x"), GUARD)
    assert not delivery.delivered
    assert delivery.attempts == 3 and hook.requests == 3
    assert (
        delivery.reason is not None
        and "after 3 attempt(s)" in delivery.reason
        and "500" in delivery.reason
    )


async def test_timeout_is_retried(discord_server: DiscordServer) -> None:
    hook = discord_server.add_webhook()
    discord_server.set_fault(hook, "timeout", count=1)
    block = DiscordBlock(
        allowed_hosts=["127.0.0.1"],
        ops=SecretStr(discord_server.url(hook)),
        timeout=0.3,
        max_attempts=3,
    )
    with stamina.set_testing(True, attempts=100, cap=True):
        async with block:
            delivery = await asyncio.wait_for(block.asend("x"), GUARD)
    assert delivery.delivered
    assert delivery.attempts == 2


async def test_no_webhook_logs_the_alert_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    block = DiscordBlock()
    with caplog.at_level(logging.WARNING, logger="prefect_atlas"):
        delivery = await block.asend("Pipeline broke", "KeyError: 'x'", level=AlertLevel.CRITICAL)
    assert not delivery.delivered and delivery.logged
    assert delivery.reason is not None and "no Discord webhook" in delivery.reason
    assert any(
        "Pipeline broke" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records
    )


async def test_oversized_message_is_trimmed_not_rejected(discord_server: DiscordServer) -> None:
    hook = discord_server.add_webhook()
    block = DiscordBlock(allowed_hosts=["127.0.0.1"], ops=SecretStr(discord_server.url(hook)))
    fields = {f"field {i}": "v" * 2000 for i in range(40)}
    async with block:
        delivery = await block.asend("T" * 500, "D" * 10_000, fields=fields)
    assert delivery.delivered
    embed = hook.received[0]["embeds"][0]
    assert len(embed["title"]) == 256 and embed["title"].endswith(TRUNCATED)
    assert embed["description"].endswith(TRUNCATED)
    assert len(embed["fields"]) <= 25
    assert all(len(f["value"]) <= 1024 for f in embed["fields"])
    assert embed_size(embed) <= 6000
    assert embed["fields"][-1]["name"] == TRUNCATED


async def test_critical_pings_role_only_when_critical(discord_server: DiscordServer) -> None:
    hook = discord_server.add_webhook()
    block = DiscordBlock(
        allowed_hosts=["127.0.0.1"],
        ops=SecretStr(discord_server.url(hook)),
        mention_role_id="123456789012345678",
    )
    async with block:
        await block.asend("calm", level=AlertLevel.WARNING)
        await block.asend("fire", level=AlertLevel.CRITICAL)
    calm, fire = hook.received
    assert "content" not in calm and calm["allowed_mentions"] == {"parse": []}
    assert fire["content"] == "<@&123456789012345678>"
    assert fire["allowed_mentions"]["roles"] == ["123456789012345678"]
    assert fire["embeds"][0]["color"] == AlertLevel.CRITICAL.colour


def test_sync_face_sends(discord_server: DiscordServer) -> None:
    hook = discord_server.add_webhook()
    block = DiscordBlock(allowed_hosts=["127.0.0.1"], ops=SecretStr(discord_server.url(hook)))
    delivery = block.send("from sync code")
    block.close()
    assert isinstance(delivery, Delivery) and delivery.delivered
    assert hook.received[0]["embeds"][0]["title"] == "from sync code"


async def test_token_never_logged_reprd_or_in_errors(
    discord_server: DiscordServer, caplog: pytest.LogCaptureFixture
) -> None:
    live, gone, banned = (discord_server.add_webhook() for _ in range(3))
    discord_server.delete(gone)
    discord_server.set_fault(banned, "ban")
    block = DiscordBlock(
        allowed_hosts=["127.0.0.1"],
        ops=SecretStr(discord_server.url(live)),
        hunt=SecretStr(discord_server.url(gone)),
        surveillance=SecretStr(discord_server.url(banned)),
        fallback_channel=Channel.OPS,
    )
    with caplog.at_level(logging.DEBUG):
        async with block:
            results = [
                await block.asend("a", channel=Channel.OPS),
                await block.asend("b", channel=Channel.HUNT),
                await block.asend("c", channel=Channel.SURVEILLANCE),
            ]
        await DiscordBlock().asend("no webhook at all")
    tokens = [live.token, gone.token, banned.token]
    texts = [r.getMessage() for r in caplog.records] + [str(r.args) for r in caplog.records]
    texts += [
        repr(block),
        str(block),
        block.model_dump_json(),
        *(d.model_dump_json() for d in results),
    ]
    assert len(caplog.records) > 0
    for token in tokens:
        assert not any(token in t for t in texts)
    with pytest.raises(ValidationError) as info:
        DiscordBlock(alerts=SecretStr(f"http://127.0.0.1/not-a-webhook/{live.token}"))
    assert live.token not in str(info.value)
    assert "alerts" in str(info.value)


def test_import_does_not_load_aiohttp() -> None:
    import subprocess
    import sys

    code = "import sys, prefect_atlas; print('aiohttp' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert {"DiscordBlock", "Channel", "AlertLevel", "Delivery"} <= set(prefect_atlas.__all__)


async def test_global_rate_limit_is_waited_out_not_taken_for_a_ban(
    discord_server: DiscordServer,
) -> None:
    hook = discord_server.add_webhook()
    discord_server.set_fault(hook, "global", count=1)
    async with DiscordBlock(
        allowed_hosts=["127.0.0.1"], alerts=SecretStr(discord_server.url(hook))
    ) as discord:
        delivery = await discord.asend("global", "limit", channel=Channel.ALERTS)
    assert delivery.delivered, delivery.reason
    assert delivery.attempts == 2
    assert len(hook.received) == 1
