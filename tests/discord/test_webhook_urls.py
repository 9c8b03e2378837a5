"""Webhook URLs are credentials: the block only accepts URLs that send the token to Discord.

Every rejected URL must fail at construction (not at the first alert), name the field and the
fix, and never quote the token or a password.
"""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from prefect_atlas import DiscordBlock
from prefect_atlas.discord.block import check_webhook_url, parse_webhook_url
from tests.discord._server import DiscordServer

TOKEN = "tOkEn_SeCrEt-42.x"
PATH = f"/api/webhooks/123456789012345678/{TOKEN}"


def _error(url: str, **fields: object) -> str:
    with pytest.raises(ValidationError) as info:
        DiscordBlock(alerts=SecretStr(url), **fields)
    text = str(info.value)
    assert TOKEN not in text
    assert "`alerts`" in text
    return text


@pytest.mark.parametrize(
    ("url", "says"),
    [
        (f"http://169.254.169.254{PATH}", "not Discord's"),
        (f"https://169.254.169.254{PATH}", "not Discord's"),
        (f"https://discord.com.evil.io{PATH}", "not Discord's"),
        (f"https://evil.io/discord.com{PATH}", "not Discord's"),
        (f"https://user:pw@discord.com{PATH}", "user name or password"),
        (f"https://{TOKEN}@discord.com{PATH}", "user name or password"),
        (f"http://discord.com{PATH}", "plain http"),
        (f"ftp://discord.com{PATH}", "not an https URL"),
        (f"https://discord.com:8443{PATH}", "port 443"),
        (f"https://discord.com/webhooks/123/{TOKEN}", "path"),
        (f"https://discord.com/api/webhooks/abc/{TOKEN}", "path"),
        (
            f"https://discord.com/api/webhooks/\u0661\u0662\u0663/{TOKEN}",
            "path",
        ),  # Arabic-Indic digits
        (f"https://discord.com/api/webhooks/123/{TOKEN}/messages/1", "path"),
        (f"https://discord.com{PATH}#x", "fragment"),
        (f"https://discord.com{PATH}?redirect=http://x", "query"),
        (f"https://discord.com{PATH}\nX-Injected: 1", "whitespace"),
        (
            f"http://127.0.0.1:8080{PATH}",
            "not Discord's",
        ),  # a test server needs the explicit opt-in
        ("not-a-url-at-all", "not an https URL"),
    ],
)
def test_untrusted_urls_are_refused_without_echoing_the_token(url: str, says: str) -> None:
    text = _error(url)
    assert says in text, text
    assert "pw@" not in text


def test_the_error_names_the_opt_in_field() -> None:
    text = _error(f"https://proxy.internal{PATH}")
    assert "allowed_hosts" in text and "proxy.internal" in text


def test_plain_http_only_for_listed_loopback_hosts() -> None:
    assert "plain http" in _error(f"http://proxy.internal{PATH}", allowed_hosts=["proxy.internal"])
    assert "plain http" in _error(
        f"http://169.254.169.254{PATH}", allowed_hosts=["169.254.169.254"]
    )
    for host in ("127.0.0.1", "localhost", "[::1]"):
        block = DiscordBlock(alerts=SecretStr(f"http://{host}:9{PATH}"), allowed_hosts=[host])
        assert block.alerts is not None


@pytest.mark.parametrize(
    "url",
    [
        f"https://discord.com{PATH}",
        f"https://discordapp.com{PATH}",
        f"https://ptb.discord.com{PATH}",
        f"https://canary.discord.com{PATH}",
        f"https://ptb.discordapp.com{PATH}",
        f"https://canary.discordapp.com{PATH}",
        f"https://DISCORD.com{PATH}",
        f"https://discord.com:443{PATH}",
        "https://discord.com/api/v10/webhooks/123456789012345678/" + TOKEN,
        f"https://discord.com{PATH}/",
        f"https://discord.com{PATH}?thread_id=987654321",
        f"  https://discord.com{PATH}  ",
    ],
)
def test_discord_urls_are_accepted(url: str) -> None:
    block = DiscordBlock(alerts=SecretStr(url))
    assert block.alerts is not None and block.alerts.get_secret_value() == url.strip()
    assert check_webhook_url(url) == ("123456789012345678", TOKEN)
    assert TOKEN not in repr(block) and TOKEN not in block.model_dump_json()


def test_https_proxy_listed_in_allowed_hosts_is_accepted() -> None:
    block = DiscordBlock(
        alerts=SecretStr(f"https://egress.corp.example:8443{PATH}"),
        allowed_hosts=["Egress.Corp.Example"],
    )
    assert block.allowed_hosts == ["egress.corp.example"]
    assert (
        parse_webhook_url(f"https://egress.corp.example:8443{PATH}", block.allowed_hosts)[0]
        == "123456789012345678"
    )


@pytest.mark.parametrize("entry", ["https://proxy", "proxy/path", "user@proxy", "proxy:8080", ""])
def test_allowed_hosts_entries_must_be_bare_hosts(entry: str) -> None:
    with pytest.raises(ValidationError) as info:
        DiscordBlock(allowed_hosts=[entry])
    assert "allowed_hosts[0]" in str(info.value)


def test_every_channel_field_is_checked() -> None:
    for field in ("alerts", "hunt", "surveillance", "ops"):
        with pytest.raises(ValidationError) as info:
            DiscordBlock(**{field: SecretStr(f"https://discord.com.evil.io{PATH}")})
        assert f"`{field}`" in str(info.value) and TOKEN not in str(info.value)


async def test_a_listed_local_server_receives_alerts(discord_server: DiscordServer) -> None:
    hook = discord_server.add_webhook()
    async with DiscordBlock(
        alerts=SecretStr(discord_server.url(hook)), allowed_hosts=["127.0.0.1"]
    ) as block:
        delivery = await block.asend("through the opt-in", channel=block.fallback_channel)
    assert delivery.delivered and len(hook.received) == 1
