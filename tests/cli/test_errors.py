"""The command line under faults: one line on stderr naming what failed and the fix, exit 1
(2 for usage errors) — never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import SecretStr

from prefect_atlas import DatabaseBlock, EventStore
from prefect_atlas.events.spool import Spool
from prefect_atlas.events.validation import PreparedEvent


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prefect_atlas", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 1, (result.returncode, result.stderr[-2000:])
    lines = [
        line for line in result.stderr.splitlines() if line.startswith("prefect-atlas: error:")
    ]
    assert len(lines) == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_database_down(tmp_path: Path) -> None:
    env = {**os.environ, "ATLAS_HOME": str(tmp_path)}
    url = f"postgresql://postgres@127.0.0.1:{_closed_port()}/postgres"
    for args in (
        ("setup",),
        ("events", "replay"),
        ("events", "drain"),
        ("events", "dead-letters", "list"),
    ):
        _one_line_error(_cli(*args, "--url", url, env=env), "PostgreSQL", "127.0.0.1")


def test_schema_missing(database_url: str, tmp_path: Path) -> None:
    env = {**os.environ, "ATLAS_HOME": str(tmp_path), "DATABASE_URL": database_url}
    _one_line_error(
        _cli("events", "replay", env=env), "Atlas schema is missing", "prefect-atlas setup"
    )
    _one_line_error(_cli("events", "dead-letters", "list", env=env), "prefect-atlas setup")


def test_prefect_api_down(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "ATLAS_HOME": str(tmp_path),
        "PREFECT_API_URL": f"http://127.0.0.1:{_closed_port()}/api",
    }
    _one_line_error(
        _cli("events", "replay", "--block", "nope", env=env), "Prefect API", "PREFECT_API_URL"
    )


def test_usage_error_exits_2(tmp_path: Path) -> None:
    result = _cli(
        "events", "dead-letters", "frobnicate", env={**os.environ, "ATLAS_HOME": str(tmp_path)}
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr


@pytest.fixture
async def migrated(database_url: str) -> str:
    db = DatabaseBlock(url=SecretStr(database_url))
    await db.asetup()
    await db.aclose()
    return database_url


async def test_dead_letters_present_then_listed_retried_and_discarded(
    migrated: str, tmp_path: Path
) -> None:
    env = {**os.environ, "ATLAS_HOME": str(tmp_path), "DATABASE_URL": migrated}
    db = DatabaseBlock(url=SecretStr(migrated))
    store = EventStore(db, background_drain=False)  # the CLI's spool: same target, same ATLAS_HOME
    os.environ["ATLAS_HOME"], saved = str(tmp_path), os.environ["ATLAS_HOME"]
    try:
        spool = Spool(Path(store.spool_path))
    finally:
        os.environ["ATLAS_HOME"] = saved
    poison = PreparedEvent(uuid.uuid4(), "bad type", "e", b"{}", datetime.now(UTC))
    other = PreparedEvent(uuid.uuid4(), "ok", "e" * 5, b'{"a": 1}', datetime.now(UTC))
    spool.add([poison, PreparedEvent(uuid.uuid4(), "fine", "e", b"{}", datetime.now(UTC))])
    spool.close()
    drained = _cli("events", "drain", env=env)
    assert drained.stdout.startswith("drained 1 event(s)")
    _one_line_error(drained, "1 dead letter(s)", "dead-letters list")
    listed = _cli("events", "dead-letters", "list", env=env)
    assert (
        listed.returncode == 0
        and str(poison.event_id) in listed.stdout
        and "23514" in listed.stdout
    )
    retried = _cli("events", "dead-letters", "retry", str(poison.event_id), env=env)
    _one_line_error(retried, "refused event", "again")
    assert _cli("events", "dead-letters", "discard", str(poison.event_id), env=env).returncode == 0
    _one_line_error(
        _cli("events", "dead-letters", "discard", str(other.event_id), env=env), "no dead letter"
    )
    assert _cli("events", "dead-letters", "list", env=env).stdout.strip() == "no dead letters"
    await db.aclose()
