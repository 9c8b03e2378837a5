"""The relay into Prefect's events, end to end: a crash mid-way loses nothing.

A real `prefect server start`, a process work pool and worker, a tiny deployment, and an
Automation (created through Prefect's client API) that runs it when `atlas.video.ingested`
arrives for one video. The event log gets 600 filler events and then what the ingest flow
emits (`python flows/ingest.py`: 12 `video.ingested` and one `ingest.completed`). The relay
runs as a child process (`prefect-atlas events relay`, batches of 20), is SIGKILLed once some
but not all batches are committed, and is started again. Then every Atlas event is in
Prefect's event store exactly once (at least once sent, one per id stored), none is missing,
and the automation's flow run of the deployment exists and completed — once.

Slow (two to three minutes on a loaded machine): a server, a deploy, the ingest flow, the
relay twice and one flow run on the worker.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.client.schemas.objects import FlowRun
from prefect.events.actions import RunDeployment
from prefect.events.filters import EventFilter, EventIDFilter, EventOccurredFilter
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.settings import PREFECT_API_URL, temporary_settings

from prefect_atlas import DatabaseBlock, EventStore, NewEvent
from tests.e2e._server import BIN, PrefectServer, stop_process

ROOT = Path(__file__).resolve().parents[2]
FILLER = 600
BATCH = 20

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REACTOR = """
from prefect import flow


@flow(name="atlas-e2e-reaction")
def react(video: str) -> str:
    print(f"reacting to {video}")
    return video
"""


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[PrefectServer]:
    (tmp_path / "prefect").mkdir()
    srv = PrefectServer(
        tmp_path / "prefect",
        {
            "ATLAS_HOME": str(tmp_path / "atlas"),
            "DATABASE_URL": database_url,
            "VAULT_PROVIDER": "local",
            "VAULT_ROOT": str(tmp_path / "vault"),
            "ENV": "e2e",
            # the relay, the ingest flow and the worker's flow import this checkout
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
            ),
            "PREFECT_WORKER_QUERY_SECONDS": "2",
            # the event persister writes every second (default 5) or at 1000 events: a batch
            # of the relay waits for the flush, so the kill can land on a batch that Prefect
            # stored and the relay had not committed yet
            "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL": "1",
            "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_BATCH_SIZE": "1000",
        },
    )
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def checkpoint(database_url: str) -> int:
    """Events the relay's checkpoint has passed (0 before its first commit)."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT processed FROM atlas.consumers WHERE name = 'prefect-relay'"
        ).fetchone()
    return 0 if row is None else int(row[0])


async def stored_in_prefect(client: PrefectClient, ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
    """The ids of ``ids`` Prefect's event store holds, one entry per stored event."""
    window = EventOccurredFilter(
        since=datetime.now(UTC) - timedelta(days=1), until=datetime.now(UTC) + timedelta(hours=1)
    )
    found: list[uuid.UUID] = []
    for start in range(0, len(ids), 50):
        chunk = list(ids[start : start + 50])
        page = await client.read_events(
            EventFilter(id=EventIDFilter(id=chunk), occurred=window), limit=50
        )
        found += [event.id for event in page.events]
    return found


async def reaction_runs(client: PrefectClient, deployment: uuid.UUID) -> list[FlowRun]:
    return await client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment]))
    )


def spawn_relay(server: PrefectServer, database_url: str, log: Path) -> subprocess.Popen[bytes]:
    return server.spawn(
        [
            str(BIN / "prefect-atlas"),
            "events",
            "relay",
            "--url",
            database_url,
            "--batch-size",
            str(BATCH),
        ],
        cwd=ROOT,
        log=log,
    )


async def test_relay_killed_mid_way_delivers_every_event_and_the_automation_runs(
    server: PrefectServer, database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.run([str(BIN / "prefect-atlas"), "setup", "--url", database_url], cwd=ROOT)
    saved = server.run(
        [str(BIN / "prefect-atlas"), "blocks", "from-env", "--name", "default"], cwd=ROOT
    )
    assert "saved " in saved.stdout, saved.stdout

    project = tmp_path / "project"
    project.mkdir()
    (project / "reactor.py").write_text(REACTOR)
    server.run(
        [str(BIN / "prefect"), "work-pool", "create", "relay-pool", "--type", "process"],
        cwd=project,
    )
    deploy = [str(BIN / "prefect"), "--no-prompt", "deploy", "reactor.py:react"]
    server.run([*deploy, "--name", "react", "--pool", "relay-pool"], cwd=project)

    # The log: filler first, then the ingest flow's events (the target video's among them).
    db = DatabaseBlock.model_validate({"url": database_url})
    store = EventStore(db, mode="strict")
    try:
        await store.aemit_many(
            NewEvent("channel.polled", f"UC{i % 7:022d}", {"n": i}) for i in range(FILLER)
        )
        server.run([str(BIN / "python"), "flows/ingest.py"], cwd=ROOT)
        ids = [event.event_id async for event in store.replay()]
        videos = [e.entity_id async for e in store.replay(event_types=["video.ingested"])]
    finally:
        await db.aclose()
        store.close()
    assert len(ids) == FILLER + 13 and len(videos) == 12
    target = videos[len(videos) // 2]

    worker = None
    relay = None
    with temporary_settings({PREFECT_API_URL: server.api_url}):
        async with get_client() as client:
            deployment = (await client.read_deployment_by_name("atlas-e2e-reaction/react")).id
            automation = await client.create_automation(
                AutomationCore(
                    name="atlas-video-ingested",
                    trigger=EventTrigger(
                        expect={"atlas.video.ingested"},
                        match={"prefect.resource.id": f"atlas.entity.{target}"},
                        posture=Posture.Reactive,
                        threshold=1,
                        within=timedelta(0),
                    ),
                    actions=[
                        RunDeployment(
                            source="selected",
                            deployment_id=deployment,
                            parameters={"video": target},
                        )
                    ],
                )
            )
            assert (await client.read_automation(automation)) is not None
            try:
                worker = server.spawn(
                    [str(BIN / "prefect"), "worker", "start", "--pool", "relay-pool"],
                    cwd=project,
                    log=tmp_path / "worker.log",
                )

                # First run: SIGKILL once two batches are committed, at the moment Prefect has
                # stored the next one that the relay has not committed yet (or, if that moment
                # is missed, well before the last batch).
                started = time.monotonic()
                relay = spawn_relay(server, database_url, tmp_path / "relay-1.log")
                async with asyncio.timeout(180):  # hang guard
                    while True:
                        assert relay.poll() is None, (tmp_path / "relay-1.log").read_text()
                        done = checkpoint(database_url)
                        if done >= len(ids) - 3 * BATCH:
                            break
                        if done >= 2 * BATCH and await stored_in_prefect(
                            client, ids[done : done + BATCH]
                        ):
                            break
                        await asyncio.sleep(0.01)
                relay.kill()
                relay.wait(30)
                assert relay.returncode == -signal.SIGKILL
                committed = checkpoint(database_url)
                assert 0 < committed < len(ids), committed
                at_kill = len(await stored_in_prefect(client, ids))
                assert at_kill >= committed  # a committed batch was stored first

                # Second run: follows the log from the checkpoint until everything is in.
                relay = spawn_relay(server, database_url, tmp_path / "relay-2.log")
                async with asyncio.timeout(240):
                    while checkpoint(database_url) < len(ids):
                        assert relay.poll() is None, (tmp_path / "relay-2.log").read_text()
                        await asyncio.sleep(0.2)
                relay.send_signal(signal.SIGTERM)
                assert relay.wait(60) == 0, (tmp_path / "relay-2.log").read_text()
                relayed = time.monotonic() - started
                second = (tmp_path / "relay-2.log").read_text()
                assert f"relayed {len(ids) - committed} event(s)" in second, second

                found = await stored_in_prefect(client, ids)
                assert sorted(found) == sorted(ids)  # every event, once each, none lost

                async with asyncio.timeout(300):  # the automation's run, through the worker
                    while True:
                        runs = await reaction_runs(client, deployment)
                        if runs and runs[0].state is not None and runs[0].state.is_final():
                            break
                        await asyncio.sleep(1)
                (run,) = await reaction_runs(client, deployment)
                assert run.state is not None and run.state.is_completed(), run.state
                assert run.parameters == {"video": target}
                assert run.created_by is not None and run.created_by.type == "AUTOMATION"
            finally:
                if relay is not None and relay.poll() is None:
                    stop_process(relay)
                if worker is not None:
                    stop_process(worker)
    with capsys.disabled():
        print(
            f"\nrelay e2e: {len(ids)} events, killed after {committed} committed "
            f"({at_kill} already in Prefect), all delivered {relayed:.1f} s after the first start"
        )
