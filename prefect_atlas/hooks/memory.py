"""Alert memory: Alertmanager-style deduplication that survives the process.

A failing pipeline retried every 5 minutes must not post 12 identical alerts an hour, and a
fixed pipeline should say so once. Each failure has a fingerprint (flow or task, deployment,
exception type); while it is *open*, the same fingerprint is sent again only after
``repeat_interval`` and the next alert says how many were suppressed meanwhile. When a later
run of the same flow completes, its open fingerprints are closed and one "resolved" message
goes out.

Beside the fingerprints it keeps one key per announced flow-run failure
(:func:`run_key`, ``flow-run:<id>|CRASHED``), claimed both by the hooks and by the Prefect
server's automations (through ``DiscordBlock.notify``), so a run is announced once whichever
path sees it first.

Hooks run in many processes (workers, ``python flow.py``, tests), so the memory outlives
them. Two backends share one decision rule (:func:`decide`):

* :class:`AlertMemory`, a SQLite file under ``$ATLAS_HOME`` with ``BEGIN IMMEDIATE``
  transactions: two processes of one host failing at once still send one alert. It needs no
  server, which keeps alerts working when the Atlas database is what broke.
* :class:`DatabaseAlertMemory`, the table ``atlas.open_alerts`` in the Atlas database, for
  several worker hosts (set ``ATLAS_ALERT_MEMORY_DATABASE`` to a DatabaseBlock name). When the
  database cannot be reached it falls back to the SQLite file, so an alert is never lost to
  its own bookkeeping.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from prefect_atlas import settings
from prefect_atlas._paths import atlas_home

if TYPE_CHECKING:
    from prefect_atlas.database import DatabaseBlock

# Name of a DatabaseBlock whose database keeps the alert memory for every worker host.
MEMORY_DATABASE_ENV = "ATLAS_ALERT_MEMORY_DATABASE"
"""The variable naming the DatabaseBlock that keeps the alert memory of every worker host."""

# How long "this flow run was announced as Crashed (Failed)" is remembered: the hooks and the
# server's automations both claim it, so one failure of one run is announced once.
RUN_DEDUP_WINDOW = 24 * 3600.0
RUN_KEY_PREFIX = "flow-run:"


def run_key(flow_run_id: object, state_type: object) -> str:
    """The dedup key of one flow run ending in one state type: ``flow-run:<id>|CRASHED``.

    Its scope is the key itself, so a later success of the flow never "resolves" it; keys
    older than :data:`RUN_DEDUP_WINDOW` are pruned when a new one is claimed.
    """
    state = str(getattr(state_type, "value", state_type)).upper()
    return f"{RUN_KEY_PREFIX}{str(flow_run_id).lower()}|{state}"


def run_key_state(key: str) -> str:
    """The state type a :func:`run_key` names."""
    return key.rpartition("|")[2]


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


def decide(
    row: tuple[float, float, int] | None, now: float, repeat_interval: float
) -> tuple[Claim, str]:
    """The claim for a failure given its open row ``(first_seen, last_sent, suppressed)``,
    and what to write: ``"insert"``, ``"suppress"`` or ``"send"``."""
    if row is None:
        return Claim(send=True, suppressed=0, first_seen=now, previous_last_sent=None), "insert"
    first_seen, last_sent, suppressed = row
    if now - last_sent < repeat_interval:
        return Claim(
            send=False,
            suppressed=suppressed + 1,
            first_seen=first_seen,
            previous_last_sent=last_sent,
        ), "suppress"
    return Claim(
        send=True, suppressed=suppressed, first_seen=first_seen, previous_last_sent=last_sent
    ), "send"


class AlertMemory:
    """Open failure fingerprints in ``$ATLAS_HOME/alerts.sqlite3`` (or ``path``)."""

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path is not None else atlas_home() / "alerts.sqlite3"

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        conn.executescript(_SCHEMA)
        return conn

    def claim(self, fingerprint: str, scope: str, exc_type: str, repeat_interval: float) -> Claim:
        """Record a failure; ``send`` is False while the same one was sent < ``repeat_interval``
        ago."""
        now = time.time()
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            if fingerprint.startswith(RUN_KEY_PREFIX):
                conn.execute(
                    "DELETE FROM open_alerts WHERE fingerprint LIKE ? AND last_sent < ?",
                    (RUN_KEY_PREFIX + "%", now - repeat_interval),
                )
            row = conn.execute(
                "SELECT first_seen, last_sent, suppressed FROM open_alerts WHERE fingerprint = ?",
                (fingerprint,),
            ).fetchone()
            claim, action = decide(row, now, repeat_interval)
            if action == "insert":
                conn.execute(
                    "INSERT INTO open_alerts (fingerprint, scope, exc_type, first_seen, "
                    "last_sent) VALUES (?, ?, ?, ?, ?)",
                    (fingerprint, scope, exc_type, now, now),
                )
            elif action == "suppress":
                conn.execute(
                    "UPDATE open_alerts SET suppressed = suppressed + 1, total = total + 1 "
                    "WHERE fingerprint = ?",
                    (fingerprint,),
                )
            else:
                conn.execute(
                    "UPDATE open_alerts SET last_sent = ?, suppressed = 0, total = total + 1 "
                    "WHERE fingerprint = ?",
                    (now, fingerprint),
                )
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
                conn.execute(
                    "DELETE FROM open_alerts WHERE fingerprint = ? AND total = 1", (fingerprint,)
                )
            else:
                conn.execute(
                    "UPDATE open_alerts SET last_sent = ?, "
                    "suppressed = suppressed + ? WHERE fingerprint = ?",
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
                "SELECT exc_type, first_seen, total FROM open_alerts "
                "WHERE scope = ? ORDER BY first_seen",
                (scope,),
            ).fetchall()
            conn.execute("DELETE FROM open_alerts WHERE scope = ?", (scope,))
            conn.execute("COMMIT")
            return [Resolved(exc_type=r[0], first_seen=r[1], total=r[2]) for r in rows]
        finally:
            conn.close()

    async def aclaim(
        self, fingerprint: str, scope: str, exc_type: str, repeat_interval: float
    ) -> Claim:
        """Async face of :meth:`claim` (runs it in a thread)."""
        return await asyncio.to_thread(self.claim, fingerprint, scope, exc_type, repeat_interval)

    async def arelease(self, fingerprint: str, claim: Claim) -> None:
        """Async face of :meth:`release` (runs it in a thread)."""
        await asyncio.to_thread(self.release, fingerprint, claim)

    async def aresolve(self, scope: str) -> list[Resolved]:
        """Async face of :meth:`resolve` (runs it in a thread)."""
        return await asyncio.to_thread(self.resolve, scope)


class DatabaseAlertMemory:
    """Open failures in ``atlas.open_alerts``: one memory for every worker host.

    ``database`` is a DatabaseBlock or the name of a saved one. Any failure to use the
    database (down, wrong password, schema not set up and not settable) falls back to
    ``fallback`` (the SQLite memory by default) with a warning: dedup then works per host
    until the database is back, and no alert is lost.
    """

    def __init__(self, database: str | DatabaseBlock, fallback: AlertMemory | None = None) -> None:
        self.database = database
        self._fallback = fallback
        self._schema_checked = False

    @property
    def fallback(self) -> AlertMemory:
        return self._fallback if self._fallback is not None else AlertMemory()

    async def _db(self) -> DatabaseBlock:
        from prefect_atlas._blocks import resolve_block
        from prefect_atlas.database import DatabaseBlock

        db = await resolve_block(DatabaseBlock, self.database)
        if not self._schema_checked:
            await db.asetup()  # a no-op when current; creates atlas.open_alerts otherwise
            self._schema_checked = True
        return db

    async def aclaim(
        self, fingerprint: str, scope: str, exc_type: str, repeat_interval: float
    ) -> Claim:
        """Record a failure in ``atlas.open_alerts``, as :meth:`AlertMemory.claim` does."""
        try:
            db = await self._db()
            now = time.time()
            async with db.connection() as conn:
                if fingerprint.startswith(RUN_KEY_PREFIX):
                    await conn.execute(
                        "DELETE FROM atlas.open_alerts WHERE fingerprint LIKE %s "
                        "AND last_sent < %s",
                        [RUN_KEY_PREFIX + "%", now - repeat_interval],
                    )
                cur = await conn.execute(
                    "INSERT INTO atlas.open_alerts (fingerprint, scope, exc_type, "
                    "first_seen, last_sent) VALUES (%s, %s, %s, %s, %s) "
                    "ON CONFLICT (fingerprint) DO NOTHING RETURNING fingerprint",
                    [fingerprint, scope, exc_type, now, now],
                )
                if await cur.fetchone() is not None:
                    return decide(None, now, repeat_interval)[0]
                cur = await conn.execute(
                    "SELECT first_seen, last_sent, suppressed FROM atlas.open_alerts "
                    "WHERE fingerprint = %s FOR UPDATE",
                    [fingerprint],
                )
                row = await cur.fetchone()
                claim, action = decide(row, now, repeat_interval)
                if action == "suppress":
                    await conn.execute(
                        "UPDATE atlas.open_alerts SET suppressed = suppressed + 1, "
                        "total = total + 1 WHERE fingerprint = %s",
                        [fingerprint],
                    )
                elif action == "send":
                    await conn.execute(
                        "UPDATE atlas.open_alerts SET last_sent = %s, suppressed = 0, "
                        "total = total + 1 WHERE fingerprint = %s",
                        [now, fingerprint],
                    )
                return claim
        except Exception as exc:
            _log_fallback(exc)
            return await self.fallback.aclaim(fingerprint, scope, exc_type, repeat_interval)

    async def arelease(self, fingerprint: str, claim: Claim) -> None:
        """Undo a claim whose alert was not delivered, as :meth:`AlertMemory.release` does."""
        try:
            db = await self._db()
            if claim.previous_last_sent is None:
                await db.aexecute(
                    "DELETE FROM atlas.open_alerts WHERE fingerprint = %s AND total = 1",
                    [fingerprint],
                )
            else:
                await db.aexecute(
                    "UPDATE atlas.open_alerts SET last_sent = %s, "
                    "suppressed = suppressed + %s WHERE fingerprint = %s",
                    [claim.previous_last_sent, claim.suppressed, fingerprint],
                )
        except Exception as exc:
            _log_fallback(exc)
            await self.fallback.arelease(fingerprint, claim)

    async def aresolve(self, scope: str) -> list[Resolved]:
        """Close (and return) the open failures of ``scope``, as :meth:`AlertMemory.resolve`."""
        try:
            db = await self._db()
            rows = await db.afetch_all(
                "DELETE FROM atlas.open_alerts WHERE scope = %s "
                "RETURNING exc_type, first_seen, total",
                [scope],
            )
        except Exception as exc:
            _log_fallback(exc)
            return await self.fallback.aresolve(scope)
        # failures remembered by the fallback while the database was away resolve too
        local = await self.fallback.aresolve(scope)
        found = [Resolved(exc_type=r[0], first_seen=float(r[1]), total=int(r[2])) for r in rows]
        return sorted(found + local, key=lambda r: r.first_seen)


def _log_fallback(exc: Exception) -> None:
    logging.getLogger("prefect_atlas.hooks").warning(
        "alert memory in the Atlas database unavailable (%s); using the local one under ATLAS_HOME",
        type(exc).__name__,
    )


def default_memory() -> AlertMemory | DatabaseAlertMemory:
    """``DatabaseAlertMemory`` when ``ATLAS_ALERT_MEMORY_DATABASE`` names a DatabaseBlock, else
    SQLite."""
    name = settings.read("atlas_alert_memory_database") or ""
    return DatabaseAlertMemory(name) if name else AlertMemory()
