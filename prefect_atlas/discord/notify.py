"""The ``NotificationBlock`` face of ``DiscordBlock``: what Prefect automations call.

An Automation's "send notification" action loads the block *on the Prefect server* and awaits
``block.notify(subject=..., body=...)`` inside ``block.raise_on_failure()``. Here that becomes
one :meth:`~prefect_atlas.discord.block.DiscordBlock.asend`: the subject is the embed's title,
the body its description, and the alert takes the block's routing, fallback channel, rate
limiter, trimming and redaction like any other.

A body may end with an *options line* (the Jinja templates of
``prefect-atlas alerts install-automation`` write one)::

    atlas-alert: channel=alerts level=critical run=<flow run id> state=CRASHED url=<ui link>

``channel`` and ``level`` choose where and how loud (default: the alerts channel, WARNING);
``url`` links the title; ``run`` and ``state`` make a dedup key in the alert memory
(:func:`prefect_atlas.hooks.memory.run_key`), the same key the flow hooks claim, so one
failure of one flow run is announced once whether a hook or an automation sees it first.
Lines ``Name: value`` just above the options line become the embed's fields. Without an
options line the body is sent as it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prefect_atlas import metrics
from prefect_atlas.discord.delivery import Delivery
from prefect_atlas.discord.enums import AlertLevel, Channel
from prefect_atlas.discord.sending import logger

if TYPE_CHECKING:
    from prefect_atlas.discord.block import DiscordBlock
    from prefect_atlas.hooks.memory import AlertMemory, Claim, DatabaseAlertMemory

OPTIONS_PREFIX = "atlas-alert:"
DEFAULT_SUBJECT = "Prefect notification"

_FIELD_LINE = re.compile(r"^(?P<name>[A-Za-z][\w ]{0,40}): (?P<value>.*\S.*)$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_STATE = re.compile(r"^[A-Za-z_]{1,32}$")


@dataclass(frozen=True)
class Notice:
    """One notification as the block sends it."""

    title: str
    description: str
    channel: Channel = Channel.ALERTS
    level: AlertLevel = AlertLevel.WARNING
    fields: dict[str, str] = field(default_factory=dict)
    url: str | None = None
    run: str | None = None  # flow run id of the dedup key
    state: str | None = None  # state type of the dedup key (CRASHED, FAILED)


def options_line(
    *,
    channel: Channel | str = Channel.ALERTS,
    level: AlertLevel | str = AlertLevel.CRITICAL,
    run: str | None = None,
    state: str | None = None,
    url: str | None = None,
) -> str:
    """The options line a body ends with (values may be Jinja expressions)."""
    parts = [f"channel={Channel(channel).value}", f"level={AlertLevel(level).value}"]
    parts += [f"{k}={v}" for k, v in (("run", run), ("state", state), ("url", url)) if v]
    return f"{OPTIONS_PREFIX} " + " ".join(parts)


def parse(body: str, subject: str | None) -> Notice:
    """Split a rendered body into the alert's text, fields and options (see the module doc)."""
    title = (subject or "").strip() or DEFAULT_SUBJECT
    lines = (body or "").rstrip().splitlines()
    if not lines or not lines[-1].strip().startswith(OPTIONS_PREFIX):
        return Notice(title=title, description=(body or "").strip())
    options = dict(
        token.split("=", 1)
        for token in lines.pop().strip()[len(OPTIONS_PREFIX) :].split()
        if "=" in token
    )
    fields: dict[str, str] = {}
    while lines and (match := _FIELD_LINE.match(lines[-1].strip())):
        fields[match["name"]] = match["value"].strip()
        lines.pop()
    run = options.get("run", "")
    state = options.get("state", "").upper()
    url = options.get("url", "")
    return Notice(
        title=title,
        description="\n".join(lines).strip(),
        channel=_choice(Channel, options.get("channel"), Channel.ALERTS),
        level=_choice(AlertLevel, options.get("level"), AlertLevel.WARNING),
        fields=dict(reversed(fields.items())),
        url=url if url.startswith(("https://", "http://")) else None,
        run=run if _UUID.match(run) else None,
        state=state if _STATE.match(state) else None,
    )


def _choice(kind: Any, value: str | None, default: Any) -> Any:
    if not value:
        return default
    try:
        return kind(value.lower())
    except ValueError:
        logger.warning("notification option %r is not a valid %s; using %s", value, kind, default)
        return default


async def anotify(block: DiscordBlock, body: str, subject: str | None) -> Delivery:
    """Send one notification through ``block``; dedup on the options' run and state.

    Returns the delivery (or an undelivered one saying it was already announced). Raises
    :class:`prefect.blocks.abstract.NotificationError` for an undelivered alert only while
    the block is in ``raise_on_failure()``, as Prefect's automation action sets it.
    """
    notice = parse(body, subject)
    memory, key, claim = await _claim(notice)
    if claim is not None and not claim.send:
        metrics.ALERTS_SUPPRESSED.inc()
        logger.info(
            "Atlas notification %r suppressed: flow run %s was already announced as %s",
            notice.title,
            notice.run,
            notice.state,
        )
        return Delivery(
            delivered=False,
            requested_channel=notice.channel,
            reason=f"flow run {notice.run} was already announced as {notice.state}",
        )
    delivery = Delivery(delivered=False, requested_channel=notice.channel, reason="not sent")
    try:
        delivery = await block.asend(
            notice.title,
            notice.description,
            level=notice.level,
            channel=notice.channel,
            fields=dict(notice.fields) or None,
            url=notice.url,
        )
    finally:
        if not delivery.delivered and memory is not None and claim is not None:
            await _release(memory, key, claim)
    if not delivery.delivered and getattr(block, "_raise_on_failure", False):
        from prefect.blocks.abstract import NotificationError

        raise NotificationError(log=delivery.reason or "the Discord alert was not delivered")
    return delivery


async def _claim(
    notice: Notice,
) -> tuple[AlertMemory | DatabaseAlertMemory | None, str, Claim | None]:
    """Claim the notice's flow run and state in the alert memory; fail open (None)."""
    if notice.run is None or notice.state is None:
        return None, "", None
    from prefect_atlas.hooks.memory import RUN_DEDUP_WINDOW, default_memory, run_key

    key = run_key(notice.run, notice.state)
    try:
        memory = default_memory()
        claim = await memory.aclaim(key, key, notice.state, RUN_DEDUP_WINDOW)
    except Exception as exc:  # a duplicate is better than a lost alert
        logger.warning(
            "Atlas alert memory unavailable (%s: %s); dedup skipped, the alert is sent anyway",
            type(exc).__name__,
            exc,
        )
        return None, key, None
    return memory, key, claim


async def _release(memory: AlertMemory | DatabaseAlertMemory, key: str, claim: Claim) -> None:
    try:
        await memory.arelease(key, claim)
    except Exception as exc:
        logger.error(
            "Atlas alert memory: the claim of an undelivered alert could not be released (%s)",
            type(exc).__name__,
        )
