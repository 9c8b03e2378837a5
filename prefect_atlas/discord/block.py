"""``DiscordBlock``: Atlas alerts to Discord webhooks that arrive, once, or say why not.

Configuration (the webhook URLs, one per channel) lives in the block and is saved in
Prefect; runtime state lives beside it and is never saved, copied or pickled: one aiohttp
session and one rate limiter per event loop (both bind to the loop that created them), and
the set of webhooks found dead (404) during this block's life. With ``state_database`` the
limiter keeps Discord's budget in the Atlas database instead, shared by every process.

Webhook URLs are credentials: the token in their path posts to the channel. So a URL is only
accepted when it sends the token to Discord (or to a host the block lists in
``allowed_hosts``), and no log line, repr or error ever quotes it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Self

from prefect.blocks.core import Block
from pydantic import (
    ConfigDict,
    Field,
    HttpUrl,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)

from prefect_atlas import _runtime, metrics
from prefect_atlas._blocks import docs_url, logo_url
from prefect_atlas._dispatch import sync_or_await
from prefect_atlas._health import Health
from prefect_atlas._loops import PerLoop
from prefect_atlas._redact import redact_text, redact_tree
from prefect_atlas._retry import MAX_RETRY_AFTER, arun, parse_seconds
from prefect_atlas.database.block import DatabaseBlock
from prefect_atlas.discord.delivery import Delivery
from prefect_atlas.discord.embeds import (
    CONTENT_LIMIT,
    USERNAME_LIMIT,
    FieldsInput,
    build_embed,
    normalize_fields,
    trim,
)
from prefect_atlas.discord.enums import AlertLevel, Channel
from prefect_atlas.discord.ratelimit import (
    RateLimiter,
    Turn,
    WaitTooLong,
)

if TYPE_CHECKING:
    import aiohttp

logger = logging.getLogger("prefect_atlas.discord")

LoggerLike = logging.Logger | logging.LoggerAdapter[Any]

# Discord's own webhook hosts. A webhook URL is a credential (its token posts to the channel),
# so it is only ever sent to these, unless the block lists another host in ``allowed_hosts``.
DISCORD_HOSTS = frozenset(
    f"{prefix}{domain}" for prefix in ("", "ptb.", "canary.") for domain in ("discord.com", "discordapp.com")
)

# The documented path: /api/webhooks/<numeric id>/<token>, optionally /api/v<N>/webhooks/...
# ASCII classes and \Z on purpose: \d matches other scripts' digits and $ matches before "\n".
_WEBHOOK_PATH = re.compile(
    r"/api(?:/v[0-9]{1,3})?/webhooks/(?P<id>[0-9]{1,25})/(?P<token>[A-Za-z0-9_.\-]{1,200})/?\Z"
)
_THREAD_QUERY = re.compile(r"thread_id=[0-9]{1,25}\Z")
_HOST_ENTRY = re.compile(r"[a-z0-9.\-]{1,253}\Z|\[?[0-9a-f:.]{2,45}\]?\Z")


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def normalize_host(entry: str) -> str:
    """An ``allowed_hosts`` entry as compared with URLs: lower case, no IPv6 brackets."""
    return entry.strip().lower().strip("[]")


def check_webhook_url(url: str, allowed_hosts: Iterable[str] = ()) -> tuple[str, str]:
    """``(webhook_id, token)`` of a webhook URL that may be trusted with the token.

    Raises ValueError saying what is wrong and never quoting the token or a password:
    https only; a Discord host (``discord.com``, ``discordapp.com``, ``ptb.``/``canary.``),
    or one listed in ``allowed_hosts`` (plain http only for a listed loopback host, such as
    a local test server); no ``user:password@``; the documented path.
    """
    from urllib.parse import urlsplit

    allowed = {normalize_host(h) for h in allowed_hosts}
    text = url.strip()
    try:
        parts = urlsplit(text)
        host = (parts.hostname or "").lower()
        port = parts.port
    except ValueError:
        raise ValueError("it is not a URL (https://discord.com/api/webhooks/ID/TOKEN)") from None
    if any(ch.isspace() or ord(ch) < 0x20 for ch in text):
        raise ValueError("it contains whitespace or control characters")
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not host:
        raise ValueError("it is not an https URL (https://discord.com/api/webhooks/ID/TOKEN)")
    if "@" in parts.netloc:
        raise ValueError("it carries a user name or password before the host (user:password@); remove them")
    if host not in DISCORD_HOSTS and host not in allowed:
        raise ValueError(
            f"host {host!r} is not Discord's (discord.com, discordapp.com and their ptb./canary. "
            "variants); for a proxy or a test server, list the host in `allowed_hosts`"
        )
    if scheme == "http" and not (host in allowed and _is_loopback(host)):
        raise ValueError(
            "it uses plain http, which would send the token unencrypted: use https "
            "(plain http is accepted only for a loopback host listed in `allowed_hosts`)"
        )
    if host in DISCORD_HOSTS and host not in allowed and port not in (None, 443):
        raise ValueError(f"Discord webhooks use the https port 443, not {port}")
    match = _WEBHOOK_PATH.match(parts.path)
    if match is None:
        raise ValueError("its path is not /api/webhooks/ID/TOKEN (ID is numeric)")
    if parts.fragment or (parts.query and not _THREAD_QUERY.match(parts.query)):
        raise ValueError("it carries a query or fragment other than ?thread_id=ID")
    return match["id"], match["token"]


def parse_webhook_url(url: str, allowed_hosts: Iterable[str] = ()) -> tuple[str, str]:
    """``(webhook_id, token)`` of a Discord webhook URL; ValueError (without the URL) if not trusted.

    The same rules as :func:`check_webhook_url`.
    """
    return check_webhook_url(url, allowed_hosts)


def _split_webhook_url(url: str) -> tuple[str, str] | None:
    """``(id, token)`` from the path alone, for redaction (a URL already validated, or not)."""
    from urllib.parse import urlsplit

    try:
        match = _WEBHOOK_PATH.match(urlsplit(url.strip()).path)
    except ValueError:
        return None
    return (match["id"], match["token"]) if match else None


# ---------------------------------------------------------------------------- errors of one try


class _Transient(Exception):
    """Worth another try: 5xx, timeout, connection error, or a 429 with ``retry_after``."""

    def __init__(self, reason: str, backoff: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.backoff = backoff


class _Permanent(Exception):
    """Not worth another try on this webhook; ``dead`` means never use it again,
    ``failover`` that the fallback channel may still take this alert."""

    def __init__(self, reason: str, *, code: str, dead: bool = False, failover: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.dead = dead
        self.failover = failover


def _retry_on(exc: BaseException) -> bool | float:
    """Discord's classifier: retry transient faults (with the 429's own wait), never permanent."""
    if isinstance(exc, _Transient):
        return exc.backoff if exc.backoff is not None else True
    return False


@dataclass
class _Sent:
    message_id: str | None
    attempts: int


class _Failed(Exception):
    def __init__(self, reason: str, *, code: str, attempts: int, dead: bool = False, failover: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.attempts = attempts
        self.dead = dead
        self.failover = failover


# Answers that kill a webhook for good: the delivery code, and the state a health check reports.
_DEAD_STATUS = {
    401: ("unauthorized", "token rejected (401)"),
    403: ("forbidden", "forbidden (403)"),
    404: ("webhook_deleted", "webhook deleted (404)"),
}


# ---------------------------------------------------------------------------- per-loop runtime


@dataclass(eq=False)
class _LoopRuntime:
    """One aiohttp session and rate limiter per event loop (in a ``PerLoop``)."""

    session: aiohttp.ClientSession
    limiter: RateLimiter


def _new_runtime(previous: _LoopRuntime | None, state_database: DatabaseBlock | str | None = None) -> _LoopRuntime:
    import aiohttp  # lazily: `import prefect_atlas` does not pay for aiohttp

    # a closed session is replaced, but what the limiter learned is kept
    if previous is not None:
        limiter = previous.limiter
    elif state_database is not None:
        from prefect_atlas.discord.shared_limits import SharedRateLimiter

        limiter = SharedRateLimiter(state_database)
    else:
        limiter = RateLimiter()
    return _LoopRuntime(session=aiohttp.ClientSession(raise_for_status=False), limiter=limiter)


def _live(runtime: _LoopRuntime) -> bool:
    return not runtime.session.closed


# ---------------------------------------------------------------------------- the block


class DiscordHealth(Health):
    """Whether each configured webhook is live (``channels`` maps channel to state)."""

    channels: dict[str, str]



class DiscordBlock(Block):
    """Discord webhooks for Atlas alerts, one per channel, with rate limits honoured.

    ``asend`` posts an embed and returns a ``Delivery``; it never raises into a pipeline.
    A channel without a webhook uses ``fallback_channel``; a webhook Discord deleted (404)
    is skipped for the rest of the block's life. With no webhook configured at all, alerts
    go to the run logger with a warning.

    Example:
        Send an alert from a flow:
        ```python
        from prefect_atlas import AlertLevel, Channel, DiscordBlock

        discord = DiscordBlock.load("BLOCK_NAME")
        delivery = discord.send("Ingest stalled", "No new video for 2 h", level=AlertLevel.WARNING,
                                channel=Channel.OPS)
        ```

        In async code:
        ```python
        from prefect_atlas import DiscordBlock

        discord = await DiscordBlock.aload("BLOCK_NAME")
        async with discord:
            delivery = await discord.asend("Hunt finished", "42 new videos")
        ```
    """

    _block_type_name: ClassVar[str] = "Atlas Discord"
    _block_type_slug: ClassVar[str] = "atlas-discord"
    _logo_url: ClassVar[HttpUrl | None] = logo_url("atlas-discord.png")
    _documentation_url: ClassVar[HttpUrl | None] = docs_url("alerts.md")
    _description: ClassVar[str] = (
        "Discord webhooks for Atlas alerts: one per channel, rate limits honoured, "
        "fallback routing, and a delivery report for every message."
    )

    # Validation errors must not echo the input: a webhook URL is a credential.
    model_config = ConfigDict(hide_input_in_errors=True)

    alerts: SecretStr | None = Field(
        default=None,
        title="Alerts webhook URL",
        description="Webhook URL of the alerts channel (pipeline failures), https://discord.com/api/webhooks/ID/TOKEN.",
    )
    hunt: SecretStr | None = Field(
        default=None, title="Hunt webhook URL", description="Webhook URL of the hunt channel (new findings)."
    )
    surveillance: SecretStr | None = Field(
        default=None,
        title="Surveillance webhook URL",
        description="Webhook URL of the surveillance channel (watched channels' activity).",
    )
    ops: SecretStr | None = Field(
        default=None, title="Ops webhook URL", description="Webhook URL of the ops channel (routine job reports)."
    )
    env_tag: str = Field(
        default="",
        max_length=32,
        title="Environment tag",
        description="Prefix of every title, such as [prod], so alerts from several environments are told apart.",
    )
    username: str = Field(
        default="Atlas",
        min_length=1,
        max_length=USERNAME_LIMIT,
        title="Username",
        description="Name the messages are posted under.",
    )
    fallback_channel: Channel = Field(
        default=Channel.ALERTS,
        title="Fallback channel",
        description="Channel used when the requested one has no webhook or its webhook was deleted.",
    )
    mention_role_id: str | None = Field(
        default=None,
        pattern=r"^\d{5,25}$",
        title="Role to mention",
        description="Discord role id pinged on CRITICAL alerts only; other alerts ping no one.",
    )
    timeout: float = Field(
        default=10.0, gt=0, le=300, title="Timeout (s)", description="Seconds to wait for Discord's answer to one request."
    )
    max_attempts: int = Field(
        default=5,
        ge=1,
        le=20,
        title="Maximum attempts",
        description="Requests per webhook for one alert before giving up (429s, 5xx and timeouts are retried).",
    )
    deadline: float = Field(
        default=120.0,
        gt=0,
        le=3600,
        title="Deadline (s)",
        description=(
            "Seconds one alert may take in all (waits for rate limits, retries, fallback channel); "
            "past it the alert is logged and reported undelivered instead of holding the pipeline."
        ),
    )
    state_database: DatabaseBlock | None = Field(
        default=None,
        title="Shared rate-limit database",
        description=(
            "Atlas database that keeps Discord's rate-limit budget for every process and host posting "
            "to these webhooks (no 429s when several workers alert at once). Empty: the database named "
            "by ATLAS_ALERT_MEMORY_DATABASE if set, else each process keeps its own budget."
        ),
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        title="Other allowed hosts",
        description=(
            "Hosts other than Discord's that may receive the webhook URLs, such as an egress proxy or a "
            "test server. Empty (the default) accepts only https on discord.com, discordapp.com and "
            "their ptb./canary. variants; plain http is accepted only for loopback hosts listed here."
        ),
    )

    _dead: set[Channel] = PrivateAttr(default_factory=set)

    # ------------------------------------------------------------------ validation

    @field_validator("alerts", "hunt", "surveillance", "ops", mode="after")
    @classmethod
    def _strip_webhook(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        return SecretStr(value.get_secret_value().strip())

    @field_validator("allowed_hosts", mode="after")
    @classmethod
    def _check_allowed_hosts(cls, value: list[str]) -> list[str]:
        hosts: list[str] = []
        for index, entry in enumerate(value):
            host = normalize_host(entry)
            if not _HOST_ENTRY.match(host):
                raise ValueError(
                    f"`allowed_hosts[{index}]` must be a bare host name or IP address such as "
                    "proxy.example.com or 127.0.0.1 (no scheme, port, path or credentials)"
                )
            hosts.append(host)
        return hosts

    @model_validator(mode="after")
    def _check_webhooks(self) -> Self:
        # After every field, because the rules depend on `allowed_hosts`.
        for channel in Channel:
            secret = self.webhook(channel)
            if secret is None:
                continue
            try:
                check_webhook_url(secret.get_secret_value(), self.allowed_hosts)
            except ValueError as exc:
                raise ValueError(
                    f"`{channel.value}` is not a trusted Discord webhook URL: {exc}. Copy it from the "
                    "channel's Integrations > Webhooks > Copy Webhook URL "
                    "(https://discord.com/api/webhooks/ID/TOKEN), or leave the field empty"
                ) from None
        return self

    @field_validator("env_tag", mode="after")
    @classmethod
    def _strip_tag(cls, value: str) -> str:
        return value.strip()

    # ------------------------------------------------------------------ description

    def webhook(self, channel: Channel) -> SecretStr | None:
        """The webhook URL configured for ``channel`` (None when empty)."""
        value: SecretStr | None = getattr(self, Channel(channel).value)
        return value

    @property
    def configured_channels(self) -> list[Channel]:
        """Channels that have a webhook URL."""
        return [c for c in Channel if self.webhook(c) is not None]

    @property
    def dead_channels(self) -> frozenset[Channel]:
        """Channels whose webhook Discord reported deleted during this block's life."""
        return frozenset(self._dead)

    def _secrets(self) -> list[str]:
        secrets: list[str] = []
        for channel in Channel:
            url = self.webhook(channel)
            if url is not None:
                raw = url.get_secret_value()
                secrets.append(raw)
                split = _split_webhook_url(raw)
                if split is not None:
                    secrets.append(split[1])
        return secrets

    def _redact(self, text: str) -> str:
        return redact_text(text, self._secrets())

    def _route(self, channel: Channel) -> Iterator[Channel]:
        """The channels to try, in order: the one asked for, then the fallback."""
        seen: set[Channel] = set()
        for candidate in (channel, self.fallback_channel):
            if candidate in seen:
                continue
            seen.add(candidate)
            if self.webhook(candidate) is not None and candidate not in self._dead:
                yield candidate

    # ------------------------------------------------------------------ payload

    def build_payload(
        self,
        title: str,
        description: str = "",
        *,
        level: AlertLevel = AlertLevel.INFO,
        fields: FieldsInput = None,
        url: str | None = None,
    ) -> dict[str, Any]:
        """The JSON body posted to the webhook, trimmed to Discord's limits.

        Every string is redacted first (URL passwords, query-string keys and tokens, webhook
        tokens, this block's own secrets): alert texts are built from exception messages,
        which often quote the URL that failed.
        """
        full_title = f"{self.env_tag} {title}" if self.env_tag else title
        embed = build_embed(full_title, description, level=level, fields=fields, url=url)
        payload: dict[str, Any] = {
            "username": trim(self.username, USERNAME_LIMIT),
            "embeds": [redact_tree(embed, self._secrets())],
            "allowed_mentions": {"parse": []},
        }
        if level is AlertLevel.CRITICAL and self.mention_role_id:
            payload["content"] = trim(f"<@&{self.mention_role_id}>", CONTENT_LIMIT)
            payload["allowed_mentions"] = {"parse": [], "roles": [self.mention_role_id]}
        return payload

    # ------------------------------------------------------------------ sending

    async def asend(
        self,
        title: str,
        description: str = "",
        *,
        level: AlertLevel = AlertLevel.INFO,
        channel: Channel = Channel.OPS,
        fields: FieldsInput = None,
        url: str | None = None,
        log: LoggerLike | None = None,
    ) -> Delivery:
        """Post one alert; return what became of it. Never raises (except on cancellation).

        ``log`` is where an alert that cannot be sent is written (default: the Prefect run
        logger when called inside a run, else the ``prefect_atlas.discord`` logger).
        """
        import asyncio

        level, channel = AlertLevel(level), Channel(channel)
        deadline_at = asyncio.get_running_loop().time() + self.deadline
        scope = asyncio.timeout_at(deadline_at)
        try:
            async with scope:
                return await self._asend(title, description, level, channel, fields, url, log, deadline_at)
        except TimeoutError:
            if not scope.expired():
                raise  # not ours; handled like any other error below
            reason = f"not delivered within the {self.deadline:g} s deadline"
            metrics.ALERTS_FAILED.labels(reason="deadline").inc()
            self._log_unsent(log, title, description, level, channel, reason, fields=fields, url=url)
            return Delivery(delivered=False, requested_channel=channel, reason=reason, logged=True)
        except Exception as exc:  # a notification never breaks a pipeline
            reason = self._redact(f"unexpected error while sending: {type(exc).__name__}: {exc}")
            metrics.ALERTS_FAILED.labels(reason="error").inc()
            self._log_unsent(log, title, description, level, channel, reason, fields=fields, url=url)
            return Delivery(delivered=False, requested_channel=channel, reason=reason, logged=True)

    def send(
        self,
        title: str,
        description: str = "",
        *,
        level: AlertLevel = AlertLevel.INFO,
        channel: Channel = Channel.OPS,
        fields: FieldsInput = None,
        url: str | None = None,
        log: LoggerLike | None = None,
    ) -> Delivery:
        """Sync face of :meth:`asend` (returns the coroutine in async code)."""
        return sync_or_await(
            self.asend(title, description, level=level, channel=channel, fields=fields, url=url, log=log)
        )

    async def _asend(
        self,
        title: str,
        description: str,
        level: AlertLevel,
        channel: Channel,
        fields: FieldsInput,
        url: str | None,
        log: LoggerLike | None,
        deadline_at: float,
    ) -> Delivery:
        if not self.configured_channels:
            reason = "no Discord webhook is configured on this block; the alert was logged instead"
            metrics.ALERTS_FAILED.labels(reason="no_webhook").inc()
            # a choice (the demo, a dev machine), not a fault: a warning
            self._log_unsent(log, title, description, level, channel, reason, fields=fields, url=url,
                             severity=logging.WARNING)
            return Delivery(delivered=False, requested_channel=channel, reason=reason, logged=True)

        payload = self.build_payload(title, description, level=level, fields=fields, url=url)
        attempts = 0
        notes: list[str] = []
        last_channel: Channel | None = None
        rate_limited = False  # the last webhook tried asked for a wait over the cap
        for candidate in self._route(channel):
            last_channel = candidate
            secret = self.webhook(candidate)
            assert secret is not None  # _route yields configured channels only
            try:
                sent = await self._post(candidate, secret.get_secret_value(), payload, deadline_at)
            except _Failed as failed:
                attempts += failed.attempts
                if failed.dead:
                    rate_limited = False
                    self._dead.add(candidate)
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
                metrics.ALERTS_FAILED.labels(reason=failed.code).inc()
                self._log_unsent(log, title, description, level, channel, reason, fields=fields, url=url)
                return Delivery(
                    delivered=False,
                    channel=candidate,
                    requested_channel=channel,
                    attempts=attempts,
                    reason=reason,
                    logged=True,
                )
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
            missing = f"no live webhook for channel {channel.value} nor the fallback {self.fallback_channel.value}"
            reason, code = "; ".join([*notes, missing]), "no_webhook"
        metrics.ALERTS_FAILED.labels(reason=code).inc()
        self._log_unsent(log, title, description, level, channel, reason, fields=fields, url=url)
        return Delivery(
            delivered=False,
            channel=last_channel,
            requested_channel=channel,
            attempts=attempts,
            reason=reason,
            logged=True,
        )

    async def _post(self, channel: Channel, webhook_url: str, payload: dict[str, Any], deadline_at: float) -> _Sent:
        """POST to one webhook with retries: 429 waits ``retry_after``, 5xx/timeouts back off."""
        runtime = self._runtime()
        route = parse_webhook_url(webhook_url, self.allowed_hosts)[0]  # the webhook id: Discord's major parameter
        attempts = 0

        async def attempt() -> str | None:
            nonlocal attempts
            attempts += 1
            return await self._attempt(runtime, route, channel, webhook_url, payload, deadline_at)

        try:
            message_id = await arun(
                attempt,
                classify=_retry_on,
                attempts=self.max_attempts,
                timeout=None,
                wait_initial=0.5,
                wait_max=10.0,
                wait_jitter=1.0,
            )
        except _Transient as exc:
            raise _Failed(
                f"gave up on the {channel.value} webhook after {attempts} attempt(s): {exc.reason}",
                code="attempts_exhausted",
                attempts=attempts,
            ) from None
        except _Permanent as exc:
            raise _Failed(exc.reason, code=exc.code, attempts=attempts, dead=exc.dead, failover=exc.failover) from None
        return _Sent(message_id=message_id, attempts=attempts)

    async def _attempt(
        self,
        runtime: _LoopRuntime,
        route: str,
        channel: Channel,
        webhook_url: str,
        payload: dict[str, Any],
        deadline_at: float,
    ) -> str | None:
        import asyncio

        limiter = runtime.limiter
        # Never wait longer than the cap, nor past this alert's deadline: the fallback may take it.
        max_wait = min(MAX_RETRY_AFTER, max(0.0, deadline_at - asyncio.get_running_loop().time()))
        try:
            async with limiter.slot(route, max_wait=max_wait) as turn:
                return await self._request(runtime, turn, webhook_url, payload, max_wait)
        except WaitTooLong as exc:
            raise _Permanent(
                f"rate limited: the bucket is empty for another {exc.wait:.0f} s (over the "
                f"{max_wait:.0f} s this alert may wait)",
                code="rate_limited",
                failover=True,
            ) from None

    async def _request(
        self, runtime: _LoopRuntime, turn: Turn, webhook_url: str, payload: dict[str, Any], max_wait: float
    ) -> str | None:
        """One POST, inside the route's turn; the answer's headers teach the limiter."""
        import aiohttp

        try:
            async with runtime.session.post(
                webhook_url,
                params={"wait": "true"},
                json=payload,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as response:
                status = response.status
                headers = response.headers
                body = await response.read()
        except TimeoutError:
            raise _Transient(f"no answer within {self.timeout:g} s") from None
        except aiohttp.ClientError as exc:
            raise _Transient(f"connection error ({type(exc).__name__})") from None
        has_limits = turn.update(headers)
        data = _json(body)
        if status == 429:
            # NaN, negative, non-numeric or missing: 1 s; negatives are "now" (0 s).
            parsed = parse_seconds(data.get("retry_after"))
            if parsed is None:
                parsed = parse_seconds(headers.get("Retry-After"))
            retry_after = 1.0 if parsed is None else parsed
            is_global = bool(data.get("global")) or headers.get("X-RateLimit-Global", "").lower() == "true"
            # Discord's own 429s carry bucket headers, or (global limit) a JSON body with
            # retry_after and X-RateLimit-Global/Scope. A 429 with neither is Cloudflare's
            # ban page: retrying would only extend the ban.
            from_discord = has_limits or "retry_after" in data or "X-RateLimit-Scope" in headers
            if not from_discord:
                raise _Permanent(
                    "Discord answered 429 without rate-limit headers (a Cloudflare ban of this IP); "
                    "stopped at once instead of retrying, which would extend the ban",
                    code="banned",
                )
            if retry_after > max_wait:
                turn.penalize(retry_after, is_global=is_global)
                raise _Permanent(
                    f"rate limited for {retry_after:g} s (over the {max_wait:.0f} s this alert may wait); "
                    "not waiting that long",
                    code="rate_limited",
                    failover=True,
                )
            turn.penalize(retry_after, is_global=is_global)
            raise _Transient(f"rate limited (429, retry_after {retry_after:g} s)", backoff=retry_after)

        if 200 <= status < 300:
            message_id = data.get("id")
            return str(message_id) if message_id is not None else None
        message = self._redact(str(data.get("message") or "")[:200])
        detail = f"{status} {message}".strip()
        if status in _DEAD_STATUS:
            raise _Permanent(f"Discord answered {detail}", code=_DEAD_STATUS[status][0], dead=True)
        if status >= 500:
            raise _Transient(f"Discord answered {detail}")
        raise _Permanent(f"Discord rejected the message: {detail}", code="rejected")

    # ------------------------------------------------------------------ logging fallback

    def _log_unsent(
        self,
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
        target = log if log is not None else _run_logger()
        target.log(
            severity,
            "Discord alert not delivered (%s) [%s -> #%s] %s",
            self._redact(reason),
            level.value,
            channel.value,
            self._redact(alert_text(title, description, fields=fields, url=url, env_tag=self.env_tag)),
        )

    # ------------------------------------------------------------------ health

    async def ahealth(self) -> DiscordHealth:
        """Check every configured webhook without posting a message.

        Discord's "get webhook with token" (a GET on the webhook URL) proves the URL and
        token are live; it shares the webhook's rate-limit bucket, so it goes through the
        same limiter as messages. Never raises: the report says which channel is down.
        """
        import aiohttp

        channels = self.configured_channels
        if not channels:
            return DiscordHealth(ok=True, detail="no webhook configured: alerts go to the Prefect log", channels={})
        import time

        started = time.perf_counter()
        runtime = self._runtime()
        states: dict[str, str] = {}
        for channel in channels:
            secret = self.webhook(channel)
            assert secret is not None  # configured_channels lists only channels with a webhook
            url = secret.get_secret_value()
            route = parse_webhook_url(url, self.allowed_hosts)[0]
            try:
                async with runtime.limiter.slot(route) as turn:
                    async with runtime.session.get(url, timeout=aiohttp.ClientTimeout(total=self.timeout)) as response:
                        status = response.status
                        turn.update(response.headers)
            except TimeoutError:
                states[channel.value] = f"no answer within {self.timeout:g} s"
                continue
            except aiohttp.ClientError as exc:
                states[channel.value] = f"unreachable ({type(exc).__name__})"
                continue
            if 200 <= status < 300:
                states[channel.value] = "ok"
            else:
                dead = _DEAD_STATUS.get(status)
                states[channel.value] = dead[1] if dead else f"HTTP {status}"
        down = {name: state for name, state in states.items() if state != "ok"}
        detail = ", ".join(f"{name}: {state}" for name, state in states.items())
        latency_ms = round((time.perf_counter() - started) * 1000, 3)
        return DiscordHealth(ok=not down, latency_ms=latency_ms, detail=detail, channels=states)

    def health(self) -> DiscordHealth:
        """Sync face of :meth:`ahealth` (awaitable in async code)."""
        return sync_or_await(self.ahealth())

    # ------------------------------------------------------------------ lifecycle

    @property
    def _runtimes(self) -> PerLoop[_LoopRuntime]:
        """The HTTP session and rate limiter per loop, from the process runtime.

        Why not on the instance: hooks load the block anew for every alert, and Prefect copies
        blocks freely; limiters per instance would each believe they own a webhook's budget.
        Every block of the process that shares a budget (the same state database, or none)
        shares one limiter and one session per event loop.
        """
        state = self._state_database()
        if state is None:
            key = "local"
        elif isinstance(state, str):
            key = f"saved:{state}"
        else:
            key = f"db:{state._runtime_key()}"
        return _runtime.shared("discord-runtime", key, PerLoop)

    def _runtime(self) -> _LoopRuntime:
        state = self._state_database()
        return self._runtimes.get_or_create(lambda previous: _new_runtime(previous, state), reuse=_live)

    def _state_database(self) -> DatabaseBlock | str | None:
        """Where the rate-limit budget is shared: ``state_database``, else the alert memory's database."""
        if self.state_database is not None:
            return self.state_database
        import os

        from prefect_atlas.hooks.memory import MEMORY_DATABASE_ENV

        return os.environ.get(MEMORY_DATABASE_ENV, "").strip() or None

    async def aclose(self) -> None:
        """Close this event loop's HTTP session (the next send opens a new one)."""
        from prefect_atlas.discord.shared_limits import SharedRateLimiter

        runtime = self._runtimes.pop()
        if runtime is not None and not runtime.session.closed:
            await runtime.session.close()
        if runtime is not None and isinstance(runtime.limiter, SharedRateLimiter):
            await runtime.limiter.aclose()

    def close(self) -> None:
        """Sync face of :meth:`aclose`: closes the session the sync faces share."""
        return sync_or_await(self.aclose())

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def alert_text(
    title: str, description: str, *, fields: FieldsInput = None, url: str | None = None, env_tag: str = ""
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


def _run_logger() -> LoggerLike:
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


def _json(body: bytes) -> dict[str, Any]:
    import orjson

    try:
        data = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}
