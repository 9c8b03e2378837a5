"""How a failed command reads: one line on stderr.

The line is ``prefect-atlas: error: <what failed and the fix>``, never a traceback.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cyclopts import App

PREFIX = "prefect-atlas: error:"

# Exit codes of every command (documented in the CLI's help and in README.md).
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class CommandError(Exception):
    """A command's own failure whose message already says what failed and the fix.

    Raise it after printing any partial result on stdout; :func:`prefect_atlas.cli.main`
    prints the message on stderr and exits 1.
    """


class UsageError(Exception):
    """The command line itself is wrong (exit 2), as cyclopts' own parse errors are."""


def require_command(app: App, path: str) -> None:
    """Make ``prefect-atlas PATH`` without a subcommand a usage error, not a silent success."""

    command = f"prefect-atlas {path}".rstrip()

    @app.default
    def _missing() -> int:
        raise UsageError(f"`{command}` needs a command: see `{command} --help`")


def report(message: str) -> None:
    """Print one error line on stderr."""
    print(f"{PREFIX} {message}", file=sys.stderr)


def explain(exc: BaseException) -> str:
    """One line for the operator: what failed and what to do, without a traceback."""
    import psycopg

    from prefect_atlas.exceptions import AtlasError

    if isinstance(exc, CommandError | AtlasError | ValueError | FileExistsError):
        return str(exc)
    if isinstance(exc, psycopg.errors.UndefinedTable | psycopg.errors.InvalidSchemaName):
        return (
            f"the Atlas schema is missing or out of date ({' '.join(str(exc).split())}): "
            "run `prefect-atlas setup` (with the same --block/--url) first"
        )
    if isinstance(exc, psycopg.OperationalError):
        return f"cannot reach PostgreSQL: {' '.join(str(exc).split())}"
    if isinstance(exc, psycopg.Error):
        return f"PostgreSQL refused the command: {' '.join(str(exc).split())}"
    prefect_down = _prefect_api_failure(exc)
    if prefect_down is not None:
        return prefect_down
    return f"{type(exc).__name__}: {exc}"


def _prefect_api_failure(exc: BaseException) -> str | None:
    """The message for a Prefect API that is unreachable or has no such block, else None."""
    import httpx
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL

    if isinstance(exc, ObjectNotFound):
        return f"Prefect has no such block ({exc}): save it first, or check the name"
    if isinstance(exc, httpx.TransportError) or (
        isinstance(exc, RuntimeError)
        and "connect" in str(exc).lower()
        and "prefect" in str(exc).lower()
    ):
        where = PREFECT_API_URL.value() or "the ephemeral Prefect server"
        return (
            f"cannot reach the Prefect API at {where} ({type(exc).__name__}: {exc}): "
            "start the server or point PREFECT_API_URL at a running one"
        )
    return None
