"""Run a cross-process alert storm (several ``tests.discord._storm`` children) and time it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.discord._server import DiscordServer, Webhook

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class StormResult:
    processes: int
    per_process: int
    seconds: float  # first to last message the server stored
    floor: float  # the least time the webhook's limit allows for that many messages
    rate_limited: int  # 429s the server answered
    lost: int  # alerts never stored
    duplicates: int  # alerts stored more than once
    children: list[dict[str, Any]]

    @property
    def ratio(self) -> float:
        return self.seconds / self.floor if self.floor else 0.0


def run_storm(
    server: DiscordServer, hook: Webhook, database_url: str | None, processes: int, per_process: int
) -> StormResult:
    """``processes`` children each send ``per_process`` alerts to ``hook`` at the same instant."""
    control = Path(tempfile.mkdtemp(prefix="atlas-storm-"))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop(
        "ATLAS_ALERT_MEMORY_DATABASE", None
    )  # the budget is shared only when database_url says so
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.discord._storm",
                server.url(hook),
                database_url or "-",
                str(per_process),
                str(control),
                f"p{i}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        for i in range(processes)
    ]
    try:
        limit = time.monotonic() + 120
        while len(list(control.glob("*.ready"))) < processes:
            if time.monotonic() > limit or any(c.poll() is not None for c in children):
                raise RuntimeError(
                    "storm children did not get ready: "
                    + " | ".join(
                        (c.communicate(timeout=5)[1] or "")[-2000:]
                        for c in children
                        if c.poll() is not None
                    )
                )
            time.sleep(0.02)
        (control / "go").write_text("")
        outputs = []
        for child in children:
            out, err = child.communicate(timeout=300)
            if child.returncode != 0:
                raise RuntimeError(f"storm child failed: {err[-3000:]}")
            outputs.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
    total = processes * per_process
    titles = [m["embeds"][0]["title"] for m in hook.received]
    expected = {f"p{i} alert {j}" for i in range(processes) for j in range(per_process)}
    windows = -(-total // server.limit)
    stamps = hook.received_at
    return StormResult(
        processes=processes,
        per_process=per_process,
        seconds=(max(stamps) - min(stamps)) if stamps else 0.0,
        floor=(windows - 1) * server.per,
        rate_limited=hook.rate_limited,
        lost=len(expected - set(titles)),
        duplicates=len(titles) - len(set(titles)),
        children=outputs,
    )
