"""50 alerts through a Discord-like webhook limited to 5 requests per 2 s.

Atlas (``DiscordBlock.asend``, 50 concurrent calls) against the naive notifier Atlas 0.2.1
had: one aiohttp POST per alert, all at once, no rate-limit handling. Both run in this
process against the same local server (a fresh webhook per side). The floor is the limit
itself: 50 alerts in windows of 5 need 9 waits of 2 s = 18 s. Goal: Atlas total
<= 1.15 x 18 s with 0 lost, and no 429 provoked.

The cross-process storm: 4 processes x 25 alerts on one such webhook, sent at the same
instant (each process warmed up first). With ``state_database`` the processes share Discord's
budget through the Atlas database (an embedded PostgreSQL unless ``--url``); without it each
process has only its own limiter. Floor: 100 alerts in windows of 5 = 19 waits of 2 s = 38 s.
Goal: <= 1.15 x floor, 0 x 429, 0 lost.

    python bench/discord.py [-n 50] [--rounds 1] [--processes 4] [--per-process 25] [--url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
from pydantic import SecretStr

from bench._common import embedded_server_url
from prefect_atlas import Channel, DiscordBlock
from prefect_atlas.testing.discord import DiscordServer, StormResult, run_storm


async def atlas_side(server: DiscordServer, n: int) -> tuple[float, int, int]:
    hook = server.add_webhook()
    block = DiscordBlock(allowed_hosts=["127.0.0.1"], alerts=SecretStr(server.url(hook)))
    started = time.perf_counter()
    async with block:
        deliveries = await asyncio.gather(
            *(block.asend(f"alert {i}", channel=Channel.ALERTS) for i in range(n))
        )
    elapsed = time.perf_counter() - started
    received = {m["embeds"][0]["title"] for m in hook.received}
    lost = n - len(received & {f"alert {i}" for i in range(n)})
    assert sum(d.delivered for d in deliveries) == n - lost
    return elapsed, lost, hook.rate_limited


async def naive_side(server: DiscordServer, n: int) -> tuple[float, int, int]:
    hook = server.add_webhook()
    url = server.url(hook)
    started = time.perf_counter()
    async with aiohttp.ClientSession() as session:

        async def post(i: int) -> None:
            async with session.post(url, json={"content": f"alert {i}"}) as resp:
                await resp.read()

        await asyncio.gather(*(post(i) for i in range(n)))
    elapsed = time.perf_counter() - started
    return elapsed, n - len(hook.received), hook.rate_limited


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=50, help="alerts per round")
    parser.add_argument(
        "--rounds", type=int, default=1, help="timed rounds per side (median reported)"
    )
    parser.add_argument(
        "--processes", type=int, default=4, help="processes in the cross-process storm"
    )
    parser.add_argument(
        "--per-process", type=int, default=25, help="alerts per process in the storm"
    )
    parser.add_argument(
        "--url", default=None, help="PostgreSQL for the shared budget (default: embedded)"
    )
    parser.add_argument(
        "--storm-only", action="store_true", help="run only the cross-process storm"
    )
    args = parser.parse_args()
    if not args.storm_only:
        await single_process(args)
    storm(args)


def _storm_line(label: str, r: StormResult) -> str:
    return (
        f"  {label:<22} {r.seconds:7.2f} s  ratio to floor {r.ratio:5.3f}  lost {r.lost:3d}  "
        f"dup {r.duplicates}  429s {r.rate_limited}"
    )


def storm(args: argparse.Namespace) -> None:
    database_url = args.url or embedded_server_url()
    server = DiscordServer(limit=5, per=2.0).start()
    try:
        shared = run_storm(
            server, server.add_webhook(), database_url, args.processes, args.per_process
        )
        alone = run_storm(server, server.add_webhook(), None, args.processes, args.per_process)
    finally:
        server.stop()
    total = args.processes * args.per_process
    print(
        f"discord storm: {args.processes} processes x {args.per_process} alerts on one webhook, "
        f"server limit {server.limit}/{server.per:g} s, floor {shared.floor:.1f} s"
    )
    print(_storm_line("shared budget (db)", shared))
    print(_storm_line("per-process limiter", alone))
    ok = (
        shared.lost == 0
        and shared.rate_limited == 0
        and shared.duplicates == 0
        and shared.ratio <= 1.15
    )
    print(
        f"RESULT discord storm shared {shared.seconds:.2f} s = {shared.ratio:.3f} x floor "
        f"{shared.floor:.0f} s, 429s {shared.rate_limited}, lost {shared.lost}/{total}; "
        f"per-process 429s {alone.rate_limited}, lost {alone.lost}/{total} (goal <= 1.15 x floor, "
        f"0 x 429, 0 lost: {'met' if ok else 'NOT met'})"
    )


async def single_process(args: argparse.Namespace) -> None:
    server = DiscordServer(limit=5, per=2.0).start()
    floor = (math.ceil(args.n / server.limit) - 1) * server.per
    try:
        atlas = [await atlas_side(server, args.n) for _ in range(args.rounds)]
        naive = [await naive_side(server, args.n) for _ in range(args.rounds)]
    finally:
        server.stop()
    a_time = statistics.median(r[0] for r in atlas)
    n_time = statistics.median(r[0] for r in naive)
    a_lost, a_429 = max(r[1] for r in atlas), max(r[2] for r in atlas)
    n_lost, n_429 = max(r[1] for r in naive), max(r[2] for r in naive)
    print(
        f"discord benchmark: {args.n} alerts, server limit {server.limit}/{server.per:g} s, floor "
        f"{floor:.1f} s, median of {args.rounds} round(s)"
    )
    print(
        f"  atlas DiscordBlock   {a_time:7.2f} s  ratio to floor "
        f"{a_time / floor:5.3f}  lost {a_lost:3d}  429s {a_429}"
    )
    print(f"  naive POST per alert {n_time:7.2f} s  lost {n_lost:3d}  429s {n_429}")
    ok = a_lost == 0 and a_time <= 1.15 * floor
    print(
        f"RESULT discord single atlas {a_time:.2f} s = {a_time / floor:.3f} x floor {floor:.0f} s, "
        f"lost {a_lost}, 429s {a_429}; naive lost {n_lost}/{args.n} (goal <= 1.15 x floor, 0 "
        f"lost: {'met' if ok else 'NOT met'})"
    )


if __name__ == "__main__":
    asyncio.run(main())
