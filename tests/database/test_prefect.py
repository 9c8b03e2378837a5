"""DatabaseBlock inside Prefect: saved and loaded in a fresh process, used by flows and tasks."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import cast

from prefect import flow, task, unmapped
from prefect.settings import PREFECT_API_URL
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import SecretStr

from prefect_atlas import DatabaseBlock
from prefect_atlas._blocks import resolve_block
from prefect_atlas.database import shipped_migrations


async def test_save_then_load_in_a_fresh_process(database_url: str) -> None:
    await DatabaseBlock(
        url=SecretStr(database_url), max_size=7, application_name="atlas-test"
    ).asave("prod", overwrite=True)
    script = (
        "from prefect_atlas import DatabaseBlock\n"
        "db = DatabaseBlock.load('prod')\n"
        "db.setup()\n"
        "print(db.max_size, db.fetch_one('SELECT current_setting(%s)', ['application_name'])[0],"
        " db.health().schema_version)\n"
        "db.close()\n"
    )
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    out = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["7", "atlas-test", str(shipped_migrations()[-1].version)]


@task
def count_in_thread(db: DatabaseBlock, n: int) -> int:
    row = db.fetch_one("SELECT %s::int * 2", [n])
    assert row is not None
    return int(row[0])


@task
async def count_async(db: DatabaseBlock, n: int) -> int:
    row = await db.afetch_one("SELECT %s::int * 3", [n])
    assert row is not None
    return int(row[0])


@flow(task_runner=ThreadPoolTaskRunner(max_workers=4))  # type: ignore[arg-type]  # Prefect 3.9 typing
def sync_flow(block_name: str) -> list[int]:
    db = cast(DatabaseBlock, DatabaseBlock.load(block_name))
    db.setup()
    futures = count_in_thread.map(unmapped(db), list(range(8)))
    async_futures = count_async.map(unmapped(db), list(range(4)))
    return [f.result() for f in futures] + [cast(int, f.result()) for f in async_futures]


@flow
async def async_flow(block_name: str) -> int:
    db = await resolve_block(DatabaseBlock, block_name)
    async with db:
        await db.asetup()
        results = [await count_async(db, n) for n in range(3)]
        return sum(results)


async def test_block_in_sync_and_async_flows(database_url: str) -> None:
    await DatabaseBlock(url=SecretStr(database_url)).asave("flows", overwrite=True)
    assert await async_flow("flows") == 9


def test_block_in_a_sync_flow_with_threaded_tasks(database_url: str) -> None:
    DatabaseBlock(url=SecretStr(database_url)).save("flows-sync", overwrite=True)
    assert sync_flow("flows-sync") == [2 * n for n in range(8)] + [3 * n for n in range(4)]
