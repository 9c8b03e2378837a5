"""Shared helpers of the benchmarks: a server to run against and a timing loop."""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool


def bench_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--url",
        default=os.environ.get("ATLAS_BENCH_DATABASE_URL"),
        help="PostgreSQL to run against (default: a fresh embedded server in a temp folder)",
    )
    parser.add_argument(
        "--rounds", type=int, default=5, help="timed rounds per side (median reported)"
    )
    parser.add_argument("-n", type=int, default=2000, help="operations per round")
    return parser.parse_args()


def embedded_server_url() -> str:
    """Start a throwaway embedded PostgreSQL (stopped and deleted at exit)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

    folder = Path(tempfile.mkdtemp(prefix="atlas-bench-"))
    server = pgserver.get_server(folder / "pgdata", cleanup_mode="delete")  # type: ignore[attr-defined]
    return str(server.get_uri("postgres"))


async def checked_raw_pool(
    db: Any, conninfo: str, **kwargs: Any
) -> AsyncConnectionPool[AsyncConnection[Any]]:
    """A raw psycopg_pool with the block's pool settings and a check on every checkout, opened:
    the reference side the benchmarks compare the block with."""
    pool: AsyncConnectionPool[AsyncConnection[Any]] = AsyncConnectionPool(
        conninfo,
        min_size=db.min_size,
        max_size=db.max_size,
        timeout=db.timeout,
        max_idle=db.max_idle,
        max_lifetime=db.max_lifetime,
        check=AsyncConnectionPool.check_connection,
        open=False,
        **kwargs,
    )
    await pool.open()
    return pool


async def timed(rounds: int, body: Callable[[], Awaitable[None]]) -> float:
    """Median wall time of ``rounds`` runs of ``body`` (after one warm-up run)."""
    await body()
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        await body()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


async def interleaved(
    rounds: int, sides: dict[str, Callable[[], Awaitable[None]]]
) -> dict[str, float]:
    """Median time of each side, the sides taking turns so that drift hits all alike."""
    for body in sides.values():
        await body()
    samples: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(rounds):
        for name, body in sides.items():
            started = time.perf_counter()
            await body()
            samples[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in samples.items()}
