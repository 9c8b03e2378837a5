"""End to end, as an operator runs it: real server, process work pool, deploy, worker, run.

Slow (about a minute): a real `prefect server start`, the CLI for everything, and a worker
that runs the ingest deployment in a subprocess. It runs in `make test` and CI.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

from tests.e2e._server import BIN, PrefectServer

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


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
            "ATLAS_DISCORD_BLOCK": "default",
        },
    )
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


async def test_ingest_deployment_runs_on_a_process_worker(
    server: PrefectServer, database_url: str, tmp_path: Path
) -> None:
    server.run(
        [str(BIN / "prefect"), "work-pool", "create", "atlas-process", "--type", "process"],
        cwd=ROOT,
    )
    saved = server.run(
        [str(BIN / "prefect-atlas"), "blocks", "from-env", "--name", "default"], cwd=ROOT
    )
    assert saved.stdout.count("saved ") == 3, saved.stdout
    refused = server.run(
        [str(BIN / "prefect-atlas"), "blocks", "from-env", "--name", "default"],
        cwd=ROOT,
        check=False,
    )
    assert refused.returncode == 1 and "--overwrite" in refused.stderr

    deployed = server.run(
        [
            str(BIN / "prefect"),
            "--no-prompt",
            "deploy",
            "--prefect-file",
            "deployments.yaml",
            "--all",
        ],
        cwd=ROOT,
    )
    for name in ("atlas-ingest", "atlas-replay", "atlas-health"):
        assert name in deployed.stdout

    triggered = server.run(
        [str(BIN / "prefect"), "deployment", "run", "ingest/atlas-ingest"], cwd=ROOT
    )
    match = re.search(r"UUID: ([0-9a-f-]{36})", triggered.stdout)
    assert match, triggered.stdout
    flow_run_id = match.group(1)

    server.run(
        [str(BIN / "prefect"), "worker", "start", "--pool", "atlas-process", "--run-once"],
        cwd=ROOT,
        timeout=600,
    )

    with temporary_settings({PREFECT_API_URL: server.api_url}):
        async with get_client() as client:
            run = await client.read_flow_run(uuid.UUID(flow_run_id))
            assert run.state is not None and run.state.is_completed(), run.state
            artifacts = await client.read_artifacts()
            assert any(a.key == "atlas-ingest-summary" for a in artifacts)

    with psycopg.connect(database_url) as conn:
        ingested = conn.execute(
            "SELECT count(*) FROM atlas.events WHERE event_type = 'video.ingested'"
        ).fetchone()
        videos = conn.execute(
            "SELECT count(*) FROM atlas.videos WHERE status = 'ingested'"
        ).fetchone()
    assert ingested == (12,) and videos == (12,)
    vault_files = [p for p in (tmp_path / "vault").rglob("*") if p.is_file()]
    assert any("metadata/" in str(p) for p in vault_files)
    assert any("transcripts/" in str(p) for p in vault_files)
