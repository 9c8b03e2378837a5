"""Vault benchmarks: GCS batch upload and Parquet visuals on the local provider.

GCS batch: 200 JSON objects of ~2 KB to a ``gcp-storage-emulator`` running as its own process (its
CLI), a fresh instance for every timed run of every side (the emulator is single-threaded and
slows as objects accumulate, so a shared one would measure the emulator). Reference: a loop of
prefect-gcp ``GcsBucket.write_path``. Ours: ``VaultBlock.astore_batch`` (one client,
``max_concurrency`` uploads in flight). Goal: >= 3x faster. Also timed, as the best possible:
a raw ``google.cloud.storage`` client reused for all uploads (same service-account
credentials, built inside the timed run as ours is), ``c`` uploads at a time on a thread
pool, no checksum or metadata of ours.

Parquet: ``store_visuals`` on the local provider vs a direct ``pyarrow.parquet.write_table``
(zstd) of the same input to a file on the same filesystem. Goal: <= 1.2x the time. Both
sides get the same input: a list of dict rows (both convert it with ``pa.Table.from_pylist``,
the goal's case) and, reported too, a ready ``pa.Table``. For context only, a third side
writes the table durably without any checksum (temp file, fsync, rename, folder fsync): the
floor any atomic, durable write pays over the plain ``write_table``.

    python bench/vault.py [--rounds 5] [-n 200] [--rows 20000] [--concurrency 1 2 4 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson

from bench._common import interleaved
from prefect_atlas import VaultBlock
from prefect_atlas.testing.gcp import TokenServer, service_account_info

BUCKET = "atlas-bench"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Emulator:
    """A fresh gcp-storage-emulator process (in-memory) for one timed run."""

    def __enter__(self) -> Emulator:
        self.port = _free_port()
        exe = Path(sys.executable).parent / "gcp-storage-emulator"
        self.proc = subprocess.Popen(
            [
                str(exe),
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--in-memory",
                "--default-bucket",
                BUCKET,
                "-q",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{self.port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


async def fresh_runs(
    rounds: int, sides: dict[str, Callable[[], Awaitable[None]]]
) -> dict[str, float]:
    """Median per side; every run gets its own emulator, the sides take turns."""
    samples: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(rounds):
        for name, body in sides.items():
            with Emulator():
                started = time.perf_counter()
                await body()
                samples[name].append(time.perf_counter() - started)
    return {name: statistics.median(v) for name, v in samples.items()}


async def bench_gcs(args: argparse.Namespace, info: dict[str, str]) -> tuple[float, float]:
    from prefect_gcp import GcpCredentials
    from prefect_gcp.cloud_storage import GcsBucket

    objects = [
        (f"p5/{i:04d}.json", orjson.dumps({"i": i, "pad": "x" * 2000})) for i in range(args.n)
    ]
    creds = GcpCredentials(service_account_info=info)

    async def prefect_gcp_side() -> None:
        bucket = GcsBucket(bucket=BUCKET, gcp_credentials=creds)

        def loop() -> None:
            for path, data in objects:
                bucket.write_path(path, data)

        await asyncio.to_thread(loop)

    def vault_side(concurrency: int) -> Callable[[], Awaitable[None]]:
        async def body() -> None:
            vault = VaultBlock(
                provider="gcs",
                bucket=BUCKET,
                service_account_info=info,
                max_concurrency=concurrency,
            )
            await vault.astore_batch(objects)
            await vault.aclose()

        return body

    def raw_side(concurrency: int) -> Callable[[], Awaitable[None]]:
        import importlib
        from concurrent.futures import ThreadPoolExecutor

        storage = importlib.import_module("google.cloud.storage")
        service_account = importlib.import_module("google.oauth2.service_account")

        def run() -> None:
            credentials = service_account.Credentials.from_service_account_info(info)
            client = storage.Client(project=info["project_id"], credentials=credentials)
            bucket = client.bucket(BUCKET)

            def one(item: tuple[str, bytes]) -> None:
                bucket.blob(item[0]).upload_from_string(
                    item[1], content_type="application/json", retry=None
                )

            if concurrency == 1:
                for item in objects:
                    one(item)
            else:
                with ThreadPoolExecutor(concurrency) as pool:
                    list(pool.map(one, objects))
            client.close()

        async def body() -> None:
            await asyncio.to_thread(run)

        return body

    sides: dict[str, Callable[[], Awaitable[None]]] = {
        "prefect-gcp write_path loop": prefect_gcp_side
    }
    for c in args.concurrency:
        sides[f"raw reused client c={c}"] = raw_side(c)
        sides[f"VaultBlock.store_batch c={c}"] = vault_side(c)
    results = await fresh_runs(args.rounds, sides)
    ref = results["prefect-gcp write_path loop"]
    print(
        f"GCS batch: {args.n} JSON objects (~2 KB) to a fresh "
        f"gcp-storage-emulator per run, median of {args.rounds}"
    )
    for name, value in results.items():
        print(f"  {name:34s} {value:7.3f} s   speed-up x{ref / value:5.2f}")
    default = VaultBlock.model_fields["max_concurrency"].default
    ours = results[f"VaultBlock.store_batch c={default}"]
    best_raw = min(v for k, v in results.items() if k.startswith("raw reused client"))
    same_c = results[f"raw reused client c={default}"]
    print(
        f"  store_batch c={default} / raw client c={default} = "
        f"{ours / same_c:.2f}; / best raw = {ours / best_raw:.2f}"
    )
    return ref / ours, ours / best_raw


async def bench_parquet(args: argparse.Namespace) -> tuple[float, float]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows: list[dict[str, Any]] = [
        {
            "t": i * 0.04,
            "label": f"person-{i % 17}",
            "score": (i % 100) / 100,
            "box": [i % 640, i % 480, 32, 64],
        }
        for i in range(args.rows)
    ]
    table = pa.Table.from_pylist(rows)
    folder = Path(tempfile.mkdtemp(prefix="atlas-bench-vault-"))
    vault = VaultBlock(root=str(folder / "vault"))
    (folder / "vault").mkdir()
    direct = folder / "direct.parquet"
    assert os.stat(folder).st_dev == os.stat(folder / "vault").st_dev, (
        "both sides must write to one filesystem"
    )

    def durable(data: Any) -> None:
        tmp = folder / ".durable.tmp"
        with open(tmp, "wb") as fh:
            pq.write_table(data, fh, compression="zstd")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, folder / "durable.parquet")
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    async def direct_rows() -> None:
        pq.write_table(pa.Table.from_pylist(rows), direct, compression="zstd")

    async def vault_rows() -> None:
        await vault.astore_visuals("bench-video", rows)

    async def direct_table() -> None:
        pq.write_table(table, direct, compression="zstd")

    async def vault_table() -> None:
        await vault.astore_visuals("bench-video", table)

    async def durable_table() -> None:
        durable(table)

    sides: dict[str, Callable[[], Awaitable[None]]] = {
        "rows: pyarrow write_table": direct_rows,
        "rows: store_visuals": vault_rows,
        "table: pyarrow write_table": direct_table,
        "table: store_visuals": vault_table,
        "table: write_table+fsync+rename": durable_table,
    }
    results = await interleaved(args.parquet_rounds, sides)
    ratio_rows = results["rows: store_visuals"] / results["rows: pyarrow write_table"]
    ratio_table = results["table: store_visuals"] / results["table: pyarrow write_table"]
    print(f"Parquet: {args.rows} frame rows, zstd, local provider, median of {args.parquet_rounds}")
    for name, value in results.items():
        print(f"  {name:34s} {value * 1000:8.1f} ms")
    print(f"  rows  (list of dicts): store_visuals / write_table = {ratio_rows:.2f} (goal <= 1.2)")
    print(f"  table (pa.Table):      store_visuals / write_table = {ratio_table:.2f}")
    print(
        "  table: durable write without checksum / write_table = "
        f"{results['table: write_table+fsync+rename'] / results['table: pyarrow write_table']:.2f} "
        "(the fsync floor)"
    )
    return ratio_rows, ratio_table


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("-n", type=int, default=200)
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument(
        "--parquet-rounds",
        type=int,
        default=None,
        help="rounds of the Parquet part (default: 10 x --rounds; ~15 ms each)",
    )
    args = parser.parse_args()
    if args.parquet_rounds is None:
        args.parquet_rounds = 10 * args.rounds
    tokens = TokenServer()
    try:
        info = service_account_info(tokens.url)
        speedup, to_raw = await bench_gcs(args, info)
        ratio, table_ratio = await bench_parquet(args)
    finally:
        tokens.close()
    print(
        f"RESULT vault gcs_speedup={speedup:.2f} (goal >= 3) gcs_vs_best_raw={to_raw:.2f} "
        f"parquet_ratio={ratio:.2f} (goal <= 1.2) parquet_table_ratio={table_ratio:.2f}"
    )


if __name__ == "__main__":
    asyncio.run(main())
