"""A process killed with SIGKILL in the middle of emit_many leaves all or nothing, never half."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from prefect_atlas import DatabaseBlock

CHILD = """
import asyncio, sys
from pydantic import SecretStr
from prefect_atlas import DatabaseBlock, EventStore, NewEvent

async def main():
    store = EventStore(DatabaseBlock(url=SecretStr(sys.argv[1])), spool_path=sys.argv[2])
    await store.aemit_many([NewEvent("kill.test", f"e{i % 10}", {"i": i, "pad": "x" * 200}) for i in range(200_000)])
    print("done", flush=True)

asyncio.run(main())
"""


async def test_sigkill_during_emit_many_is_all_or_nothing(db: DatabaseBlock, database_url: str, tmp_path: Path) -> None:
    await db.asetup()
    spool = tmp_path / "spool.sqlite"
    child = subprocess.Popen([sys.executable, "-c", CHILD, database_url, str(spool)], env=os.environ.copy())
    deadline = time.monotonic() + 120
    with psycopg.connect(database_url, autocommit=True) as watcher:
        while time.monotonic() < deadline and child.poll() is None:
            row = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'COPY atlas.events%%'"
            ).fetchone()
            if row and row[0]:
                break
            time.sleep(0.01)
    assert child.poll() is None, "the child finished before it could be killed; make the batch larger"
    time.sleep(0.2)  # well inside the COPY
    child.send_signal(signal.SIGKILL)
    child.wait(30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the server notices the dead client and rolls back
        stored = await db.afetch_one("SELECT count(*) FROM atlas.events")
        busy = await db.afetch_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'COPY atlas.events%%' AND pid <> pg_backend_pid()"
        )
        if busy == (0,):
            break
        time.sleep(0.1)
    assert stored in [(0,), (200_000,)]
    streams = await db.afetch_one("SELECT coalesce(sum(version), 0) FROM atlas.event_streams")
    assert streams == stored  # versions were not burnt either
