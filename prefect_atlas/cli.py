"""The ``prefect-atlas`` command line.

Subcommands live in small functions registered on one argparse parser; other modules add
their own groups (``events``, ``alerts``, ``blocks``…) through :func:`build_parser`.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from prefect_atlas._version import __version__
from prefect_atlas.database import DatabaseBlock

Handler = Callable[[argparse.Namespace], int]

# Modules with a `register(subparsers)` function that adds a command group (events, alerts…).
COMMAND_GROUPS: list[str] = ["prefect_atlas.blocks_cli", "prefect_atlas.discord._cli", "prefect_atlas.events._cli"]


async def _database(args: argparse.Namespace) -> DatabaseBlock:
    """The block the command works on: ``--block NAME`` from Prefect, else ``--url``/embedded."""
    if args.block:
        return await DatabaseBlock.aload(args.block)
    url = args.url or os.environ.get("DATABASE_URL") or None
    return DatabaseBlock(url=url)


def _cmd_health(args: argparse.Namespace) -> int:
    from prefect_atlas.health import acheck_system

    async def run() -> int:
        if args.block:
            report = await acheck_system(args.block, args.block, args.block, timeout=args.timeout)
        else:
            report = await acheck_system(await _database(args), None, None, timeout=args.timeout)
        print(report.model_dump_json(indent=2) if args.json else report.table())
        return 0 if report.ok else 1

    return asyncio.run(run())


def _cmd_setup(args: argparse.Namespace) -> int:
    async def run() -> int:
        db = await _database(args)
        try:
            applied = await db.asetup()
        finally:
            await db.aclose()
        if applied:
            for migration in applied:
                print(f"applied {migration.version:04d}_{migration.name}")
        else:
            print(f"schema already up to date on {db.describe()}")
        return 0

    return asyncio.run(run())


def _cmd_demo(args: argparse.Namespace) -> int:
    from prefect.settings import (
        PREFECT_SERVER_ANALYTICS_ENABLED,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )

    from prefect_atlas.demo import run_demo

    # A cold ephemeral server needs ~15 s on a small machine (Prefect's default allows 20),
    # and with no internet its telemetry would only log errors.
    updates: dict[Any, Any] = {}
    if "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" not in os.environ:
        updates[PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS] = 120
    if "PREFECT_SERVER_ANALYTICS_ENABLED" not in os.environ:
        updates[PREFECT_SERVER_ANALYTICS_ENABLED] = False
    with temporary_settings(updates=updates):
        return asyncio.run(run_demo())


def _cmd_metrics(args: argparse.Namespace) -> int:
    """Counters are per process; this command first runs a health check so that the gauges
    (component up, pool, spool size) describe the system now, then prints the text format."""
    from prefect_atlas.health import acheck_system
    from prefect_atlas.metrics import render

    async def run() -> None:
        if args.block:
            await acheck_system(args.block, args.block, args.block)
        else:
            await acheck_system(await _database(args), None, None)

    asyncio.run(run())
    print(render(), end="")
    return 0


def _add_database_options(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--block", metavar="NAME", help="a saved Atlas Database block to use")
    where.add_argument(
        "--url",
        metavar="URL",
        help="a PostgreSQL URL (default: $DATABASE_URL, else the embedded PostgreSQL)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prefect-atlas", description="Atlas infrastructure for Prefect: database, vault, events, alerts."
    )
    parser.add_argument("--version", action="version", version=f"prefect-atlas {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    health = sub.add_parser(
        "health",
        help="check database, event spool, vault and Discord; exit 1 when something is down",
        description="With --block NAME the Atlas Database, Vault and Discord blocks named NAME are checked; "
        "otherwise the database from --url/$DATABASE_URL/embedded, the default local vault and no Discord.",
    )
    _add_database_options(health)
    health.add_argument("--json", action="store_true", help="print the report as JSON")
    health.add_argument("--timeout", type=float, default=5.0, help="seconds to wait (default 5)")
    health.set_defaults(handler=_cmd_health)

    setup = sub.add_parser("setup", help="apply the Atlas schema migrations")
    _add_database_options(setup)
    setup.set_defaults(handler=_cmd_setup)
    demo = sub.add_parser("demo", help="run the demo flow on embedded defaults")
    demo.set_defaults(handler=_cmd_demo)

    metrics_cmd = sub.add_parser(
        "metrics", help="check the system, then print Atlas metrics in Prometheus text format"
    )
    _add_database_options(metrics_cmd)
    metrics_cmd.set_defaults(handler=_cmd_metrics)

    # Command groups of the other parts register themselves here, one module each.
    for module in COMMAND_GROUPS:
        importlib.import_module(module).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Exit codes: 0 ok, 1 the command failed (one line on stderr naming what
    failed and the fix), 2 usage error (argparse), 130 interrupted."""
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a CLI prints one clear line, not a traceback
        print(f"prefect-atlas: error: {explain(exc)}", file=sys.stderr)
        return 1


def explain(exc: BaseException) -> str:
    """One line for the operator: what failed and what to do, without a traceback."""
    import psycopg

    from prefect_atlas.exceptions import AtlasError

    if isinstance(exc, AtlasError | ValueError):
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
        isinstance(exc, RuntimeError) and "connect" in str(exc).lower() and "prefect" in str(exc).lower()
    ):
        where = PREFECT_API_URL.value() or "the ephemeral Prefect server"
        return (
            f"cannot reach the Prefect API at {where} ({type(exc).__name__}: {exc}): start the server "
            "or point PREFECT_API_URL at a running one"
        )
    return None
