"""The prefect-atlas command line, run as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prefect_atlas", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_setup_then_health(database_url: str) -> None:
    first = _cli("setup", "--url", database_url)
    assert first.returncode == 0, first.stderr
    assert "applied 0001_core" in first.stdout
    again = _cli("setup", "--url", database_url)
    assert "already up to date" in again.stdout
    health = _cli("health", "--json", "--url", database_url)
    assert health.returncode == 0, health.stderr
    report = json.loads(health.stdout)
    assert report["ok"] is True and report["database"]["schema_version"] >= 1


def test_health_exits_nonzero_when_down_and_hides_password() -> None:
    out = _cli("health", "--url", "postgresql://u:cli-secret@127.0.0.1:1/db", "--timeout", "3")
    assert out.returncode == 1
    assert "DOWN" in out.stdout and "overall: DOWN: database" in out.stdout
    assert "cli-secret" not in out.stdout + out.stderr


def test_database_url_env_is_used(database_url: str) -> None:
    out = _cli("health", env={"DATABASE_URL": database_url})
    assert out.returncode == 0, out.stderr
    assert "OK" in out.stdout and "embedded" not in out.stdout
