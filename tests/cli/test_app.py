"""The command line's shape: help, version, usage errors (exit 2), interruption (exit 130)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

import prefect_atlas.health
from prefect_atlas import __version__
from prefect_atlas.cli import main

COMMANDS = ("alerts", "blocks", "demo", "events", "health", "metrics", "setup")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prefect_atlas", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _usage_error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(list(args)) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prefect-atlas: error: "), captured.err
    assert captured.out == ""
    return lines[0]


def test_help_lists_every_command_and_the_exit_codes() -> None:
    result = _cli("--help")
    assert result.returncode == 0, result.stderr
    for command in COMMANDS:
        assert command in result.stdout
    assert "Exit codes" in result.stdout and "130" in result.stdout
    assert "prefect-atlas: error:" in result.stdout


def test_version() -> None:
    result = _cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"prefect-atlas {__version__}"


def test_group_help_shows_its_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["events", "drain", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--vault" in out and "--block" in out and "--url" in out


def test_usage_errors_exit_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert "needs a command" in _usage_error(capsys)
    missing = _usage_error(capsys, "events", "dead-letters")
    assert "prefect-atlas events dead-letters --help" in missing
    assert "--json" in _usage_error(capsys, "health", "--jsn")
    assert "not both" in _usage_error(
        capsys, "setup", "--block", "a", "--url", "postgresql://x@h/db"
    )
    channel = ("alerts", "install-automation", "--block", "b", "--channel", "x")
    assert "surveillance" in _usage_error(capsys, *channel)
    assert "--name" in _usage_error(capsys, "blocks", "from-env")


def test_interrupted_exits_130(monkeypatch: pytest.MonkeyPatch) -> None:
    async def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(prefect_atlas.health, "acheck_system", interrupted)
    assert main(["health", "--url", "postgresql://u@127.0.0.1:1/db"]) == 130


def test_blocks_from_env_refusal_is_an_error_on_stderr(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in list(os.environ):
        vault = name.startswith(("VAULT_", "HF_", "GCS_", "GOOGLE_", "DISCORD_WEBHOOK_"))
        if vault or name in ("DATABASE_URL", "ENV"):
            monkeypatch.delenv(name)
    name = f"cli-{uuid.uuid4().hex[:6]}"
    assert main(["blocks", "from-env", "--name", name]) == 0
    assert capsys.readouterr().out.count("saved ") == 3
    assert main(["blocks", "from-env", "--name", name]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("prefect-atlas: error: ") and "--overwrite" in captured.err
