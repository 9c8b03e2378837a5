"""``import prefect_atlas`` against ``import prefect``, in fresh interpreters side by side.

Each round starts one fresh Python for each side, in alternating order, and times the import
inside it (wall clock and the process's CPU time around the statement, so interpreter
start-up is not counted). Reported: the median of each side and their ratio, for both clocks,
and, steadier on a busy machine, how many modules the package adds and their own
``-X importtime`` (self) time against prefect's. Goal: ratio <= 1.15 (the
package adds its blocks and nothing heavy: pgserver, pyarrow, google-cloud-storage,
prefect-gcp, huggingface_hub and aiohttp load only when used).

``--top N`` also prints the N modules that ``import prefect_atlas`` adds over
``import prefect``, by cumulative ``-X importtime`` microseconds, to find what to defer.

    python bench/import_time.py [--rounds 9] [--top 15]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TIMER = (
    "import time; w, c = time.perf_counter(), time.process_time(); import {module}; "
    "print(time.perf_counter() - w, time.process_time() - c)"
)


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    return env


def time_import(module: str) -> tuple[float, float]:
    """``(wall, cpu)`` seconds ``import module`` takes in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", TIMER.format(module=module)],
        capture_output=True,
        text=True,
        env=_env(),
        check=True,
        timeout=300,
    )
    wall, cpu = out.stdout.strip().splitlines()[-1].split()
    return float(wall), float(cpu)


def importtime(module: str) -> dict[str, tuple[int, int]]:
    """``{module: (self_us, cumulative_us)}`` from ``-X importtime``."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        capture_output=True,
        text=True,
        env=_env(),
        check=True,
        timeout=300,
    )
    rows: dict[str, tuple[int, int]] = {}
    for line in out.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|\s*(\S+)", line)
        if match:
            rows[match[3]] = (int(match[1]), int(match[2]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9, help="fresh interpreters per side")
    parser.add_argument("--top", type=int, default=0, help="list the N heaviest added modules")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")

    sides: dict[str, list[tuple[float, float]]] = {"prefect": [], "prefect_atlas": []}
    time_import("prefect_atlas")  # warm the file cache and .pyc files first
    for index in range(args.rounds):
        order = list(sides) if index % 2 == 0 else list(reversed(sides))
        for module in order:
            sides[module].append(time_import(module))
    print(f"{args.rounds} fresh interpreters per side, alternating; medians:")
    for kind, column in (("wall", 0), ("cpu", 1)):
        base = statistics.median(s[column] for s in sides["prefect"])
        ours = statistics.median(s[column] for s in sides["prefect_atlas"])
        print(
            f"  {kind:4}  import prefect {base * 1000:6.0f} ms  import prefect_atlas "
            f"{ours * 1000:6.0f} ms  ratio {ours / base:.2f} (goal <= 1.15)"
        )
    print("  (cpu: the process's own CPU time, less inflated than wall time by other load)")
    plain = importtime("prefect")
    added = {m: v for m, v in importtime("prefect_atlas").items() if m not in plain}
    own = sum(self_us for self_us, _ in added.values())
    print(
        f"  modules added over import prefect: {len(added)}, their own import time "
        f"{own / 1000:.0f} ms (-X importtime; prefect's: "
        f"{sum(s for s, _ in plain.values()) / 1000:.0f} ms)"
    )

    if args.top:
        print(f"\nmodules import prefect_atlas adds (cumulative ms, top {args.top}):")
        for module, (_, cumulative) in sorted(added.items(), key=lambda kv: -kv[1][1])[: args.top]:
            print(f"  {cumulative / 1000:7.1f}  {module}")


if __name__ == "__main__":
    main()
