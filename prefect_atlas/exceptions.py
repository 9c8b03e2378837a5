"""Exceptions raised by prefect-atlas.

Every error a user can act on says *what* went wrong and *which field or setting* fixes it.
Messages never contain secrets: connection strings are redacted before they are formatted.
"""

from __future__ import annotations


class AtlasError(Exception):
    """Base class of every error raised by prefect-atlas."""


class MissingExtraError(AtlasError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""

    def __init__(self, module: str, extra: str, purpose: str, alternative: str = "") -> None:
        self.module = module
        self.extra = extra
        message = (
            f"{purpose} needs the optional dependency {module!r}, which is not installed. "
            f"Install it with: pip install 'prefect-atlas[{extra}]'"
        )
        super().__init__(f"{message}, or {alternative}." if alternative else f"{message}.")


class DatabaseError(AtlasError):
    """Base class of database errors raised by :class:`~prefect_atlas.DatabaseBlock`."""


class DatabaseConnectionError(DatabaseError):
    """The database could not be reached or refused the connection.

    ``target`` is the redacted description of where we tried to connect (host, port,
    database, user — never the password).
    """

    def __init__(self, message: str, *, target: str) -> None:
        self.target = target
        super().__init__(message)


class DatabaseConfigurationError(DatabaseConnectionError):
    """The server answered and refused us: wrong password, unknown role or unknown database.

    Unlike an outage this does not heal by waiting, so nothing retries it; the message says
    which part of the block's ``url`` to fix.
    """


class MigrationError(DatabaseError):
    """The schema could not be brought up to date (for example an applied migration was edited)."""
