"""Scale-out: the ingest flow and the shipped tasks on Dask and on Prefect's process pool.

The reference ingest flow runs three times — default task runner (threads), a Dask
``LocalCluster`` of two worker processes, and Prefect's ``ProcessPoolTaskRunner`` with two
processes — each on a database and a vault of its own; rows, vault objects, events and the
summary must come out identical, with no event stored twice. A second flow maps every shipped
task over the same runners: blocks are pickled to the workers, and the workers reopen their own
pools, sessions and limiters. The workers inherit this process's environment (``ATLAS_HOME``,
``PREFECT_*``), which the test harness sets before any cluster starts; Prefect hands them its
settings (the API URL) with each task.

Slow (a Dask cluster and a process pool start here); runs in ``make test`` and CI.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import psycopg
import pytest
from prefect import flow, task, unmapped
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner
from pydantic import SecretStr

from prefect_atlas import DatabaseBlock, DiscordBlock, VaultBlock
from prefect_atlas.flows import ingest
from prefect_atlas.flows.ingest import EVENT_NAMESPACE
from prefect_atlas.health import SystemHealth
from prefect_atlas.tasks import (
    emit_events,
    store_json,
    system_health_check,
    upsert_rows,
)
from tests._pg import create_database, drop_database
from tests.discord._server import DiscordServer

# Three ingests and a cluster start: generous bounds for a loaded 2-core machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def dask_runner() -> TaskRunner[Any]:
    from prefect_dask.task_runners import DaskTaskRunner

    runner: TaskRunner[Any] = DaskTaskRunner(
        cluster_kwargs={"n_workers": 2, "processes": True, "dashboard_address": None}
    )
    return runner


RUNNERS: dict[str, Callable[[], TaskRunner[Any] | None]] = {
    "default": lambda: None,
    "dask": dask_runner,
    "process-pool": lambda: ProcessPoolTaskRunner(max_workers=2),
}


class Site:
    """One database, one vault folder and a Discord webhook, saved as blocks under one name."""

    def __init__(self, admin_url: str, root: Path, discord: DiscordServer) -> None:
        self.admin_url = admin_url
        self.url = create_database(admin_url)
        self.name = f"runners-{uuid.uuid4().hex[:8]}"
        self.vault_root = root / "vault"
        self.hook = discord.add_webhook()
        self.db = DatabaseBlock(url=SecretStr(self.url), timeout=20)
        self.vault = VaultBlock(root=str(self.vault_root))
        self.discord = DiscordBlock(
            allowed_hosts=["127.0.0.1"], alerts=SecretStr(discord.url(self.hook))
        )

    async def save(self) -> None:
        await self.db.asave(self.name)
        await self.vault.asave(self.name)
        await self.discord.asave(self.name)

    def rows(self, query: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url) as conn:
            return conn.execute(query).fetchall()

    def objects(self) -> dict[str, str]:
        """Every vault object (sidecars aside) by path, as its sha256."""
        return {
            str(p.relative_to(self.vault_root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(self.vault_root.rglob("*"))
            if p.is_file() and ".atlas" not in p.relative_to(self.vault_root).parts
        }

    def close(self) -> None:
        drop_database(self.admin_url, self.url)


@pytest.fixture
def sites(pg_admin_url: str, tmp_path: Path) -> Iterator[Callable[[str], Site]]:
    server = DiscordServer().start()
    made: list[Site] = []

    def make(label: str) -> Site:
        site = Site(pg_admin_url, tmp_path / label, server)
        made.append(site)
        return site

    try:
        yield make
    finally:
        for site in made:
            site.close()
        server.stop()


def with_runner(f: Any, runner: TaskRunner[Any] | None) -> Any:
    return f if runner is None else f.with_options(task_runner=runner)


def ingest_snapshot(site: Site, summary: Any) -> dict[str, Any]:
    """What an ingest run left behind, without what differs by run (ids, times)."""
    run_id = summary.flow_run_id
    events = site.rows(
        "SELECT event_id::text, event_type, entity_id, version, payload FROM atlas.events"
    )
    # no event twice; every id is the one the flow derives from its run and the video
    assert len(events) == len({e[0] for e in events}) == summary.events_emitted
    for event_id, event_type, entity_id, _, payload in events:
        key = "completed" if event_type == "ingest.completed" else entity_id
        assert event_id == str(uuid.uuid5(EVENT_NAMESPACE, f"{run_id}:{key}"))
        if event_type == "video.ingested":
            assert payload["flow_run_id"] == run_id
    return {
        "summary": summary.model_dump(exclude={"flow_run_id", "timings_s"}),
        "channels": site.rows(
            "SELECT channel_id, title, handle, country FROM atlas.channels ORDER BY 1"
        ),
        "videos": site.rows(
            "SELECT video_id, channel_id, title, description, category_id, tags, duration_s,"
            " view_count, published_at, status FROM atlas.videos ORDER BY 1"
        ),
        "transcripts": site.rows(
            "SELECT video_id, language, vault_provider, vault_path, segment_count"
            " FROM atlas.transcripts ORDER BY 1, 2"
        ),
        "events": sorted(
            (
                event_type,
                entity_id if event_type != "ingest.completed" else "flow-run",
                version,
                json.dumps({k: v for k, v in payload.items() if k != "flow_run_id"}),
            )
            for _, event_type, entity_id, version, payload in events
        ),
        "objects": site.objects(),
    }


async def test_ingest_is_identical_on_threads_dask_and_a_process_pool(
    sites: Callable[[str], Site],
) -> None:
    snapshots: dict[str, dict[str, Any]] = {}
    for label, make_runner in RUNNERS.items():
        site = sites(label)
        await site.save()
        summary = await with_runner(ingest, make_runner())(
            database=site.name, vault=site.name, discord=site.name
        )
        snapshots[label] = ingest_snapshot(site, summary)
        assert site.hook.received == []  # nothing failed: no alert
    baseline = snapshots["default"]
    assert baseline["summary"]["videos"] == 12 and len(baseline["objects"]) == 36
    assert len(baseline["events"]) == 13
    for label in ("dask", "process-pool"):
        for part, value in baseline.items():
            assert snapshots[label][part] == value, f"{label}: {part} differs"


@task(name="worker-pid")
def getpid() -> int:
    """Which process ran the task (this module pickles by reference: workers import it)."""
    return os.getpid()


@flow(name="fan-out")
def fan_out(db: DatabaseBlock, vault: str, discord: DiscordBlock, n: int) -> dict[str, Any]:
    """Every shipped task mapped over the flow's task runner, from a ``def`` flow."""
    pids = [getpid.submit() for _ in range(n)]
    rows = upsert_rows.map(
        "public.fan",
        [[{"k": i, "v": i * i}] for i in range(n)],
        key_columns=unmapped(["k"]),
        database=unmapped(db),
    )
    events = emit_events.map(
        [[{"event_type": "fan.out", "entity_id": f"e{i}"}] for i in range(n)],
        database=unmapped(db),
    )
    stored = store_json.map(
        vault, [f"fan/{i}.json" for i in range(n)], [{"i": i} for i in range(n)]
    )
    health = system_health_check.submit(db, vault, discord)
    return {
        "pids": sorted({p.result() for p in pids}),
        "rows": rows.result(),
        # Prefect types the results of async tasks' futures as coroutines: they are values
        "events": [str(i) for ids in cast(list[list[uuid.UUID]], events.result()) for i in ids],
        "stored": stored.result(),
        "health": cast(SystemHealth, health.result()).ok,
    }


@pytest.mark.parametrize("label", ["dask", "process-pool"])
async def test_shipped_tasks_run_in_worker_processes(
    label: str, sites: Callable[[str], Site]
) -> None:
    site = sites(label)
    await site.save()
    await site.db.asetup()
    await site.db.aexecute("CREATE TABLE public.fan (k INT PRIMARY KEY, v INT NOT NULL)")
    await site.db.aclose()
    n = 6
    # the vault goes by its saved name (the workers load it from the API), the rest as blocks
    out = with_runner(fan_out, RUNNERS[label]())(site.db, site.name, site.discord, n)
    assert out["pids"] and os.getpid() not in out["pids"]
    assert out["rows"] == [1] * n
    assert out["stored"] == [f"fan/{i}.json" for i in range(n)]
    assert out["health"] is True
    assert site.rows("SELECT k, v FROM public.fan ORDER BY k") == [(i, i * i) for i in range(n)]
    events = site.rows("SELECT event_id::text, entity_id FROM atlas.events ORDER BY entity_id")
    assert sorted(e[0] for e in events) == sorted(out["events"])
    assert [e[1] for e in events] == [f"e{i}" for i in range(n)]
    assert {p: json.loads((site.vault_root / p).read_text()) for p in out["stored"]} == {
        f"fan/{i}.json": {"i": i} for i in range(n)
    }
    assert site.hook.received == []
