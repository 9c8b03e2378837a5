"""Rate-limit values that are garbage or huge, and the total deadline: a Delivery, in time.

A ``retry_after`` of NaN used to make ``asend`` sleep forever, and ``X-RateLimit-Reset-After:
86400`` stalled the next send for a day. Every wait now passes a clamp (NaN and non-numbers
are ignored, negatives are 0, more than 60 s fails over to the fallback channel), and each send
returns within ``deadline``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

import pytest
from pydantic import SecretStr

from prefect_atlas import Channel, DiscordBlock
from prefect_atlas.discord.ratelimit import parse_seconds
from tests.discord._server import DiscordServer

LOCAL = ["127.0.0.1"]
GUARD = 60  # a hang guard; each test asserts its own, tighter, bound


def test_parse_seconds_clamps() -> None:
    assert parse_seconds("nan") is None and parse_seconds(math.nan) is None
    assert parse_seconds("inf") is None and parse_seconds("-inf") is None
    assert (
        parse_seconds("soon") is None
        and parse_seconds(None) is None
        and parse_seconds(True) is None
    )
    assert parse_seconds("-3") == 0.0 and parse_seconds(-0.5) == 0.0
    assert parse_seconds("1.25") == 1.25 and parse_seconds(86400) == 86400.0


@pytest.mark.parametrize(
    ("body", "header", "max_seconds"),
    [
        ("nan", None, 3.0),  # body string "nan", no Retry-After: the 1 s default
        (
            math.nan,
            "nan",
            3.0,
        ),  # a bare NaN makes the JSON body unreadable; Retry-After is "nan" too
        ("soon", "later", 3.0),  # non-numeric both
        (-5, "-5", 1.5),  # negative: now
    ],
)
async def test_garbage_retry_after_is_clamped_and_delivered(
    discord_server: DiscordServer, body: object, header: str | None, max_seconds: float
) -> None:
    hook = discord_server.add_webhook()
    discord_server.set_fault(hook, "429", count=1, retry_after=body, retry_after_header=header)
    started = time.monotonic()
    async with DiscordBlock(
        ops=SecretStr(discord_server.url(hook)), allowed_hosts=LOCAL, deadline=10
    ) as block:
        delivery = await asyncio.wait_for(block.asend("x"), GUARD)
    elapsed = time.monotonic() - started
    assert delivery.delivered, delivery.reason
    assert delivery.attempts == 2 and hook.requests == 2 and len(hook.received) == 1
    assert elapsed < max_seconds, elapsed


async def test_huge_retry_after_fails_over_to_the_fallback_at_once(
    discord_server: DiscordServer,
) -> None:
    primary, fallback = discord_server.add_webhook(), discord_server.add_webhook()
    discord_server.set_fault(primary, "429", retry_after=86400, retry_after_header="86400")
    block = DiscordBlock(
        hunt=SecretStr(discord_server.url(primary)),
        alerts=SecretStr(discord_server.url(fallback)),
        allowed_hosts=LOCAL,
    )
    started = time.monotonic()
    async with block:
        first = await asyncio.wait_for(block.asend("a", channel=Channel.HUNT), GUARD)
        second = await asyncio.wait_for(block.asend("b", channel=Channel.HUNT), GUARD)
    assert time.monotonic() - started < 3.0
    assert first.delivered and first.channel is Channel.ALERTS and first.used_fallback
    assert first.reason is not None and "rate limited" in first.reason
    assert second.delivered and second.channel is Channel.ALERTS
    assert primary.requests == 1  # the second alert did not ask the limited webhook again
    assert len(fallback.received) == 2
    assert block.dead_channels == frozenset()  # rate limited is not deleted


async def test_huge_retry_after_without_fallback_is_logged_at_error(
    discord_server: DiscordServer, caplog: pytest.LogCaptureFixture
) -> None:
    hook = discord_server.add_webhook()
    discord_server.set_fault(hook, "429", retry_after=86400)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="prefect_atlas"):
        async with DiscordBlock(
            alerts=SecretStr(discord_server.url(hook)), allowed_hosts=LOCAL
        ) as block:
            delivery = await asyncio.wait_for(
                block.asend(
                    "Ingest broke",
                    "KeyError: 'x'",
                    channel=Channel.ALERTS,
                    fields={"Run": "brave-fox"},
                ),
                GUARD,
            )
    assert time.monotonic() - started < 3.0
    assert not delivery.delivered and delivery.logged and delivery.attempts == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert (
        "Ingest broke" in errors[0]
        and "KeyError: 'x'" in errors[0]
        and "Run: brave-fox" in errors[0]
    )
    assert hook.token not in errors[0]


@pytest.mark.parametrize("reset_after", ["86400", "1e9", "inf"])
async def test_huge_reset_after_header_does_not_stall_the_next_send(
    discord_server: DiscordServer, reset_after: str
) -> None:
    primary, fallback = discord_server.add_webhook(), discord_server.add_webhook()
    primary.reset_after_header = reset_after
    block = DiscordBlock(
        ops=SecretStr(discord_server.url(primary)),
        alerts=SecretStr(discord_server.url(fallback)),
        allowed_hosts=LOCAL,
        deadline=10,
    )
    started = time.monotonic()
    async with block:
        first = await asyncio.wait_for(block.asend("1"), GUARD)
        second = await asyncio.wait_for(block.asend("2"), GUARD)
    assert time.monotonic() - started < 3.0
    assert first.delivered and first.channel is Channel.OPS
    if reset_after == "inf":  # not a finite number: ignored, the next send goes
        assert second.delivered and second.channel is Channel.OPS
        assert len(primary.received) == 2 and fallback.requests == 0
    else:
        assert second.delivered and second.channel is Channel.ALERTS
        assert primary.requests == 1 and len(fallback.received) == 1


@pytest.mark.parametrize("reset_after", ["nan", "-3", "soon"])
async def test_garbage_reset_after_header_is_ignored(
    discord_server: DiscordServer, reset_after: str
) -> None:
    hook = discord_server.add_webhook()
    hook.reset_after_header = reset_after
    started = time.monotonic()
    async with DiscordBlock(
        ops=SecretStr(discord_server.url(hook)), allowed_hosts=LOCAL, deadline=10
    ) as block:
        deliveries = [await asyncio.wait_for(block.asend(str(i)), GUARD) for i in range(3)]
    assert time.monotonic() - started < 3.0
    assert all(d.delivered and d.attempts == 1 for d in deliveries)
    assert len(hook.received) == 3 and hook.rate_limited == 0


async def test_every_send_returns_within_its_deadline(
    discord_server: DiscordServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A webhook that never answers, a long per-request timeout: the deadline still holds."""
    hook = discord_server.add_webhook()
    discord_server.set_fault(hook, "timeout")
    block = DiscordBlock(
        ops=SecretStr(discord_server.url(hook)),
        allowed_hosts=LOCAL,
        timeout=20,
        max_attempts=5,
        deadline=1.5,
    )
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="prefect_atlas"):
        async with block:
            deliveries = await asyncio.wait_for(
                asyncio.gather(*(block.asend(f"late {i}") for i in range(3))), GUARD
            )
    elapsed = time.monotonic() - started
    assert 1.4 < elapsed < 2.5, elapsed
    assert all(not d.delivered and d.logged for d in deliveries)
    assert all(d.reason is not None and "1.5 s deadline" in d.reason for d in deliveries)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert sorted(m.rsplit(" ", 1)[-1] for m in errors) == ["0", "1", "2"]
