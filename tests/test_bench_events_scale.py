"""``bench/events_scale.py`` runs end to end at a small N: every section prints its figures.

The benchmark itself is where speed is measured; this only checks that the script works
(filler, the four sections, the RESULT line) on the test PostgreSQL and leaves no database
behind. No figure is asserted beyond being a positive number.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
NUMBER = r"\d+(?:\.\d+)?"


def bench_databases(admin_url: str) -> set[str]:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'atlas\\_bench%'"
        ).fetchall()
    return {row[0] for row in rows}


def available(module: str, attribute: str | None = None) -> bool:
    """Whether this checkout has ``module`` (and ``attribute`` in it)."""
    if importlib.util.find_spec(module) is None:
        return False
    return attribute is None or hasattr(importlib.import_module(module), attribute)


def test_events_scale_prints_every_section(pg_admin_url: str, tmp_path: Path) -> None:
    before = bench_databases(pg_admin_url)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ATLAS_HOME": str(tmp_path / "home")}
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "events_scale.py"),
            "--events",
            "2000",
            "--database-url",
            pg_admin_url,
            "--samples",
            "50",
            "--rounds",
            "1",
            "--batch-size",
            "500",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert re.search(rf"filled 2,000 events .* in {NUMBER} s", out), out
    assert re.search(rf"2,000 events in the log: p50 {NUMBER} ms, p99 {NUMBER} ms", out), out
    assert re.search(rf"empty log \(reference\): +p50 {NUMBER} ms, p99 {NUMBER} ms", out), out
    assert len(re.findall(rf"p(?:50|99) full / empty = {NUMBER} \(goal <= 1.2", out)) == 2, out
    assert re.search(r"2\. replay of 2,000 events", out), out
    assert len(re.findall(rf"atlas / raw = {NUMBER} \(goal >= 0.8", out)) == 2, out

    result = re.search(r"^RESULT events_scale (.*)$", out, re.MULTILINE)
    assert result, out
    figures = dict(item.split("=") for item in result.group(1).split())
    expected = ["emit_p50", "emit_p99", "replay", "replay_tuned", "consume", "archive"]
    assert list(figures) == expected, out
    consumers = available("prefect_atlas.events.consumers")
    archive = available("prefect_atlas.events.archive")
    for name, value in figures.items():
        if (name == "consume" and not consumers) or (name == "archive" and not archive):
            assert value == "n/a", out
        else:
            assert re.fullmatch(NUMBER, value) and float(value) > 0, out
    if consumers:
        assert re.search(rf"aconsume .* {NUMBER} events/s", out), out
        assert re.search(rf"consumer / raw loop = {NUMBER} \(goal >= 0.7", out), out
    else:
        assert "3. consumer projection: not available: " in out, out
    if archive:
        assert re.search(rf"archive / pyarrow = {NUMBER} \(goal >= 0.8", out), out
    else:
        assert "4. archive: not available: " in out, out
    assert bench_databases(pg_admin_url) == before
