"""Discord webhook URLs: what a URL must look like before the block trusts it with its token.

A webhook URL is a credential (the token in its path posts to the channel), so it is only
accepted when it sends the token to Discord, or to a host the block lists in
``allowed_hosts``. No error raised here quotes the token or a password.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# Discord's own webhook hosts. A webhook URL is a credential (its token posts to the channel),
# so it is only ever sent to these, unless the block lists another host in ``allowed_hosts``.
DISCORD_HOSTS = frozenset(
    f"{prefix}{domain}"
    for prefix in ("", "ptb.", "canary.")
    for domain in ("discord.com", "discordapp.com")
)

# The documented path: /api/webhooks/<numeric id>/<token>, optionally /api/v<N>/webhooks/...
# ASCII classes and \Z on purpose: \d matches other scripts' digits and $ matches before "\n".
_WEBHOOK_PATH = re.compile(
    r"/api(?:/v[0-9]{1,3})?/webhooks/(?P<id>[0-9]{1,25})/(?P<token>[A-Za-z0-9_.\-]{1,200})/?\Z"
)
# JSON-schema patterns (the UI's checks; ECMA-262 regexes). Real ids are snowflakes of 17 to
# 20 digits; the Python check above accepts any numeric id, for test servers and old data.
_PATH_AND_QUERY = (
    r"/api(/v[0-9]{1,3})?/webhooks/[0-9]{17,20}/[A-Za-z0-9_.\-]{1,200}/?(\?thread_id=[0-9]{1,25})?"
)
WEBHOOK_URL_PATTERN = rf"^(|\*{{8}}|https?://[^\s/?#@]+{_PATH_AND_QUERY})$"
DISCORD_WEBHOOK_PATTERN = (
    rf"^(|\*{{8}}|https://(ptb\.|canary\.)?discord(app)?\.com(:443)?{_PATH_AND_QUERY})$"
)
ROLE_ID_PATTERN = r"^(|[0-9]{17,20})$"
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
        raise ValueError(
            "it carries a user name or password before the host (user:password@); remove them"
        )
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
    """``(webhook_id, token)`` of a Discord webhook URL; ValueError (without the URL) if not
    trusted.

    The same rules as :func:`check_webhook_url`.
    """
    return check_webhook_url(url, allowed_hosts)


def split_webhook_url(url: str) -> tuple[str, str] | None:
    """``(id, token)`` from the path alone, for redaction (a URL already validated, or not)."""
    from urllib.parse import urlsplit

    try:
        match = _WEBHOOK_PATH.match(urlsplit(url.strip()).path)
    except ValueError:
        return None
    return (match["id"], match["token"]) if match else None


def check_host_entry(entry: str) -> bool:
    """Whether a normalized ``allowed_hosts`` entry is a bare host name or IP address."""
    return _HOST_ENTRY.match(entry) is not None
