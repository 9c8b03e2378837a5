"""Hooks under real faults: the alert still arrives, or is logged in full at ERROR.

Faults: ATLAS_HOME is a regular file, the alert memory cannot be opened, the Prefect API is
unreachable while the hook digs the root cause (PREFECT_API_URL on a closed loopback port),
the Discord block cannot be loaded, and a send that fails must not keep its dedup claim.
"""

from __future__ import annotations

import logging
import socket
import uuid
from pathlib import Path
from typing import Any

import pytest
import stamina
from prefect import flow
from prefect.client.schemas.objects import State
from prefect.settings import PREFECT_API_URL, PREFECT_LOGGING_TO_API_ENABLED, temporary_settings
from prefect.states import Failed
from pydantic import SecretStr

from prefect_atlas import DiscordBlock
from prefect_atlas.hooks import BLOCK_ENV, AlertMemory, discord_hook
from tests.discord._server import DiscordServer, Webhook


def _block(server: DiscordServer, hook: Webhook) -> DiscordBlock:
    return DiscordBlock(
        alerts=SecretStr(server.url(hook)), allowed_hosts=["127.0.0.1"], env_tag="[test]"
    )


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens there once the socket is closed


async def test_atlas_home_a_regular_file_still_alerts(
    discord_server: DiscordServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    hook = discord_server.add_webhook()
    home = tmp_path / "atlas-home"
    home.write_text("not a folder")
    monkeypatch.setenv("ATLAS_HOME", str(home))
    name = f"homeless-{uuid.uuid4().hex[:6]}"

    @flow(name=name, on_failure=[discord_hook(block=_block(discord_server, hook))])
    async def homeless() -> None:
        raise ValueError("disk gone")

    with caplog.at_level(logging.INFO):
        assert (await homeless(return_state=True)).is_failed()
        assert (await homeless(return_state=True)).is_failed()
    # no memory, no dedup: each failure alerts (fail open), and the log says so
    assert [m["embeds"][0]["title"] for m in hook.received] == [
        f"[test] Flow {name} failed: ValueError"
    ] * 2
    skipped = [r for r in caplog.records if "dedup skipped" in r.getMessage()]
    assert len(skipped) == 2 and all(r.levelno == logging.WARNING for r in skipped)
    assert not any("Atlas alert hook failed" in r.getMessage() for r in caplog.records)


async def test_unwritable_alert_memory_still_alerts(
    discord_server: DiscordServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hook = discord_server.add_webhook()
    where = tmp_path / "alerts.sqlite3"
    # a folder where the database file should be: sqlite cannot open it (even as root)
    where.mkdir()
    name = f"amnesiac-{uuid.uuid4().hex[:6]}"

    @flow(
        name=name,
        on_failure=[discord_hook(block=_block(discord_server, hook), memory=AlertMemory(where))],
    )
    async def amnesiac() -> None:
        raise KeyError("k")

    with caplog.at_level(logging.INFO):
        assert (await amnesiac(return_state=True)).is_failed()
    assert len(hook.received) == 1
    assert hook.received[0]["embeds"][0]["title"] == f"[test] Flow {name} failed: KeyError"
    assert sum("dedup skipped" in r.getMessage() for r in caplog.records) == 1


async def test_failed_send_releases_its_claim(
    discord_server: DiscordServer, tmp_path: Path
) -> None:
    hook = discord_server.add_webhook()
    memory = AlertMemory(tmp_path / "memory.sqlite3")
    discord_server.set_fault(hook, "500")
    name = f"flaky-{uuid.uuid4().hex[:6]}"

    @flow(name=name, on_failure=[discord_hook(block=_block(discord_server, hook), memory=memory)])
    async def flaky() -> None:
        raise OSError("nope")

    with stamina.set_testing(True, attempts=100, cap=True):
        assert (await flaky(return_state=True)).is_failed()
    assert hook.requests == 5 and hook.received == []  # max_attempts, all 500
    assert memory.resolve(f"flow:{name}|") == []  # nothing claimed: the claim was released
    discord_server.set_fault(hook, None)
    assert (await flaky(return_state=True)).is_failed()
    assert len(hook.received) == 1  # the next failure was not suppressed


async def test_prefect_api_unreachable_while_digging_still_alerts(
    discord_server: DiscordServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The hook runs with the API gone; a state that makes it look up the run's task runs."""
    hook = discord_server.add_webhook()
    seen: list[Any] = []
    name = f"cutoff-{uuid.uuid4().hex[:6]}"

    @flow(name=name, on_failure=[lambda f, fr, s: seen.append((f, fr))])
    async def cutoff() -> None:
        raise RuntimeError("first failure")

    await cutoff(return_state=True)  # a real flow and flow run from the real server
    real_flow, flow_run = seen[0]
    # No result: the hook must ask the API for the run's failed task runs.
    state: State[Any] = Failed(
        message="Flow run encountered an exception: TimeoutError: upstream took 30 s"
    )
    alert = discord_hook(
        block=_block(discord_server, hook), memory=AlertMemory(tmp_path / "m.sqlite3")
    )
    api = f"http://127.0.0.1:{_closed_port()}/api"
    with caplog.at_level(logging.INFO):
        with temporary_settings({PREFECT_API_URL: api, PREFECT_LOGGING_TO_API_ENABLED: False}):
            result = alert(real_flow, flow_run, state)
            assert result is not None
            await result
    assert len(hook.received) == 1
    embed = hook.received[0]["embeds"][0]
    assert embed["title"] == f"[test] Flow {name} failed: TimeoutError"
    assert "upstream took 30 s" in embed["description"]
    assert "root cause unavailable" in embed["description"]
    assert any("root cause could not be dug out" in r.getMessage() for r in caplog.records)
    assert not any("Atlas alert hook failed" in r.getMessage() for r in caplog.records)


async def test_unloadable_block_logs_the_full_alert_at_error(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    monkeypatch.setenv(BLOCK_ENV, f"missing-{uuid.uuid4().hex[:6]}")
    name = f"unheard-{uuid.uuid4().hex[:6]}"

    @flow(name=name, on_failure=[discord_hook(memory=AlertMemory(tmp_path / "m.sqlite3"))])
    async def unheard(api_token: str = "tok-999") -> None:
        raise LookupError("row 42 vanished")

    with caplog.at_level(logging.INFO):
        await unheard(return_state=True)
    errors = [
        r
        for r in caplog.records
        if r.levelno == logging.ERROR and "not delivered" in r.getMessage()
    ]
    assert len(errors) == 1
    text = errors[0].getMessage()
    assert f"Flow {name} failed: LookupError" in text and "row 42 vanished" in text
    assert "Parameters:" in text and "tok-999" not in text
    assert errors[0].name == "prefect.flow_runs"  # on the flow run's logger
    # the claim was released: the next failure is not suppressed
    assert AlertMemory(tmp_path / "m.sqlite3").resolve(f"flow:{name}|") == []
