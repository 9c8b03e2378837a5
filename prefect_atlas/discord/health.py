"""The Discord health check: whether each configured webhook is live, without posting."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prefect_atlas._health import Health
from prefect_atlas.discord.transport import DEAD_STATUS
from prefect_atlas.discord.webhooks import parse_webhook_url

if TYPE_CHECKING:
    from prefect_atlas.discord.block import DiscordBlock


class DiscordHealth(Health):
    """Whether each configured webhook is live (``channels`` maps channel to state)."""

    channels: dict[str, str]


async def check_webhooks(block: DiscordBlock) -> DiscordHealth:
    """Check every webhook ``block`` configures, without posting a message.

    Discord's "get webhook with token" (a GET on the webhook URL) proves the URL and
    token are live; it shares the webhook's rate-limit bucket, so it goes through the
    same limiter as messages. Never raises: the report says which channel is down.
    """
    import aiohttp

    channels = block.configured_channels
    if not channels:
        return DiscordHealth(
            ok=True, detail="no webhook configured: alerts go to the Prefect log", channels={}
        )
    import time

    started = time.perf_counter()
    runtime = block._runtime()
    await runtime.close_with_loop()
    states: dict[str, str] = {}
    for channel in channels:
        secret = block.webhook(channel)
        assert secret is not None  # configured_channels lists only channels with a webhook
        url = secret.get_secret_value()
        route = parse_webhook_url(url, block.allowed_hosts)[0]
        try:
            async with runtime.limiter.slot(route) as turn:
                async with runtime.session.get(
                    url, timeout=aiohttp.ClientTimeout(total=block.timeout)
                ) as response:
                    status = response.status
                    turn.update(response.headers)
        except TimeoutError:
            states[channel.value] = f"no answer within {block.timeout:g} s"
            continue
        except aiohttp.ClientError as exc:
            states[channel.value] = f"unreachable ({type(exc).__name__})"
            continue
        if 200 <= status < 300:
            states[channel.value] = "ok"
        else:
            dead = DEAD_STATUS.get(status)
            states[channel.value] = dead[1] if dead else f"HTTP {status}"
    down = {name: state for name, state in states.items() if state != "ok"}
    detail = ", ".join(f"{name}: {state}" for name, state in states.items())
    latency_ms = round((time.perf_counter() - started) * 1000, 3)
    return DiscordHealth(ok=not down, latency_ms=latency_ms, detail=detail, channels=states)
