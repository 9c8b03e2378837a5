"""Alert memory: Alertmanager-style deduplication that survives the process.

A failing pipeline retried every 5 minutes must not post 12 identical alerts an hour, and a
fixed pipeline should say so once. Each failure has a fingerprint (flow or task, deployment,
exception type); while it is *open*, the same fingerprint is sent again only after
``repeat_interval`` and the next alert says how many were suppressed meanwhile. When a later
run of the same flow completes, its open fingerprints are closed and one "resolved" message
goes out.

Hooks run in many processes (workers, ``python flow.py``, tests), so the memory is a SQLite
file under ``$ATLAS_HOME`` with ``BEGIN IMMEDIATE`` transactions: two processes failing at
once still send one alert. SQLite needs no server, which keeps alerts working when the
Atlas database is what broke.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from prefect_atlas._paths import atlas_home

_SCHEMA = """
CREATE TABLE IF NOT EXISTS open_alerts (
    fingerprint TEXT PRIMARY KEY,
    scope       TEXT NOT NULL,
    exc_type    TEXT NOT NULL,
    first_seen  REAL NOT NULL,
    last_sent   REAL NOT NULL,
    suppressed  INTEGER NOT NULL DEFAULT 0,
    total       INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS open_alerts_scope ON open_alerts (scope);
"""


@dataclass(frozen=True)
class Claim:
    """Whether to send a failure alert now, and what to say about the ones before it."""

    send: bool
    suppressed: int  # alerts suppressed since the last one sent (including this one when not sent)
    first_seen: float
    previous_last_sent: float | None  # to undo the claim when delivery fails


@dataclass(frozen=True)
class Resolved:
    """An open failure that a later successful run closed."""

    exc_type: str
    first_seen: float
    total: int


class AlertMemory:
    """Open failure fingerprints in ``$ATLAS_HOME/alerts.sqlite3`` (or ``path``)."""

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path is not None else atlas_home() / "alerts.sqlite3"

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        conn.executescript(_SCHEMA)
        return conn

    def claim(self, fingerprint: str, scope: str, exc_type: str, repeat_interval: float) -> Claim:
        """Record a failure; ``send`` is False while the same one was sent < ``repeat_interval`` ago."""
        now = time.time()
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            row = conn.execute(
                "SELECT first_seen, last_sent, suppressed FROM open_alerts WHERE fingerprint = ?", (fingerprint,)
            ).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO open_alerts (fingerprint, scope, exc_type, first_seen, last_sent) VALUES (?, ?, ?, ?, ?)",
                    (fingerprint, scope, exc_type, now, now),
                )
                claim = Claim(send=True, suppressed=0, first_seen=now, previous_last_sent=None)
            elif now - row[1] < repeat_interval:
                conn.execute(
                    "UPDATE open_alerts SET suppressed = suppressed + 1, total = total + 1 WHERE fingerprint = ?",
                    (fingerprint,),
                )
                claim = Claim(send=False, suppressed=row[2] + 1, first_seen=row[0], previous_last_sent=row[1])
            else:
                conn.execute(
                    "UPDATE open_alerts SET last_sent = ?, suppressed = 0, total = total + 1 WHERE fingerprint = ?",
                    (now, fingerprint),
                )
                claim = Claim(send=True, suppressed=row[2], first_seen=row[0], previous_last_sent=row[1])
            conn.execute("COMMIT")
            return claim
        finally:
            conn.close()

    def release(self, fingerprint: str, claim: Claim) -> None:
        """Undo a claim whose alert was not delivered, so the next failure tries again."""
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            if claim.previous_last_sent is None:
                conn.execute("DELETE FROM open_alerts WHERE fingerprint = ? AND total = 1", (fingerprint,))
            else:
                conn.execute(
                    "UPDATE open_alerts SET last_sent = ?, suppressed = suppressed + ? WHERE fingerprint = ?",
                    (claim.previous_last_sent, claim.suppressed, fingerprint),
                )
            conn.execute("COMMIT")
        finally:
            conn.close()

    def resolve(self, scope: str) -> list[Resolved]:
        """Close (and return) the open failures of ``scope``; a second call returns nothing."""
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            rows = conn.execute(
                "SELECT exc_type, first_seen, total FROM open_alerts WHERE scope = ? ORDER BY first_seen", (scope,)
            ).fetchall()
            conn.execute("DELETE FROM open_alerts WHERE scope = ?", (scope,))
            conn.execute("COMMIT")
            return [Resolved(exc_type=r[0], first_seen=r[1], total=r[2]) for r in rows]
        finally:
            conn.close()

    async def aclaim(self, fingerprint: str, scope: str, exc_type: str, repeat_interval: float) -> Claim:
        return await asyncio.to_thread(self.claim, fingerprint, scope, exc_type, repeat_interval)

    async def arelease(self, fingerprint: str, claim: Claim) -> None:
        await asyncio.to_thread(self.release, fingerprint, claim)

    async def aresolve(self, scope: str) -> list[Resolved]:
        return await asyncio.to_thread(self.resolve, scope)
