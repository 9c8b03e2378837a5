"""What becomes of one alert: the webhooks tried in order, the fallback, and the log line.

:func:`deliver` tries the requested channel's webhook, then the fallback's; a webhook that
is gone (401/403/404) is marked dead on the block, one rate limited past the alert's wait
hands the alert on. An alert no webhook took is written to the log in full
(:func:`log_unsent`), so it is never lost, and the ``Delivery`` says why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prefect_atlas import metrics
from prefect_atlas.discord import transport
from prefect_atlas.discord.delivery import Delivery
from prefect_atlas.discord.embeds import FieldsInput, normalize_fields
from prefect_atlas.discord.enums import AlertLevel, Channel
from prefect_atlas.discord.webhooks import parse_webhook_url

if TYPE_CHECKING:
    from prefect_atlas.discord.block import DiscordBlock

logger = logging.getLogger("prefect_atlas.discord")

LoggerLike = logging.Logger | logging.LoggerAdapter[Any]


@dataclass(frozen=True)
class _Alert:
    """One alert on its way: what the caller asked to send, and where to log it if unsent."""

    title: str
    description: str
    level: AlertLevel
    channel: Channel
    fields: FieldsInput
    url: str | None
    log: LoggerLike | None


async def deliver(
    block: DiscordBlock,
    title: str,
    description: str,
    level: AlertLevel,
    channel: Channel,
    fields: FieldsInput,
    url: str | None,
    log: LoggerLike | None,
) -> Delivery:
    """Send one alert through ``block`` within its deadline; never raises (except on
    cancellation)."""
    import asyncio

    alert = _Alert(title, description, AlertLevel(level), Channel(channel), fields, url, log)
    deadline_at = asyncio.get_running_loop().time() + block.deadline
    scope = asyncio.timeout_at(deadline_at)
    try:
        async with scope:
            return await _route(block, alert, deadline_at)
    except TimeoutError:
        if not scope.expired():
            raise  # not ours; handled like any other error below
        reason = f"not delivered within the {block.deadline:g} s deadline"
        return _unsent(block, alert, reason, "deadline")
    except Exception as exc:  # a notification never breaks a pipeline
        reason = block._redact(f"unexpected error while sending: {type(exc).__name__}: {exc}")
        return _unsent(block, alert, reason, "error")


def _unsent(
    block: DiscordBlock,
    alert: _Alert,
    reason: str,
    code: str,
    *,
    used: Channel | None = None,
    attempts: int = 0,
    severity: int = logging.ERROR,
) -> Delivery:
    """Count ``alert`` as failed (metric label ``code``), log it in full, and say so."""
    metrics.ALERTS_FAILED.labels(reason=code).inc()
    log_unsent(
        block,
        alert.log,
        alert.title,
        alert.description,
        alert.level,
        alert.channel,
        reason,
        fields=alert.fields,
        url=alert.url,
        severity=severity,
    )
    return Delivery(
        delivered=False,
        channel=used,
        requested_channel=alert.channel,
        attempts=attempts,
        reason=reason,
        logged=True,
    )


async def _route(block: DiscordBlock, alert: _Alert, deadline_at: float) -> Delivery:
    """Try ``block``'s webhooks for one alert, in route order, before ``deadline_at`` (the loop's
    clock)."""
    channel = alert.channel
    if not block.configured_channels:
        reason = "no Discord webhook is configured on this block; the alert was logged instead"
        # a choice (the demo, a dev machine), not a fault: a warning
        return _unsent(block, alert, reason, "no_webhook", severity=logging.WARNING)

    payload = block.build_payload(
        alert.title, alert.description, level=alert.level, fields=alert.fields, url=alert.url
    )
    attempts = 0
    notes: list[str] = []
    last_channel: Channel | None = None
    rate_limited = False  # the last webhook tried asked for a wait over the cap
    for candidate in block._route(channel):
        last_channel = candidate
        secret = block.webhook(candidate)
        assert secret is not None  # _route yields configured channels only
        try:
            sent = await _post(block, candidate, secret.get_secret_value(), payload, deadline_at)
        except transport.Failed as failed:
            attempts += failed.attempts
            if failed.dead:
                rate_limited = False
                block._dead.add(candidate)
                note = f"the {candidate.value} webhook is gone ({failed.reason}); not used again"
                logger.warning("%s; trying the fallback channel", note)
                notes.append(note)
                metrics.ALERTS_FAILED.labels(reason="dead_webhook").inc()
                continue
            if failed.failover:
                rate_limited = True
                note = f"the {candidate.value} webhook is {failed.reason}"
                logger.warning("%s; trying the fallback channel", note)
                notes.append(note)
                continue
            reason = "; ".join([*notes, failed.reason])
            return _unsent(block, alert, reason, failed.code, used=candidate, attempts=attempts)
        attempts += sent.attempts
        metrics.ALERTS_DELIVERED.labels(channel=candidate.value).inc()
        if candidate != channel:
            notes.append(f"delivered on the fallback channel {candidate.value}")
        return Delivery(
            delivered=True,
            channel=candidate,
            requested_channel=channel,
            attempts=attempts,
            message_id=sent.message_id,
            reason="; ".join(notes) or None,
        )

    if rate_limited:
        reason, code = "; ".join(notes), "rate_limited"
    else:
        missing = (
            f"no live webhook for channel {channel.value} nor the fallback "
            f"{block.fallback_channel.value}"
        )
        reason, code = "; ".join([*notes, missing]), "no_webhook"
    return _unsent(block, alert, reason, code, used=last_channel, attempts=attempts)


async def _post(
    block: DiscordBlock,
    channel: Channel,
    webhook_url: str,
    payload: dict[str, Any],
    deadline_at: float,
) -> transport.Sent:
    """One webhook's tries, on this loop's session and limiter; :class:`transport.Failed` if in
    vain."""
    runtime = block._runtime()
    route = parse_webhook_url(webhook_url, block.allowed_hosts)[
        0
    ]  # the webhook id: Discord's major parameter
    return await transport.post(
        runtime,
        route,
        channel,
        webhook_url,
        payload,
        deadline_at,
        timeout=block.timeout,
        max_attempts=block.max_attempts,
        redact=block._redact,
    )


def log_unsent(
    block: DiscordBlock,
    log: LoggerLike | None,
    title: str,
    description: str,
    level: AlertLevel,
    channel: Channel,
    reason: str,
    *,
    fields: FieldsInput = None,
    url: str | None = None,
    severity: int = logging.ERROR,
) -> None:
    """Write an alert that was not delivered to the log, in full, so it is not lost.

    ERROR when webhooks were configured and none took it (someone must look), WARNING
    when the block has no webhook at all (alerts to the log are then the configuration).
    """
    target = log if log is not None else run_logger()
    target.log(
        severity,
        "Discord alert not delivered (%s) [%s -> #%s] %s",
        block._redact(reason),
        level.value,
        channel.value,
        block._redact(
            alert_text(title, description, fields=fields, url=url, env_tag=block.env_tag)
        ),
    )


def alert_text(
    title: str,
    description: str,
    *,
    fields: FieldsInput = None,
    url: str | None = None,
    env_tag: str = "",
) -> str:
    """The whole alert as plain text (title, description, fields, link) for a log line."""
    lines = [f"{env_tag} {title}".strip() if env_tag else title]
    if description:
        lines.append(description)
    try:
        lines += [f"{f['name']}: {f['value']}" for f in normalize_fields(fields)]
    except Exception:  # fields of an unexpected shape still must not lose the rest
        lines.append(f"fields: {fields!r}")
    if url:
        lines.append(f"link: {url}")
    return "\n".join(lines)


def run_logger() -> LoggerLike:
    """The Prefect run logger inside a flow or task run, else ``prefect_atlas.discord``.

    Imported from ``prefect.logging``, not ``prefect``: the latter loads ``prefect.main``, whose
    import reconfigures logging (``dictConfig``) and drops the handlers the process installed.
    """
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return logger
