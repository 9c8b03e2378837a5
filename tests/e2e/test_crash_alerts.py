"""Crash and zombie alerts from the Prefect server itself, end to end.

A real `prefect server start` (prefect-atlas importable in its environment, as the docs ask),
a process work pool and worker, a DiscordBlock pointing at the local Discord-like server, and
`prefect-atlas alerts install-automation`. One deployed flow SIGKILLs its own process (no
client-side hook can run), another freezes itself with SIGSTOP (its heartbeats stop). Each
must reach Discord exactly once: the crash through the crashed automation, the zombie through
the zombie automation, which also marks it Crashed — and the crashed automation, seeing that,
must not announce it a second time. A third flow fails with the ready `alert_on_failure` hook
while the crashed automation also watches Failed (`--include-failed`): hook and automation both
claim the run's alert, and Discord gets it once.

Slow (two to three minutes): Prefect's heartbeats are at least 30 s apart, and the zombie
window is two of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings
from pydantic import SecretStr

from prefect_atlas import DiscordBlock
from prefect_atlas.testing.discord import DiscordServer, Webhook
from tests.e2e._server import BIN, PrefectServer, stop_process

ROOT = Path(__file__).resolve().parents[2]
HEARTBEAT = 30  # Prefect's floor
MISSED = 2

# a loaded 2-core machine needs more than the suite's 300 s default for the whole scenario
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

FLOWS = """
import os
import signal
import time
from pathlib import Path

from prefect import flow

from prefect_atlas.hooks import alert_on_failure


@flow(name="atlas-e2e-fails", on_failure=[alert_on_failure])
def fails() -> None:
    raise ValueError("the source returned no rows")


@flow(name="atlas-e2e-sigkill")
def sigkill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


@flow(name="atlas-e2e-sigstop")
def sigstop(pid_file: str) -> None:
    Path(pid_file).write_text(str(os.getpid()))
    time.sleep(10)  # the first heartbeat reaches the server, which starts the zombie window
    os.kill(os.getpid(), signal.SIGSTOP)
"""


def kill_frozen(pid_file: Path) -> None:
    """SIGKILL the SIGSTOPped flow process once, and only while it is still that process.

    The pid file outlives the process: once it is dead and reaped, its pid can be reused by
    any new process (a PostgreSQL backend of the suite, say). So the file is removed at the
    first kill, and a pid whose process is not stopped (state ``T`` in /proc) is left alone.
    """
    try:
        pid = int(pid_file.read_text())
    except (FileNotFoundError, ValueError):
        return
    pid_file.unlink()
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return
    if state == "T":
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PrefectServer]:
    (tmp_path / "prefect").mkdir()
    srv = PrefectServer(
        tmp_path / "prefect",
        {
            "ATLAS_HOME": str(tmp_path / "atlas"),
            # the server loads the DiscordBlock class when the action runs: this checkout
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
            ),
            "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT),
            "PREFECT_WORKER_QUERY_SECONDS": "2",
            "PREFECT_UI_URL": "http://127.0.0.1:4200",
            "ATLAS_DISCORD_BLOCK": "e2e",  # the worker's flows' hooks use the test's block
        },
    )
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def messages_for(hook: Webhook, run_id: str) -> list[dict[str, Any]]:
    found = []
    for message in list(hook.received):
        embed = message["embeds"][0]
        fields = {f["name"]: f["value"] for f in embed.get("fields", [])}
        if run_id in fields.get("Run", ""):
            found.append(embed)
    return found


async def wait_for(hook: Webhook, run_id: str, timeout: float, since: float) -> float:
    """Seconds from ``since`` (monotonic) to the first alert naming ``run_id``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if messages_for(hook, run_id):
            return time.monotonic() - since
        await asyncio.sleep(0.5)
    raise AssertionError(
        f"no alert for flow run {run_id} within {timeout:g} s; received: "
        f"{[m['embeds'][0]['title'] for m in hook.received]}"
    )


def trigger(server: PrefectServer, deployment: str, *extra: str) -> str:
    out = server.run(
        [str(BIN / "prefect"), "deployment", "run", deployment, *extra], cwd=ROOT
    ).stdout
    match = re.search(r"UUID: ([0-9a-f-]{36})", out)
    assert match, out
    return match.group(1)


async def test_crash_and_zombie_alert_once_each(
    server: PrefectServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    discord = DiscordServer().start()
    worker = None
    pid_file = tmp_path / "sigstop.pid"
    try:
        hook = discord.add_webhook()
        with temporary_settings({PREFECT_API_URL: server.api_url}):
            await DiscordBlock(
                alerts=SecretStr(discord.url(hook)), allowed_hosts=["127.0.0.1"], env_tag="[e2e]"
            ).asave("e2e")
        installed = server.run(
            [
                str(BIN / "prefect-atlas"),
                "alerts",
                "install-automation",
                "--block",
                "e2e",
                "--heartbeat-frequency",
                str(HEARTBEAT),
                "--missed-heartbeats",
                str(MISSED),
                "--include-failed",
            ],
            cwd=ROOT,
        )
        assert "atlas-crashed-e2e" in installed.stdout and "atlas-zombie-e2e" in installed.stdout

        project = tmp_path / "project"
        project.mkdir()
        (project / "crashers.py").write_text(FLOWS)
        server.run(
            [str(BIN / "prefect"), "work-pool", "create", "crash-pool", "--type", "process"],
            cwd=project,
        )
        for entrypoint, name in (
            ("crashers.py:sigkill", "kill"),
            ("crashers.py:sigstop", "stop"),
            ("crashers.py:fails", "fail"),
        ):
            server.run(
                [
                    str(BIN / "prefect"),
                    "--no-prompt",
                    "deploy",
                    entrypoint,
                    "--name",
                    name,
                    "--pool",
                    "crash-pool",
                ],
                cwd=project,
            )
        killed = trigger(server, "atlas-e2e-sigkill/kill")
        frozen = trigger(server, "atlas-e2e-sigstop/stop", "--param", f"pid_file={pid_file}")
        failed = trigger(server, "atlas-e2e-fails/fail")
        started = time.monotonic()
        worker = server.spawn(
            [str(BIN / "prefect"), "worker", "start", "--pool", "crash-pool"],
            cwd=project,
            log=tmp_path / "worker.log",
        )

        # SIGKILL: the worker reports the dead process, the crashed automation alerts once.
        took = await wait_for(hook, killed, 90, started)
        await asyncio.sleep(8)
        crashes = messages_for(hook, killed)
        assert len(crashes) == 1, crashes
        embed = crashes[0]
        fields = {f["name"]: f["value"] for f in embed["fields"]}
        assert embed["title"].startswith("[e2e] Flow atlas-e2e-sigkill crashed: run ")
        assert fields["Flow"] == "atlas-e2e-sigkill" and fields["State"] == "Crashed"
        assert fields["Deployment"] == "kill"
        assert embed["url"] == f"http://127.0.0.1:4200/runs/flow-run/{killed}"
        assert "atlas-alert:" not in embed["description"]

        # Failed, with a hook in the flow and the automation on the server: one alert.
        await wait_for(hook, failed, 90, started)
        await asyncio.sleep(8)
        failures = messages_for(hook, failed)
        assert len(failures) == 1, failures
        assert {f["name"]: f["value"] for f in failures[0]["fields"]}["State"] == "Failed"

        # SIGSTOP: heartbeats stop; the zombie automation alerts once and marks it Crashed.
        zombie_took = await wait_for(hook, frozen, HEARTBEAT * MISSED + 120, started)
        zombies = messages_for(hook, frozen)
        assert len(zombies) == 1, zombies
        assert "stopped responding" in zombies[0]["title"]
        assert f"no heartbeat for {HEARTBEAT * MISSED} s" in zombies[0]["description"]
        with temporary_settings({PREFECT_API_URL: server.api_url}):
            async with get_client() as client:
                for _ in range(40):
                    run = await client.read_flow_run(uuid.UUID(frozen))
                    if run.state is not None and run.state.is_crashed():
                        break
                    await asyncio.sleep(0.5)
                assert run.state is not None and run.state.is_crashed(), run.state
        # Now let the frozen process die too: whatever the worker reports, no second alert.
        kill_frozen(pid_file)
        await asyncio.sleep(12)
        assert len(messages_for(hook, frozen)) == 1, messages_for(hook, frozen)
        assert len(messages_for(hook, killed)) == 1
        assert len(messages_for(hook, failed)) == 1
        assert len(hook.received) == 3, [m["embeds"][0]["title"] for m in hook.received]
        # The crashed automation did fire for the run the zombie automation marked Crashed:
        # its claim of the same key was the suppressed one.
        memory = sqlite3.connect(tmp_path / "atlas" / "alerts.sqlite3")
        try:
            rows = dict(
                memory.execute(
                    "SELECT fingerprint, suppressed || '/' || total FROM open_alerts"
                ).fetchall()
            )
        finally:
            memory.close()
        assert {k: v for k, v in rows.items() if k.startswith("flow-run:")} == {
            f"flow-run:{killed}|CRASHED": "0/1",
            f"flow-run:{frozen}|CRASHED": "1/2",
            f"flow-run:{failed}|FAILED": "1/2",  # hook and automation: one sent, one suppressed
        }, rows
        with capsys.disabled():
            print(
                f"\nfrom the worker's start: crash alert after {took:.1f} s, "
                f"zombie alert after {zombie_took:.1f} s"
            )
            for message in hook.received:  # the two alerts as the Discord-like server got them
                print(json.dumps(message["embeds"][0], indent=1, sort_keys=True))
    finally:
        kill_frozen(pid_file)
        if worker is not None:
            stop_process(worker)
        discord.stop()
