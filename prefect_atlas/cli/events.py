"""``prefect-atlas events replay|drain|dead-letters``.

Read the log, store the spool now, handle the events PostgreSQL refused.
"""

from __future__ import annotations

import json as jsonlib
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

from cyclopts import App, Parameter

from prefect_atlas.cli._errors import CommandError, require_command
from prefect_atlas.cli._options import NO_DATABASE, DatabaseOptions

if TYPE_CHECKING:
    from prefect_atlas.events.store import EventStore

events = App(name="events", help="Read the event log, drain the local spool.")
dead_letters = App(
    name="dead-letters", help="Spooled events PostgreSQL refused: list, retry, discard."
)
events.command(dead_letters)
require_command(events, "events")
require_command(dead_letters, "events dead-letters")

# The positional ID that ``dead-letters retry`` and ``dead-letters discard`` take.
DeadLetterId = Annotated[str, Parameter(name="ID", help="the dead letter's event id")]


@asynccontextmanager
async def _store(database: DatabaseOptions) -> AsyncIterator[EventStore]:
    """A strict event store on the chosen database; its pool is closed afterwards."""
    from prefect_atlas.events.store import EventStore

    store = EventStore(await database.open(), mode="strict")
    try:
        yield store
    finally:
        await store.db.aclose()
        store.close()


@events.command
async def replay(
    *,
    database: DatabaseOptions = NO_DATABASE,
    event_type: Annotated[
        list[str] | None,
        Parameter(name="--type", consume_multiple=False, help="event type (repeatable)"),
    ] = None,
    entity: Annotated[str | None, Parameter(help="only this entity id")] = None,
    since: Annotated[
        str | None,
        Parameter(help="only events that occurred at or after this ISO time (with a timezone)"),
    ] = None,
) -> int:
    """Print events as JSON lines, in commit-safe order."""
    start = datetime.fromisoformat(since) if since else None
    if start is not None and start.tzinfo is None:
        raise ValueError("--since must include a timezone, for example 2024-05-01T00:00:00+00:00")
    async with _store(database) as store:
        async for event in store.replay(
            event_types=event_type or None, entity_id=entity, since=start
        ):
            sys.stdout.buffer.write(event.to_json() + b"\n")
    sys.stdout.flush()
    return 0


@events.command
async def drain(
    *,
    database: DatabaseOptions = NO_DATABASE,
    vault: Annotated[
        str | None,
        Parameter(help="also store the spool segments lost workers left in this saved vault"),
    ] = None,
) -> int:
    """Store the events waiting in the local spool now; exit 1 while dead letters wait."""
    async with _store(database) as store:
        if vault:
            from prefect_atlas._blocks import resolve_block
            from prefect_atlas.vault import VaultBlock

            store.spool_vault = await resolve_block(VaultBlock, vault)
        drained = await store.adrain()
        dead = await store.adead_letter_count()
    print(f"drained {drained} event(s) from {store.spool_path}", flush=True)
    if dead:
        raise CommandError(
            f"{dead} dead letter(s) in atlas.dead_events (events PostgreSQL refused): inspect them "
            "with `prefect-atlas events dead-letters list`, then retry or discard"
        )
    return 0


@dead_letters.command(name="list")
async def list_(
    *,
    database: DatabaseOptions = NO_DATABASE,
    limit: Annotated[int, Parameter(help="at most this many")] = 100,
    json: Annotated[bool, Parameter(help="one JSON object per line")] = False,
) -> int:
    """Print the dead letters, oldest first."""
    async with _store(database) as store:
        letters = await store.adead_letters(limit)
    for letter in letters:
        if json:
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
            print(jsonlib.dumps(line))
        else:
            print(
                f"{letter.event_id}  {letter.event_type!r}  {letter.entity_id!r}  "
                f"SQLSTATE {letter.sqlstate}  x{letter.attempts}  {letter.reason}"
            )
    if not letters and not json:
        print("no dead letters")
    return 0


@dead_letters.command
async def retry(
    event_id: DeadLetterId,
    /,
    *,
    database: DatabaseOptions = NO_DATABASE,
) -> int:
    """Append a dead letter to the log again (after fixing the cause)."""
    async with _store(database) as store:
        await store.aretry_dead_letter(event_id)
    print(f"stored {event_id} in the event log")
    return 0


@dead_letters.command
async def discard(
    event_id: DeadLetterId,
    /,
    *,
    database: DatabaseOptions = NO_DATABASE,
) -> int:
    """Delete a dead letter for good."""
    async with _store(database) as store:
        found = await store.adiscard_dead_letter(event_id)
    if not found:
        raise ValueError(f"no dead letter with event id {event_id}")
    print(f"discarded {event_id}")
    return 0


@events.command
async def consumers(
    *,
    database: DatabaseOptions = NO_DATABASE,
    name: Annotated[str | None, Parameter(help="only this consumer")] = None,
    dead_letters: Annotated[
        bool, Parameter(help="also list the events the consumers parked as dead letters")
    ] = False,
    json: Annotated[bool, Parameter(help="one JSON object per line")] = False,
) -> int:
    """Print the checkpointed consumers: position, lag behind the head, dead letters."""
    async with _store(database) as store:
        lags = await store.aconsumer_lag(name)
        letters = await store.aconsumer_dead_letters(name, 1000) if dead_letters else []
    for lag in lags:
        if json:
            print(
                jsonlib.dumps(
                    {
                        "consumer": lag.name,
                        "member": lag.member,
                        "group_size": lag.group_size,
                        "event_types": list(lag.event_types) if lag.event_types else None,
                        "position": lag.position,
                        "processed": lag.processed,
                        "events_behind": lag.events_behind,
                        "seconds_behind": lag.seconds_behind,
                        "dead_letters": lag.dead_letters,
                        "dead_lettered": lag.dead_lettered,
                        "updated_at": lag.updated_at.isoformat(),
                    }
                )
            )
        else:
            print(
                f"{lag.name}  member {lag.member}/{lag.group_size}  position {lag.position}  "
                f"processed {lag.processed}  behind {lag.events_behind} event(s), "
                f"{lag.seconds_behind:g} s  dead letters {lag.dead_letters}"
            )
    for letter in letters:
        if json:
            print(
                jsonlib.dumps(
                    {
                        "dead_letter_of": letter.consumer,
                        "member": letter.member,
                        "event_id": str(letter.event_id),
                        "position": letter.position,
                        "event_type": letter.event_type,
                        "entity_id": letter.entity_id,
                        "error": letter.error,
                        "attempts": letter.attempts,
                        "first_seen": letter.first_seen.isoformat(),
                        "last_seen": letter.last_seen.isoformat(),
                    }
                )
            )
        else:
            print(
                f"dead letter of {letter.consumer} (member {letter.member}): {letter.event_id}  "
                f"{letter.event_type!r}  {letter.entity_id!r}  position {letter.position}  "
                f"x{letter.attempts}  {letter.error}"
            )
    if not lags and not json:
        print("no consumers" if name is None else f"no consumer named {name!r}")
    return 0
