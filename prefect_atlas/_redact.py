"""Redaction of connection strings and secrets before they reach logs, reprs or errors."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

_URL_PASSWORD = re.compile(
    r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]*)@", re.I
)
_KV_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.I)
# Query-string credentials (Google API keys in googleapiclient errors, signed URLs, tokens).
_QUERY_SECRET = re.compile(
    r"([?&](?:key|api_key|apikey|token|access_token|refresh_token|sig|signature|password|secret|"
    r"client_secret|x-goog-signature)=)[^&\s#\"'<>]+",
    re.I,
)
_BEARER = re.compile(r"(\bBearer\s+)[A-Za-z0-9._~+/-]+=*", re.I)
_DISCORD_WEBHOOK = re.compile(r"(discord(?:app)?\.com/api/(?:v\d+/)?webhooks/\d+/)[\w-]+", re.I)

MASK = "**********"


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Mask passwords in URLs and ``password=`` pairs, and any literal secret given."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    text = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    text = _QUERY_SECRET.sub(lambda m: f"{m.group(1)}{MASK}", text)
    text = _BEARER.sub(lambda m: f"{m.group(1)}{MASK}", text)
    text = _DISCORD_WEBHOOK.sub(lambda m: f"{m.group(1)}{MASK}", text)
    return _KV_PASSWORD.sub(lambda m: f"{m.group(1)}{MASK}", text)


def redact_tree(value: Any, secrets: Iterable[str] = ()) -> Any:
    """:func:`redact_text` applied to every string inside dicts, lists and tuples."""
    secrets = list(secrets)
    if isinstance(value, str):
        return redact_text(value, secrets)
    if isinstance(value, dict):
        return {key: redact_tree(item, secrets) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_tree(item, secrets) for item in value)
    return value


def describe_conninfo(conninfo: str) -> str:
    """A human description of a connection target: ``host=… port=… dbname=… user=…``.

    Used in error messages so that a user sees *where* we tried to connect without the
    password ever being formatted.
    """
    from psycopg.conninfo import conninfo_to_dict  # on first use: psycopg is heavy to import

    try:
        params = conninfo_to_dict(conninfo)
    except Exception:  # an unparsable string: show nothing of it but its redacted form
        return redact_text(conninfo)
    parts = []
    for key in ("host", "port", "dbname", "user"):
        value = params.get(key)
        if value is not None and value != "":
            parts.append(f"{key}={value}")
    if not params.get("host"):
        parts.insert(0, "host=<default socket>")
    return " ".join(parts)
