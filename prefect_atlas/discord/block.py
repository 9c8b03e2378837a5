"""``DiscordBlock``: Atlas alerts to Discord webhooks that arrive, once, or say why not.

Configuration (the webhook URLs, one per channel) lives in the block and is saved in
Prefect; runtime state lives beside it and is never saved, copied or pickled: one aiohttp
session and one rate limiter per event loop (both bind to the loop that created them), and
the set of webhooks found dead (404) during this block's life. With ``state_database`` the
limiter keeps Discord's budget in the Atlas database instead, shared by every process.

Webhook URLs are credentials: the token in their path posts to the channel. So a URL is only
accepted when it sends the token to Discord (or to a host the block lists in
``allowed_hosts``), and no log line, repr or error ever quotes it.

This module holds the block's fields, validators and faces; the work is done beside it:
:mod:`~prefect_atlas.discord.webhooks` (which URLs are trusted),
:mod:`~prefect_atlas.discord.sending` (routing, fallback, the log line of an unsent alert),
:mod:`~prefect_atlas.discord.transport` (one webhook's tries over HTTP, the per-loop runtime),
:mod:`~prefect_atlas.discord.health` (the health check) and
:mod:`~prefect_atlas.discord.notify` (the ``NotificationBlock`` face Prefect automations call).
"""

from __future__ import annotations

from collections.abc import Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Self

from prefect.blocks.abstract import NotificationBlock
from pydantic import (
    ConfigDict,
    Field,
    HttpUrl,
    PrivateAttr,
    SecretStr,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from prefect_atlas._blocks import docs_url, logo_url
from prefect_atlas._dispatch import sync_or_await
from prefect_atlas._lazy import lazy_attributes
from prefect_atlas._redact import redact_text, redact_tree
from prefect_atlas.database.block import DatabaseBlock
from prefect_atlas.discord.delivery import Delivery
from prefect_atlas.discord.embeds import (
    CONTENT_LIMIT,
    USERNAME_LIMIT,
    FieldsInput,
    build_embed,
    trim,
)
from prefect_atlas.discord.enums import AlertLevel, Channel
from prefect_atlas.discord.webhooks import (
    DISCORD_HOSTS,
    DISCORD_WEBHOOK_PATTERN,
    ROLE_ID_PATTERN,
    WEBHOOK_URL_PATTERN,
    check_host_entry,
    check_webhook_url,
    normalize_host,
    parse_webhook_url,
    split_webhook_url,
)

if TYPE_CHECKING:
    from prefect_atlas.discord import transport
    from prefect_atlas.discord.health import DiscordHealth
    from prefect_atlas.discord.sending import LoggerLike, alert_text, logger

# Read on first use (PEP 562): sending and checking webhooks load the HTTP side (transport,
# rate limits, retries); `import prefect_atlas` and a block's form do not need it.
_LAZY = {
    "DiscordHealth": "prefect_atlas.discord.health",
    "LoggerLike": "prefect_atlas.discord.sending",
    "alert_text": "prefect_atlas.discord.sending",
    "logger": "prefect_atlas.discord.sending",
}


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)


# The UI checks webhook URLs against this (the server runs no Python validator on save): the
# documented path with a snowflake id on any host, or empty; "********" is what the UI shows
# for a saved secret and sends back unchanged. The host is checked by `if`/`then` in
# `model_json_schema` and, against `allowed_hosts`, by `_check_webhooks`.
_WEBHOOK_SCHEMA: dict[str, Any] = {"pattern": WEBHOOK_URL_PATTERN}

# Names callers import from here; they live in the modules above.
__all__ = [
    "DISCORD_HOSTS",
    "Delivery",
    "DiscordBlock",
    "DiscordHealth",
    "LoggerLike",
    "alert_text",
    "check_webhook_url",
    "logger",
    "normalize_host",
    "parse_webhook_url",
]


class DiscordBlock(NotificationBlock):
    """Discord webhooks for Atlas alerts, one per channel, with rate limits honoured.

    ``asend`` posts an embed and returns a ``Delivery``; it never raises into a pipeline.
    It is also a Prefect notification block: an Automation's "send notification" action (run
    by the Prefect server, which must be able to import prefect-atlas) calls ``notify``, and
    the alert takes the same routing, limits and redaction.
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
        "Sends Atlas alerts to your Discord channels, one webhook per channel. Alerts for a "
        "channel without a webhook go to the fallback channel, and Discord's sending limits "
        "are respected."
    )

    # Validation errors must not echo the input: a webhook URL is a credential.
    model_config = ConfigDict(hide_input_in_errors=True)

    alerts: SecretStr = Field(
        default=SecretStr(""),
        title="Alerts channel webhook",
        description=(
            "Webhook URL of the channel that hears about failed pipelines. In Discord: "
            "channel settings, Integrations, Webhooks, Copy Webhook URL."
        ),
        json_schema_extra=_WEBHOOK_SCHEMA,
    )
    hunt: SecretStr = Field(
        default=SecretStr(""),
        title="Hunt channel webhook",
        description=(
            "Webhook URL of the channel that hears about new findings. Leave empty to "
            "send them to the fallback channel."
        ),
        json_schema_extra=_WEBHOOK_SCHEMA,
    )
    surveillance: SecretStr = Field(
        default=SecretStr(""),
        title="Surveillance channel webhook",
        description=(
            "Webhook URL of the channel that hears about watched channels' activity. "
            "Leave empty to send it to the fallback channel."
        ),
        json_schema_extra=_WEBHOOK_SCHEMA,
    )
    ops: SecretStr = Field(
        default=SecretStr(""),
        title="Ops channel webhook",
        description=(
            "Webhook URL of the channel that gets routine job reports. Leave empty to "
            "send them to the fallback channel."
        ),
        json_schema_extra=_WEBHOOK_SCHEMA,
    )
    env_tag: str = Field(
        default="",
        max_length=32,
        title="Environment tag",
        description=(
            "Text put before every alert title, such as [prod], so that alerts from several "
            "environments can be told apart."
        ),
    )
    username: str = Field(
        default="Atlas",
        min_length=1,
        max_length=USERNAME_LIMIT,
        title="Username",
        description="Name shown as the sender of the messages.",
    )
    fallback_channel: Annotated[
        Channel,
        WithJsonSchema({"type": "string", "enum": [c.value for c in Channel]}),
    ] = Field(
        default=Channel.ALERTS,
        title="Fallback channel",
        description=(
            "Channel that gets an alert whose own channel has no webhook, or whose webhook "
            "was deleted in Discord."
        ),
    )
    mention_role_id: str = Field(
        default="",
        pattern=ROLE_ID_PATTERN,
        title="Role to mention",
        description=(
            "Id of the Discord role to ping on critical alerts (17 to 20 digits; in Discord, "
            "Copy Role ID with developer mode on). Leave empty to ping no one."
        ),
    )
    timeout: float = Field(
        default=10.0,
        gt=0,
        le=300,
        title="Timeout (s)",
        description="Seconds to wait for Discord to answer one message.",
    )
    max_attempts: int = Field(
        default=5,
        ge=1,
        le=20,
        title="Maximum attempts",
        description=(
            "How many times one alert is sent to a webhook before giving up, when Discord is "
            "busy or does not answer."
        ),
    )
    deadline: float = Field(
        default=120.0,
        gt=0,
        le=3600,
        title="Deadline (s)",
        description=(
            "Most seconds one alert may take in all, waits and retries included. Past it the "
            "alert is written to the run's logs instead, so the pipeline is never held up."
        ),
    )
    state_database: DatabaseBlock | None = Field(
        default=None,
        title="Shared rate-limit database",
        description=(
            "Atlas database in which every worker posting to these webhooks shares Discord's "
            "message allowance, so that many workers alerting at once are not refused. Leave "
            "empty when a single worker sends alerts."
        ),
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        title="Other allowed hosts",
        description=(
            "Other hosts that may receive the webhook URLs, such as your company's outgoing "
            "proxy. Leave empty to accept only Discord's own addresses (https on discord.com, "
            "discordapp.com and their ptb. and canary. variants)."
        ),
    )

    _dead: set[Channel] = PrivateAttr(default_factory=set)

    # ------------------------------------------------------------------ validation

    @field_validator("alerts", "hunt", "surveillance", "ops", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        # Empty (or None, as 0.3.0 saved it) means no webhook for the channel.
        return SecretStr("") if value is None else value

    @field_validator("alerts", "hunt", "surveillance", "ops", mode="after")
    @classmethod
    def _strip_webhook(cls, value: SecretStr) -> SecretStr:
        return SecretStr(value.get_secret_value().strip())

    @field_validator("mention_role_id", mode="before")
    @classmethod
    def _no_role(cls, value: Any) -> Any:
        return "" if value is None else value

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The block's schema; webhook URLs must be Discord's unless ``allowed_hosts`` is set.

        The server checks only this schema when the UI saves the block, so the host rule is
        here too: with ``allowed_hosts`` empty (or absent) every webhook must be on a Discord
        host; with hosts listed, the validator checks the host when the block is loaded.
        """
        schema = super().model_json_schema(*args, **kwargs)
        hosts = {"properties": {"allowed_hosts": {"maxItems": 0}}}
        discord_only = {"pattern": DISCORD_WEBHOOK_PATTERN}
        schema["if"] = hosts
        schema["then"] = {"properties": {c.value: discord_only for c in Channel}}
        return schema

    @field_validator("allowed_hosts", mode="after")
    @classmethod
    def _check_allowed_hosts(cls, value: list[str]) -> list[str]:
        hosts: list[str] = []
        for index, entry in enumerate(value):
            host = normalize_host(entry)
            if not check_host_entry(host):
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
                    f"`{channel.value}` is not a trusted Discord webhook URL: {exc}. Copy it from "
                    "the channel's Integrations > Webhooks > Copy Webhook URL "
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
        value: SecretStr = getattr(self, Channel(channel).value)
        return value if value.get_secret_value() else None

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
                split = split_webhook_url(raw)
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
        from prefect_atlas.discord.sending import deliver

        return await deliver(self, title, description, level, channel, fields, url, log)

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
            self.asend(
                title, description, level=level, channel=channel, fields=fields, url=url, log=log
            )
        )

    # ------------------------------------------------------------------ NotificationBlock

    async def anotify(self, body: str, subject: str | None = None) -> Delivery:
        """Post ``subject`` and ``body`` as one alert (Prefect's notification interface).

        A trailing ``atlas-alert:`` options line picks the channel and level and names the
        flow run and state to deduplicate on (see :mod:`prefect_atlas.discord.notify`).
        Inside ``raise_on_failure()`` an undelivered alert raises ``NotificationError``.
        """
        from prefect_atlas.discord.notify import anotify

        return await anotify(self, body, subject)

    def notify(self, body: str, subject: str | None = None) -> Any:  # Delivery, or its coroutine
        """Sync face of :meth:`anotify` (returns the coroutine in async code, which is how
        Prefect's automation action awaits it)."""
        return sync_or_await(self.anotify(body, subject))

    # ------------------------------------------------------------------ health

    async def ahealth(self) -> DiscordHealth:
        """Check every configured webhook without posting a message.

        Discord's "get webhook with token" (a GET on the webhook URL) proves the URL and
        token are live; it shares the webhook's rate-limit bucket, so it goes through the
        same limiter as messages. Never raises: the report says which channel is down.
        """
        from prefect_atlas.discord.health import check_webhooks

        return await check_webhooks(self)

    def health(self) -> DiscordHealth:
        """Sync face of :meth:`ahealth` (awaitable in async code)."""
        return sync_or_await(self.ahealth())

    # ------------------------------------------------------------------ lifecycle

    def _runtime(self) -> transport.LoopRuntime:
        """This event loop's HTTP session and rate limiter, shared by every block of the budget."""
        from prefect_atlas.discord import transport

        return transport.runtime(self._state_database())

    def _state_database(self) -> DatabaseBlock | str | None:
        """Where the rate-limit budget is shared: ``state_database``, else the alert memory's
        database."""
        if self.state_database is not None:
            return self.state_database
        import os

        from prefect_atlas.hooks.memory import MEMORY_DATABASE_ENV

        return os.environ.get(MEMORY_DATABASE_ENV, "").strip() or None

    async def aclose(self) -> None:
        """Close this event loop's HTTP session (the next send opens a new one)."""
        from prefect_atlas.discord import transport

        await transport.close(self._state_database())

    def close(self) -> None:
        """Sync face of :meth:`aclose`: closes the session the sync faces share."""
        return sync_or_await(self.aclose())

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
