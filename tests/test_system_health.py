"""System health across database, event spool, vault and Discord, with real parts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from prefect_atlas import DatabaseBlock, DiscordBlock, VaultBlock
from prefect_atlas.health import acheck_system
from tests.discord._server import DiscordServer


@pytest.fixture
def discord_server() -> Iterator[DiscordServer]:
    server = DiscordServer().start()
    try:
        yield server
    finally:
        server.stop()


async def test_all_up(database_url: str, tmp_path: Path, discord_server: DiscordServer) -> None:
    hook = discord_server.add_webhook()
    discord = DiscordBlock(alerts=SecretStr(discord_server.url(hook)))
    report = await acheck_system(
        DatabaseBlock(url=SecretStr(database_url)), VaultBlock(root=str(tmp_path / "v")), discord
    )
    assert report.ok, report.table()
    assert [c.component for c in report.components] == ["database", "event spool", "vault", "discord"]
    assert "alerts: ok" in report.components[3].detail
    assert hook.received == []  # the check posts no message
    assert hook.token not in report.table()
    await discord.aclose()


async def test_deleted_webhook_and_dead_database_are_reported(
    discord_server: DiscordServer, tmp_path: Path
) -> None:
    hook = discord_server.add_webhook()
    url = discord_server.url(hook)
    discord_server.delete(hook)
    discord = DiscordBlock(alerts=SecretStr(url), timeout=3)
    report = await acheck_system(
        DatabaseBlock(url=SecretStr("postgresql://u:pw-hidden@127.0.0.1:1/db"), timeout=2),
        VaultBlock(root=str(tmp_path / "v")),
        discord,
        timeout=3,
    )
    assert not report.ok
    down = {c.component: c.detail for c in report.down()}
    assert set(down) == {"database", "discord"}
    assert "webhook deleted (404)" in down["discord"]
    assert "pw-hidden" not in report.table() and hook.token not in report.table()
    await discord.aclose()


def test_cli_health_table_and_exit_code(database_url: str, tmp_path: Path) -> None:
    env = {**os.environ, "DATABASE_URL": database_url, "ATLAS_HOME": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-m", "prefect_atlas", "health", "--json"],
        env=env, capture_output=True, text=True, timeout=180, check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert report["ok"] is True and len(report["components"]) == 4
    env["DATABASE_URL"] = "postgresql://u:pw@127.0.0.1:1/db"
    down = subprocess.run(
        [sys.executable, "-m", "prefect_atlas", "health", "--timeout", "3"],
        env=env, capture_output=True, text=True, timeout=180, check=False,
    )
    assert down.returncode == 1
    assert "DOWN" in down.stdout and "database" in down.stdout
