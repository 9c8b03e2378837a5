"""The durable local spool: where events wait while PostgreSQL cannot be reached.

Why SQLite: one file, transactions (a batch is spooled whole or not at all, even when the
process is killed), a primary key on the event id (spooling the same event twice keeps one
copy), safe for several processes (WAL + busy timeout) and in the standard library.
``synchronous=FULL`` makes every spool commit fsync'd: once ``emit`` returns, the event
survives a crash or a power cut.

Events keep their id, type, entity, payload and time of occurrence; when drained they are
appended with their original id, so an event that reached PostgreSQL just before the
connection broke is not stored twice.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from prefect_atlas.events.validation import PreparedEvent

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id     TEXT NOT NULL UNIQUE,
    event_type   TEXT NOT NULL,
    entity_id    TEXT NOT NULL,
    payload      BLOB NOT NULL,
    occurred_at  TEXT NOT NULL,
    spooled_at   REAL NOT NULL
)
"""


def dump_event(event: PreparedEvent) -> bytes:
    """One spooled event as JSON bytes in ASCII, so that any string survives the trip (the
    format of dead letters and of the vault's spool segments)."""
    return json.dumps(
        {
            "event_id": str(event.event_id),
            "event_type": event.event_type,
            "entity_id": event.entity_id,
            "payload": event.payload.decode("utf-8", "surrogateescape"),
            "occurred_at": event.occurred_at.isoformat(),
        }
    ).encode("ascii")


def load_event(data: bytes | str) -> PreparedEvent:
    """The event :func:`dump_event` wrote (``ValueError``/``KeyError`` if it is not one)."""
    raw = json.loads(data)
    return PreparedEvent(
        event_id=uuid.UUID(raw["event_id"]),
        event_type=raw["event_type"],
        entity_id=raw["entity_id"],
        payload=raw["payload"].encode("utf-8", "surrogateescape"),
        occurred_at=datetime.fromisoformat(raw["occurred_at"]),
    )


class Spool:
    """A SQLite file of events waiting to be stored, oldest first."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(
            path, timeout=30.0, isolation_level=None, check_same_thread=False
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute(_SCHEMA)

    def add(self, events: Sequence[PreparedEvent]) -> int:
        """Spool ``events`` in one fsync'd transaction; returns how many were new."""
        now = time.time()
        rows = [
            (str(e.event_id), e.event_type, e.entity_id, e.payload, e.occurred_at.isoformat(), now)
            for e in events
        ]
        with self._lock:
            before = self._conn.total_changes
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(
                    "INSERT OR IGNORE INTO spool (event_id, event_type, entity_id, payload, "
                    "occurred_at, spooled_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    rows,
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            return self._conn.total_changes - before

    def peek(self, limit: int, max_bytes: int | None = None) -> list[PreparedEvent]:
        """The oldest ``limit`` spooled events, in spooling order, and (past the first) no more
        than ``max_bytes`` of payload: rows are read one by one, never the whole spool."""
        events: list[PreparedEvent] = []
        size = 0
        with self._lock:
            cursor = self._conn.execute(
                "SELECT event_id, event_type, entity_id, payload, occurred_at FROM spool ORDER BY "
                "seq LIMIT ?",
                (limit,),
            )
            try:
                for event_id, event_type, entity_id, payload, occurred_at in cursor:
                    size += len(payload)
                    if events and max_bytes is not None and size > max_bytes:
                        break
                    events.append(
                        PreparedEvent(
                            event_id=uuid.UUID(event_id),
                            event_type=event_type,
                            entity_id=entity_id,
                            payload=bytes(payload),
                            occurred_at=datetime.fromisoformat(occurred_at),
                        )
                    )
            finally:
                cursor.close()
        return events

    def remove(self, event_ids: Sequence[uuid.UUID]) -> None:
        """Forget events that are now stored in PostgreSQL (one transaction)."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(
                    "DELETE FROM spool WHERE event_id = ?", [(str(i),) for i in event_ids]
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def count(self) -> int:
        with self._lock:
            row = self._conn.execute("SELECT count(*) FROM spool").fetchone()
        return int(row[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()
