"""``prefect-atlas events replay|drain|dead-letters``: read the log, store the spool now, handle refused events."""

from __future__ import annotations

import argparse
import asyncio
import json
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
        if args.vault:
            from prefect_atlas._blocks import resolve_block
            from prefect_atlas.vault import VaultBlock

            store.spool_vault = await resolve_block(VaultBlock, args.vault)
        try:
            drained = await store.adrain()
            dead = await store.adead_letter_count()
        finally:
            await store.db.aclose()
            store.close()
        print(f"drained {drained} event(s) from {store.spool_path}")
        if dead:
            print(
                f"prefect-atlas: error: {dead} dead letter(s) in atlas.dead_events (events PostgreSQL "
                "refused): inspect them with `prefect-atlas events dead-letters list`, then retry or discard",
                file=sys.stderr,
            )
            return 1
        return 0

    return asyncio.run(run())


def _cmd_dead_list(args: argparse.Namespace) -> int:
    async def run() -> int:
        store = await _store_for(args)
        try:
            letters = await store.adead_letters(args.limit)
        finally:
            await store.db.aclose()
        for letter in letters:
            if args.json:
                line = {
                    "event_id": str(letter.event_id),
                    "event_type": letter.event_type,
                    "entity_id": letter.entity_id,
                    "reason": letter.reason,
                    "sqlstate": letter.sqlstate,
                    "attempts": letter.attempts,
                    "first_seen": letter.first_seen.isoformat(),
                    "last_seen": letter.last_seen.isoformat(),
                    "payload": letter.payload,
                }
                print(json.dumps(line))
            else:
                print(
                    f"{letter.event_id}  {letter.event_type!r}  {letter.entity_id!r}  "
                    f"SQLSTATE {letter.sqlstate}  x{letter.attempts}  {letter.reason}"
                )
        if not letters and not args.json:
            print("no dead letters")
        return 0

    return asyncio.run(run())


def _cmd_dead_retry(args: argparse.Namespace) -> int:
    async def run() -> int:
        store = await _store_for(args)
        try:
            await store.aretry_dead_letter(args.event_id)
        finally:
            await store.db.aclose()
        print(f"stored {args.event_id} in the event log")
        return 0

    return asyncio.run(run())


def _cmd_dead_discard(args: argparse.Namespace) -> int:
    async def run() -> int:
        store = await _store_for(args)
        try:
            found = await store.adiscard_dead_letter(args.event_id)
        finally:
            await store.db.aclose()
        if not found:
            raise ValueError(f"no dead letter with event id {args.event_id}")
        print(f"discarded {args.event_id}")
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
    drain.add_argument(
        "--vault", metavar="NAME", help="also store the spool segments lost workers left in this saved vault"
    )
    drain.set_defaults(handler=_cmd_drain)

    dead = sub.add_parser("dead-letters", help="spooled events PostgreSQL refused: list, retry, discard")
    dead_sub = dead.add_subparsers(dest="dead_command", required=True, metavar="ACTION")
    listing = dead_sub.add_parser("list", help="print the dead letters, oldest first")
    _add_database_options(listing)
    listing.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(handler=_cmd_dead_list)
    retry = dead_sub.add_parser("retry", help="append a dead letter to the log again (after fixing the cause)")
    _add_database_options(retry)
    retry.add_argument("event_id", metavar="ID")
    retry.set_defaults(handler=_cmd_dead_retry)
    discard = dead_sub.add_parser("discard", help="delete a dead letter for good")
    _add_database_options(discard)
    discard.add_argument("event_id", metavar="ID")
    discard.set_defaults(handler=_cmd_dead_discard)
