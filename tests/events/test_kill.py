"""A process killed with SIGKILL in the middle of emit_many leaves all or nothing, never half:
killed while writing to PostgreSQL, and killed while writing the batch to the spool."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from prefect_atlas import DatabaseBlock, EventStore
from prefect_atlas.events.spool import Spool

CHILD = """
import asyncio, sys
from pydantic import SecretStr
from prefect_atlas import DatabaseBlock, EventStore, NewEvent

async def main():
    store = EventStore(DatabaseBlock(url=SecretStr(sys.argv[1])), spool_path=sys.argv[2])
    await store.aemit_many(
        [NewEvent("kill.test", f"e{i % 10}", {"i": i, "pad": "x" * 200}) for i in range(200_000)]
    )
    print("done", flush=True)

asyncio.run(main())
"""


async def test_sigkill_during_emit_many_is_all_or_nothing(
    db: DatabaseBlock, database_url: str, tmp_path: Path
) -> None:
    await db.asetup()
    spool = tmp_path / "spool.sqlite"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, database_url, str(spool)], env=os.environ.copy()
    )
    deadline = time.monotonic() + 120
    with psycopg.connect(database_url, autocommit=True) as watcher:
        while time.monotonic() < deadline and child.poll() is None:
            row = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND "
                "query LIKE 'COPY atlas.events%%'"
            ).fetchone()
            if row and row[0]:
                break
            time.sleep(0.01)
    assert child.poll() is None, (
        "the child finished before it could be killed; make the batch larger"
    )
    time.sleep(0.2)  # well inside the COPY
    child.send_signal(signal.SIGKILL)
    child.wait(30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the server notices the dead client and rolls back
        [stored] = await db.afetch_all("SELECT count(*) FROM atlas.events")  # fresh each time
        [busy] = await db.afetch_all(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query "
            "LIKE 'COPY atlas.events%%' AND pid <> pg_backend_pid()"
        )
        if busy == (0,):
            break
        time.sleep(0.1)
    assert stored in [(0,), (200_000,)]
    gaps = await db.afetch_one(
        "SELECT count(*) FROM (SELECT entity_id FROM atlas.events GROUP BY 1 HAVING max(version) "
        "<> count(*)) AS g"
    )
    assert gaps == (0,)  # versions 1..n per entity, none burnt


SPOOL_CHILD = """
import asyncio, json, sys
from pydantic import SecretStr
from prefect_atlas import DatabaseBlock, EventStore, NewEvent

async def main():
    store = EventStore(
        DatabaseBlock(url=SecretStr(sys.argv[1])), spool_path=sys.argv[2], connect_timeout=1.0
    )
    first = await store.aemit_many(
        [NewEvent("kill.spool", f"e{i % 10}", {"i": i}) for i in range(1000)]
    )
    assert store.spool_size() == 1000, store.spool_size()
    with open(sys.argv[3], "w") as out:
        json.dump([str(i) for i in first], out)
    await store.aemit_many(
        [NewEvent("kill.spool", f"e{i % 10}", {"i": i, "pad": "x" * 200}) for i in range(150_000)]
    )
    print("done", flush=True)

asyncio.run(main())
"""


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_sigkill_while_spooling_a_batch_keeps_all_or_none_then_drains_once(
    db: DatabaseBlock, tmp_path: Path
) -> None:
    """PostgreSQL unreachable, so emit_many spools; the process dies inside the spool's write."""
    await db.asetup()
    spool_path = tmp_path / "spool.sqlite"
    wal = tmp_path / "spool.sqlite-wal"
    first_ids = tmp_path / "first.json"
    unreachable = f"postgresql://postgres@127.0.0.1:{_closed_port()}/postgres"
    child = subprocess.Popen(
        [sys.executable, "-c", SPOOL_CHILD, unreachable, str(spool_path), str(first_ids)],
        env=os.environ.copy(),
    )
    killed_mid_write = False
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and child.poll() is None:
            # The first batch is committed; the big one spills its pages into the WAL as it
            # is written, long before its commit: a WAL of several MiB means "mid-transaction".
            if first_ids.exists() and wal.exists() and wal.stat().st_size > 4 * 1024 * 1024:
                child.send_signal(signal.SIGKILL)
                killed_mid_write = True
                break
            time.sleep(0.005)
    finally:
        if child.poll() is None and not killed_mid_write:
            child.kill()
        child.wait(30)
    assert killed_mid_write, "the child finished (or failed) before its spool write could be killed"
    assert child.returncode == -signal.SIGKILL

    spool = Spool(spool_path)
    try:
        spooled = spool.count()
    finally:
        spool.close()
    assert spooled in (1000, 151_000)  # the big batch whole or not at all, never a part

    store = EventStore(db, spool_path=str(spool_path))
    try:
        assert await store.adrain() == spooled
        assert store.spool_size() == 0
        assert await store.adrain() == 0  # nothing left to store twice
    finally:
        store.close()
    assert await db.afetch_one("SELECT count(*), count(DISTINCT event_id) FROM atlas.events") == (
        spooled,
        spooled,
    )
    stored = {str(r[0]) for r in await db.afetch_all("SELECT event_id FROM atlas.events")}
    assert set(json.loads(first_ids.read_text())) <= stored  # the original ids were kept
    gaps = await db.afetch_one(
        "SELECT count(*) FROM (SELECT entity_id FROM atlas.events GROUP BY 1 HAVING max(version) "
        "<> count(*)) AS g"
    )
    assert gaps == (0,)
