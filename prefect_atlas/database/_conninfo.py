"""Connection strings of the database block: checked, layered with our settings, redacted.

A conninfo (a ``postgresql://`` URL or a libpq ``key=value`` string) may hold a password,
so nothing here echoes one: :func:`check_conninfo` names the field it rejects,
:func:`conninfo_secrets` lists what a message must not quote, and
:func:`connection_error` turns libpq's refusals into an error that says what to fix.

psycopg is imported inside the functions that parse: a block's module is imported by
``import prefect_atlas`` (Prefect registers blocks by importing them), and psycopg's import
is the largest part of ours; it loads when the first block is validated or connects.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

from prefect_atlas._redact import describe_conninfo
from prefect_atlas.exceptions import DatabaseConfigurationError, DatabaseConnectionError

TCP_DEFAULTS = {
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
    "tcp_user_timeout": "60000",
}


def build_conninfo(
    raw: str, *, application_name: str, timeout: float, statement_timeout: float | None
) -> str:
    """Our connection settings layered over the user's conninfo (the user's own settings win)."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(raw)
    extra: dict[str, Any] = {}
    if "application_name" not in params:
        extra["application_name"] = application_name
    if "connect_timeout" not in params:
        # libpq's connect_timeout is whole seconds, minimum 2: a blackholed host fails
        # within `timeout` instead of the OS's TCP timeout (minutes).
        extra["connect_timeout"] = max(2, math.ceil(timeout))
    # A silently partitioned TCP connection is noticed by the kernel within about a
    # minute instead of the OS default (hours): keepalive probes while idle, and
    # tcp_user_timeout for data that is never acknowledged. libpq ignores both on unix
    # sockets; a URL that sets them wins. Callers that need a tighter bound put a
    # deadline on the operation (EventStore's emit_timeout).
    for key, value in TCP_DEFAULTS.items():
        if key not in params:
            extra[key] = value
    if statement_timeout is not None:
        option = f"-c statement_timeout={int(statement_timeout * 1000)}"
        extra["options"] = f"{params['options']} {option}" if params.get("options") else option
    return make_conninfo(raw, **extra)


def conninfo_secrets(raws: Iterable[str]) -> list[str]:
    """What a message must never quote: each conninfo whole, and the password it carries."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    secrets = list(raws)
    for raw in list(secrets):
        try:
            password = conninfo_to_dict(raw).get("password")
        except psycopg.ProgrammingError:
            continue
        if password:
            secrets.append(str(password))
    return secrets


def check_conninfo(raw: str, field: str) -> None:
    """Reject strings libpq cannot parse, naming the field (never echoing the value)."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    stripped = raw.strip()
    if "://" in stripped and not stripped.lower().startswith(("postgresql://", "postgres://")):
        raise ValueError(
            f"{field} must be a PostgreSQL URL starting with postgresql:// "
            "(for example postgresql://user:password@host:5432/dbname)"
        )
    try:
        conninfo_to_dict(stripped)
    except psycopg.ProgrammingError:
        raise ValueError(
            f"{field} is not a valid PostgreSQL connection string; use the form "
            "postgresql://user:password@host:5432/dbname"
        ) from None


# libpq reports these refusals without a SQLSTATE; the server's message is the only signal.
REFUSALS = (
    ("password authentication failed", "Fix the password in the block's `url`."),
    ("no password supplied", "Add the password to the block's `url`."),
    ("authentication failed", "Fix the user or password in the block's `url`."),
    ("role", "Fix the user name in the block's `url` (the role does not exist)."),
    ("database", "Fix the database name in the block's `url`, or create the database."),
    ("no pg_hba.conf entry", "Allow this client in the server's pg_hba.conf, or fix the host."),
)


def configuration_refusal(reason: str) -> str | None:
    """The fix, when ``reason`` is the server refusing our credentials or database name."""
    lowered = reason.lower()
    for needle, fix in REFUSALS:
        if needle in lowered and (
            "does not exist" in lowered or needle not in ("role", "database")
        ):
            return fix
    return None


def connection_error(
    conninfo: str,
    exc: BaseException,
    *,
    timeout: float,
    embedded: bool,
    redact: Callable[[str], str],
) -> DatabaseConnectionError:
    """The error for a failed connect: a configuration error when the server refused us."""
    target = describe_conninfo(conninfo)
    reason = " ".join(str(exc).split()).rstrip(".") or f"no answer within {timeout:g} s"
    refusal = configuration_refusal(reason)
    if refusal is not None:
        return DatabaseConfigurationError(
            redact(f"PostgreSQL ({target}) refused the connection: {reason}. {refusal}"),
            target=target,
        )
    where = "the embedded PostgreSQL" if embedded else "the server"
    return DatabaseConnectionError(
        redact(
            f"cannot connect to PostgreSQL ({target}): {reason}. "
            f"Check that {where} is running and that the block's `url` (host, port, "
            "database, user, password) is right."
        ),
        target=target,
    )
