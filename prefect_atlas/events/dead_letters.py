"""Dead letters: spooled events the server permanently refused, parked in ``atlas.dead_events``.

Why a dead-letter table and not a retry: an event reaches the spool while PostgreSQL is
unreachable, before the server ever saw it. If the server then refuses the event itself, no
retry can change the answer, and an event that stays at the head of the spool blocks every
event behind it — in every process that shares the spool. So the drain parks it here, with
the server's reason and SQLSTATE, and goes on; a person decides (``prefect-atlas events
dead-letters list|retry|discard``).

What counts as the event's own fault (:func:`refusal`): SQLSTATE classes 22 (data
exception, except characters the database's encoding cannot hold) and 23 (integrity
constraint), or a value the driver cannot send (a client-side
error with no SQLSTATE, a ``TypeError``/``ValueError`` while encoding the row). Everything
else — connection loss, a missing schema, permissions, the server shutting down — is the
environment's: the event stays in the spool and the drain is retried later.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import AsyncConnection

from prefect_atlas.events.batch import PreparedBatch
from prefect_atlas.events.spool import dump_event, load_event
from prefect_atlas.events.validation import PreparedEvent
from prefect_atlas.events.writer import append_batch
from prefect_atlas.exceptions import DeadLetterError
from prefect_atlas.resilience import is_connection_failure

# A spooled event that no longer parses, or a row the driver refused to encode.
CLIENT_SQLSTATE = "client"
# Data exceptions that are the database's, not the event's: a character the database's
# encoding cannot hold (a non-UTF8 database) — every good event would be parked.
_ENVIRONMENT_STATES = frozenset({"22021", "22P05"})


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One parked event: what it was, why the server refused it, when."""

    event_id: uuid.UUID
    event_type: str
    entity_id: str
    payload: str  # the JSON text as spooled (it may be what the server refused)
    occurred_at: str
    reason: str
    sqlstate: str | None
    attempts: int
    first_seen: datetime
    last_seen: datetime


def refusal(exc: BaseException) -> str | None:
    """The SQLSTATE (or ``"client"``) when ``exc`` is the event's own fault, else None."""
    if is_connection_failure(exc):
        return None
    if isinstance(exc, psycopg.Error):
        state = exc.sqlstate
        if state is None:
            return CLIENT_SQLSTATE  # raised by the driver while encoding the row
        if state in _ENVIRONMENT_STATES:
            return None
        return state if state[:2] in ("22", "23") else None
    if isinstance(exc, TypeError | ValueError | OverflowError):
        return CLIENT_SQLSTATE
    return None


def _printable(text: str) -> str:
    """A copy PostgreSQL text can hold whatever the original was (NULs, lone surrogates)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


async def park(
    conn: AsyncConnection[Any], event: PreparedEvent, exc: BaseException, state: str
) -> None:
    """Record ``event`` as refused (again: one row per event id, attempts counted)."""
    reason = " ".join(str(exc).split()) or type(exc).__name__
    await conn.execute(
        "INSERT INTO atlas.dead_events (event_id, event_type, entity_id, event, reason, sqlstate) "
        "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (event_id) DO UPDATE SET "
        "reason = EXCLUDED.reason, sqlstate = EXCLUDED.sqlstate, last_seen = now(), "
        "attempts = atlas.dead_events.attempts + 1",
        [
            event.event_id,
            _printable(event.event_type),
            _printable(event.entity_id),
            dump_event(event),
            _printable(reason)[:2000],
            state,
        ],
    )


_COLUMNS = (
    "event_id, event_type, entity_id, event, reason, sqlstate, attempts, first_seen, last_seen"
)


def _row(row: tuple[Any, ...]) -> DeadLetter:
    event_id, event_type, entity_id, data, reason, sqlstate, attempts, first_seen, last_seen = row
    try:
        raw = json.loads(bytes(data))
        payload, occurred_at = str(raw["payload"]), str(raw["occurred_at"])
    except (ValueError, KeyError, TypeError):
        payload, occurred_at = bytes(data).decode("utf-8", "replace"), ""
    return DeadLetter(
        event_id=event_id,
        event_type=event_type,
        entity_id=entity_id,
        payload=payload,
        occurred_at=occurred_at,
        reason=reason,
        sqlstate=sqlstate,
        attempts=attempts,
        first_seen=first_seen,
        last_seen=last_seen,
    )


async def fetch(conn: AsyncConnection[Any], limit: int) -> list[DeadLetter]:
    """The oldest ``limit`` dead letters."""
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM atlas.dead_events ORDER BY first_seen, event_id LIMIT %s",
        [limit],
    )
    return [_row(row) for row in await cur.fetchall()]


async def count(conn: AsyncConnection[Any]) -> int:
    cur = await conn.execute("SELECT count(*) FROM atlas.dead_events")
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def take(
    conn: AsyncConnection[Any], event_id: uuid.UUID
) -> tuple[PreparedEvent, bytes] | None:
    """Lock and return one dead letter (inside the caller's transaction), or None."""
    cur = await conn.execute(
        "SELECT event FROM atlas.dead_events WHERE event_id = %s FOR UPDATE", [event_id]
    )
    row = await cur.fetchone()
    if row is None:
        return None
    data = bytes(row[0])
    return load_event(data), data


async def delete(conn: AsyncConnection[Any], event_id: uuid.UUID) -> bool:
    cur = await conn.execute("DELETE FROM atlas.dead_events WHERE event_id = %s", [event_id])
    return cur.rowcount > 0


async def retry(conn: AsyncConnection[Any], key: uuid.UUID, *, notify: bool) -> Exception | None:
    """Append dead letter ``key`` to the log again and remove it; returns the server's
    refusal when it refuses the event again (then its reason and attempts are updated).

    Raises :class:`DeadLetterError` when there is no such dead letter.
    """
    async with conn.transaction():
        taken = await take(conn, key)
        if taken is None:
            raise DeadLetterError(f"no dead letter with event id {key}")
        event = taken[0]
        try:
            await append_batch(conn, PreparedBatch([event]), notify=notify)
        except Exception as exc:
            state = refusal(exc)
            if state is None:
                raise
            refused = exc
        else:
            await delete(conn, key)
            return None
    async with conn.transaction():
        await park(conn, event, refused, state)
    return refused
