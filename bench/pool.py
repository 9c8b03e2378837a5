"""Pool overhead: N x `async with db.connection(): SELECT 1` vs raw psycopg_pool.

Both sides run in this process against the same server, taking turns. The references get
the block's sizes and timeouts; one checks every connection it hands out
(``check=AsyncConnectionPool.check_connection``, the safe raw setting), one never checks
(the floor). The block checks connections idle for more than ``check_bypass_seconds``
(0.5 s), so in a tight loop it should sit near the floor. Goal: block / raw <= 1.1.

    python bench/pool.py [--url postgresql://...] [-n 2000] [--rounds 5]
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from pydantic import SecretStr

from bench._common import bench_args, checked_raw_pool, embedded_server_url, interleaved
from prefect_atlas import DatabaseBlock
from prefect_atlas.testing.postgres import block_conninfo


async def main() -> None:
    args = bench_args(__doc__ or "")
    url = args.url or embedded_server_url()
    n = args.n
    db = DatabaseBlock(url=SecretStr(url))
    conninfo = block_conninfo(db, url)
    raw_checked = await checked_raw_pool(db, conninfo)
    raw_plain: AsyncConnectionPool[AsyncConnection[object]] = AsyncConnectionPool(
        conninfo, min_size=db.min_size, max_size=db.max_size, open=False
    )
    await raw_plain.open()

    async def block_side() -> None:
        for _ in range(n):
            async with db.connection() as conn:
                await conn.execute("SELECT 1")

    def raw_side(
        pool: AsyncConnectionPool[AsyncConnection[object]],
    ) -> Callable[[], Awaitable[None]]:
        async def body() -> None:
            for _ in range(n):
                async with pool.connection() as conn:
                    await conn.execute("SELECT 1")

        return body

    results = await interleaved(
        args.rounds,
        {
            "atlas": block_side,
            "raw (check always)": raw_side(raw_checked),
            "raw (no check)": raw_side(raw_plain),
        },
    )
    await db.aclose()
    await raw_checked.close()
    await raw_plain.close()

    base = results["raw (check always)"]
    print(
        f"pool benchmark: {n} x connection()+SELECT 1, median "
        f"of {args.rounds} rounds, server {db.describe()}"
    )
    for name, seconds in results.items():
        print(
            f"  {name:<22} {seconds:8.3f} s  {seconds / n * 1e6:8.1f} "
            f"us/op  ratio {seconds / base:5.2f}"
        )
    floor = results["raw (no check)"]
    print(
        f"RESULT pool atlas/raw(check always) = {results['atlas'] / base:.3f} (goal <= 1.1), "
        f"atlas/raw(no check) = {results['atlas'] / floor:.3f}"
    )


if __name__ == "__main__":
    asyncio.run(main())
