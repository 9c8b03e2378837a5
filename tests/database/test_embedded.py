"""The embedded default: no url → a PostgreSQL under ATLAS_HOME, shared across processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from prefect_atlas import DatabaseBlock


def _run(code: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ATLAS_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_embedded_database_is_reused_by_later_processes(tmp_path: Path) -> None:
    write = (
        "from prefect_atlas import DatabaseBlock\n"
        "db = DatabaseBlock()\n"
        "db.setup()\n"
        'db.execute("INSERT INTO atlas.channels (channel_id, title) '
        "VALUES ('UC' || repeat('b', 22), 'kept')\")\n"
        "r = db.health(); print(r.ok, r.embedded)\n"
        "db.close()\n"
    )
    first = _run(write, tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.split() == ["True", "True"]
    assert (tmp_path / "postgres" / "PG_VERSION").is_file()
    read = (
        "from prefect_atlas import DatabaseBlock\n"
        "db = DatabaseBlock()\n"
        "print(db.fetch_one('SELECT title FROM atlas.channels')[0]); db.close()\n"
    )
    second = _run(read, tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.strip() == "kept"


async def test_embedded_block_in_this_process() -> None:
    async with DatabaseBlock() as db:
        report = await db.ahealth(timeout=60)
        assert report.ok, report.reason
        assert report.embedded and report.database == "atlas"
        assert "embedded PostgreSQL" in report.target


def test_missing_embedded_extra_names_it(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['pgserver'] = None\n"
        "from prefect_atlas import DatabaseBlock, MissingExtraError\n"
        "db = DatabaseBlock()\n"
        "try:\n"
        "    db.fetch_one('SELECT 1')\n"
        "except MissingExtraError as exc:\n"
        "    print(exc)\n"
        "print(db.health().reason)\n"
    )
    out = _run(code, tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2
    for line in lines:
        assert "pip install 'prefect-atlas[embedded]'" in line
        assert "`url`" in line


@pytest.mark.parametrize(
    "heavy", ["pgserver", "pyarrow", "google.cloud.storage", "huggingface_hub", "prefect_gcp"]
)
def test_import_is_light(heavy: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", f"import sys, prefect_atlas; print({heavy!r} in sys.modules)"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert out.stdout.strip() == "False"
