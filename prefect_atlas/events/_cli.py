"""``prefect-atlas events replay|drain``: read the log as JSON lines, store the spool now."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import datetime
from typing import Any


def _store_for(args: argparse.Namespace) -> Any:
    from prefect_atlas.cli import _database
    from prefect_atlas.events.store import EventStore

    async def make() -> EventStore:
        return EventStore(await _database(args), mode="strict")

    return make()


def _cmd_replay(args: argparse.Namespace) -> int:
    since = datetime.fromisoformat(args.since) if args.since else None
    if since is not None and since.tzinfo is None:
        raise ValueError("--since must include a timezone, for example 2024-05-01T00:00:00+00:00")

    async def run() -> int:
        store = await _store_for(args)
        count = 0
        try:
            async for event in store.replay(
                event_types=args.type or None, entity_id=args.entity, since=since
            ):
                sys.stdout.buffer.write(event.to_json() + b"\n")
                count += 1
        finally:
            await store.db.aclose()
        sys.stdout.flush()
        return 0

    return asyncio.run(run())


def _cmd_drain(args: argparse.Namespace) -> int:
    async def run() -> int:
        store = await _store_for(args)
        try:
            drained = await store.adrain()
        finally:
            await store.db.aclose()
            store.close()
        print(f"drained {drained} event(s) from {store.spool_path}")
        return 0

    return asyncio.run(run())


def register(subparsers: Any) -> None:
    from prefect_atlas.cli import _add_database_options

    events = subparsers.add_parser("events", help="read the event log, drain the local spool")
    sub = events.add_subparsers(dest="events_command", required=True, metavar="ACTION")
    replay = sub.add_parser("replay", help="print events as JSON lines, in commit-safe order")
    _add_database_options(replay)
    replay.add_argument("--type", action="append", metavar="T", help="event type (repeatable)")
    replay.add_argument("--entity", metavar="E", help="only this entity id")
    replay.add_argument("--since", metavar="ISO", help="only events that occurred at or after this time")
    replay.set_defaults(handler=_cmd_replay)
    drain = sub.add_parser("drain", help="store the events waiting in the local spool now")
    _add_database_options(drain)
    drain.set_defaults(handler=_cmd_drain)
