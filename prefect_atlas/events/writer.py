"""Appending to ``atlas.events`` on a given connection: one event, or a batch by binary COPY.

Only the SQL: which connection, the deadline, the breaker and the spool are the caller's
(see ``guard.py``). Both statements take the per-entity advisory locks the versions rely
on (see ``store.py``) and NOTIFY subscribers when ``notify`` is set. Stored ids are looked
up in ``atlas.event_ids`` (every id ever stored, whichever partition holds or held the
event; its primary key is the ``events_event_id_key`` a duplicate fails on).
"""

from __future__ import annotations

import uuid
from contextlib import suppress
from typing import Any

import psycopg
from psycopg import AsyncConnection, postgres
from psycopg.abc import Buffer
from psycopg.adapt import Dumper
from psycopg.pq import Format

from prefect_atlas.events.batch import Batch
from prefect_atlas.events.validation import PreparedEvent
from prefect_atlas.exceptions import ConcurrencyError

_VERSION_MISMATCH = "AT002"
_EVENT_ID_KEY = "events_event_id_key"
# A batch that meets a concurrent writer of the same event id retries this often.
_BATCH_ATTEMPTS = 5

_APPEND_ONE = "SELECT atlas.append_event(%s, %s, %s, %s, %s, %s, %s)"
# Locks the entities (sorted), returns their versions and moves them forward by the batch's
# counts: one round trip before the COPYs.
_LOCK_ENTITIES = (
    "SELECT entity_id, version FROM atlas.lock_entities(%s::text[], %s::bigint[], %s::boolean)"
)
# Every stored id, whichever partition holds the event (23505 on _EVENT_ID_KEY: stored before).
_COPY_IDS = "COPY atlas.event_ids (event_id) FROM STDIN (FORMAT BINARY)"
_COPY_EVENTS = (
    "COPY atlas.events (event_id, event_type, entity_id, version, payload, occurred_at) "
    "FROM STDIN (FORMAT BINARY)"
)
_COPY_TYPES = ["uuid", "text", "text", "int8", "jsonb", "timestamptz"]


class _EncodedJsonb:
    """Marker type the binary JSONB dumper below is registered for (COPY picks it by oid)."""


class _EncodedJsonbDumper(Dumper):
    """Binary JSONB from JSON bytes orjson already made: format version 1, then the text.

    Why: psycopg's own JSONB dumper would serialize the payload again; the payload was
    serialized (and its size and NULs checked) once, when the event was prepared.
    """

    format = Format.BINARY
    oid = postgres.types["jsonb"].oid

    def dump(self, obj: bytes) -> Buffer:
        return b"\x01" + obj


# Binary COPY framing (see PostgreSQL's COPY docs): signature, flags, header extension length;
# per row a field count (1) and the field's length (16); the trailer.
_BINARY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
_ONE_UUID = b"\x00\x01\x00\x00\x00\x10"
_BINARY_TRAILER = b"\xff\xff"


def _binary_ids(ids: list[uuid.UUID], skip: set[uuid.UUID]) -> bytes:
    """The ids (those in ``skip`` left out) as one binary COPY stream of a UUID column: built
    in one join, where a row-by-row write costs a Python call per id."""
    rows = b"".join(_ONE_UUID + i.bytes for i in ids if not (skip and i in skip))
    return _BINARY_HEADER + rows + _BINARY_TRAILER


async def append_one(conn: AsyncConnection[Any], event: PreparedEvent, *, notify: bool) -> None:
    """Append one event (checking ``expected_version`` when set); a stored id is a no-op."""
    # One statement in autocommit: one round trip; on any error it rolls back whole.
    await conn.set_autocommit(True)
    try:
        await conn.execute(
            _APPEND_ONE,
            [
                event.event_id,
                event.event_type,
                event.entity_id,
                event.payload.decode(),
                event.occurred_at,
                event.expected_version,
                notify,
            ],
            prepare=True,
        )
    except psycopg.errors.UniqueViolation as exc:
        if exc.diag.constraint_name == _EVENT_ID_KEY:
            return  # stored before: a retry, nothing new
        raise
    except psycopg.Error as exc:
        if exc.sqlstate == _VERSION_MISMATCH and event.expected_version is not None:
            cur = await conn.execute(
                "SELECT 1 FROM atlas.event_ids WHERE event_id = %s", [event.event_id]
            )
            if await cur.fetchone():
                return  # the retry of an emit that had succeeded
            actual = int(exc.diag.message_detail or -1)
            raise ConcurrencyError(event.entity_id, event.expected_version, actual) from None
        raise
    finally:
        if not conn.closed and not conn.broken:
            with suppress(psycopg.Error):
                await conn.set_autocommit(False)


async def append_batch(conn: AsyncConnection[Any], batch: Batch, *, notify: bool) -> None:
    """Append in one transaction: lock the entities, read and advance their versions, COPY
    the ids into ``atlas.event_ids`` (a stored one fails here, before any row is sent), then
    COPY the rows.

    Binary COPY: the server parses no UUID, integer or timestamp text, and the payload
    goes over as the JSON orjson made (see ``_EncodedJsonbDumper``). The payloads of a
    new batch are serialized row by row while the COPY streams (see ``batch.py``); a bad
    one aborts the COPY, the transaction rolls back and its error is raised.
    """
    known: set[uuid.UUID] = set()
    for attempt in range(_BATCH_ATTEMPTS):
        try:
            async with conn.transaction():
                if attempt:
                    # An id met the unique key: skip those already stored.
                    cur = await conn.execute(
                        "SELECT event_id FROM atlas.event_ids WHERE event_id = ANY(%s)",
                        [batch.event_ids()],
                    )
                    known = {row[0] for row in await cur.fetchall()}
                    if len(known) == len(batch):
                        return
                counts = batch.entity_counts(known)
                cur = await conn.execute(
                    _LOCK_ENTITIES, [list(counts), list(counts.values()), notify]
                )
                version = dict(await cur.fetchall())
                async with conn.cursor().copy(_COPY_IDS) as copy:
                    await copy.write(_binary_ids(batch.event_ids(), known))
                cur = conn.cursor()
                cur.adapters.register_dumper(_EncodedJsonb, _EncodedJsonbDumper)
                async with cur.copy(_COPY_EVENTS) as copy:
                    copy.set_types(_COPY_TYPES)
                    write_row = copy.write_row
                    for event_id, event_type, entity_id, payload, occurred_at in batch.rows(known):
                        v = version[entity_id] = version[entity_id] + 1
                        await write_row((event_id, event_type, entity_id, v, payload, occurred_at))
            return
        except psycopg.errors.UniqueViolation as exc:
            if exc.diag.constraint_name != _EVENT_ID_KEY or attempt == _BATCH_ATTEMPTS - 1:
                raise
