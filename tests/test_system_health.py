"""System health across database, event spool, vault and Discord, with real parts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from pydantic import SecretStr

from prefect_atlas import DatabaseBlock, DiscordBlock, VaultBlock
from prefect_atlas.health import acheck_system
from tests.discord._server import DiscordServer


async def test_all_up(database_url: str, tmp_path: Path, discord_server: DiscordServer) -> None:
    hook = discord_server.add_webhook()
    discord = DiscordBlock(allowed_hosts=["127.0.0.1"], alerts=SecretStr(discord_server.url(hook)))
    report = await acheck_system(
        DatabaseBlock(url=SecretStr(database_url)), VaultBlock(root=str(tmp_path / "v")), discord
    )
    assert report.ok, report.table()
    assert [c.component for c in report.components] == [
        "database",
        "event spool",
        "vault",
        "discord",
    ]
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
    discord = DiscordBlock(allowed_hosts=["127.0.0.1"], alerts=SecretStr(url), timeout=3)
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
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert report["ok"] is True and len(report["components"]) == 4
    env["DATABASE_URL"] = "postgresql://u:pw@127.0.0.1:1/db"
    down = subprocess.run(
        [sys.executable, "-m", "prefect_atlas", "health", "--timeout", "3"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert down.returncode == 1
    assert "DOWN" in down.stdout and "database" in down.stdout


async def test_metrics_text_counts_real_work(database_url: str, tmp_path: Path) -> None:
    from prefect_atlas import EventStore
    from prefect_atlas.metrics import render

    def value(text: str, prefix: str) -> float:
        return sum(
            float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix)
        )

    before = render()
    async with DatabaseBlock(url=SecretStr(database_url)) as db:
        await db.asetup()
        await EventStore(db).aemit_many(
            [{"event_type": "metric.test", "entity_id": f"e{i}"} for i in range(7)]
        )
        vault = VaultBlock(root=str(tmp_path / "v"))
        await vault.astore_json("m/one.json", {"a": 1})
        await acheck_system(db, vault, DiscordBlock())
    after = render()
    assert (
        value(after, 'atlas_events_emitted_total{path="emit_many"}')
        - value(before, 'atlas_events_emitted_total{path="emit_many"}')
        == 7
    )
    assert value(after, "atlas_vault_bytes_total") > value(before, "atlas_vault_bytes_total")
    assert 'atlas_component_up{component="database"} 1.0' in after
    assert "# TYPE atlas_db_pool_size gauge" in after


def test_cli_metrics(database_url: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "prefect_atlas", "metrics", "--url", database_url],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert 'atlas_component_up{component="database"} 1.0' in out.stdout
    assert "atlas_events_spool_size" in out.stdout
