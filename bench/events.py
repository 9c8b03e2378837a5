"""Event store throughput: EventStore vs raw psycopg, and vs the `eventsourcing` library.

Batch: emit_many of 5 x N events (10,000 by default) vs a raw psycopg COPY of the same rows into
    the same table, same indexes (payloads serialized with orjson and ids made by the same
    generator on both sides). Goal: >= 0.85 x raw. A raw *binary* COPY is shown too, for
    information (emit_many uses binary COPY).
Single: N sequential emit() (each within its emit_timeout deadline) vs N raw pooled autocommit
    INSERTs (pool with the block's settings). Goal: <= 1.1 x the raw time.
Eventsourcing: the same events through eventsourcing 9.5's PostgreSQL application recorder
    (`insert_events`, calls of 100, and one event per call). Goals: emit_many >= 4 x its
    batched rate, single emit >= 1.5 x its single-event rate. The same ratios for the raw
    sides are printed as the ceiling this machine allows.

Each side runs in this process against the same server, taking turns (median of rounds).

    python bench/events.py [--url postgresql://...] [-n 2000] [--rounds 5]
"""

from __future__ import annotations

import asyncio
import gc
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson
import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Jsonb
from pydantic import SecretStr

from bench._common import bench_args, checked_raw_pool, embedded_server_url, interleaved
from prefect_atlas import DatabaseBlock, EventStore
from prefect_atlas.events import NewEvent
from prefect_atlas.events.validation import new_event_id, new_event_ids
from prefect_atlas.testing.postgres import block_conninfo, create_database

ENTITIES = 100


def payload(i: int) -> dict[str, Any]:
    return {"video_id": f"vid{i:08d}", "views": i * 7, "tags": ["news", "live"], "ok": True}


class GcPauses:
    """Full (generation 2) garbage collections during each call of a side, and their time.

    Why: a batch API holds the caller's 10,000 event objects for the call, which makes CPython
    run a full collection every other batch or so; in a process that imported Prefect one
    takes ~90 ms. It lands on rounds at random, so the median swings between two modes. The
    figures stay in the medians (users pay them too); this line says how much they weigh.
    """

    def __init__(self) -> None:
        self._current: str | None = None
        self._started = 0.0
        self.calls: dict[str, list[float]] = {}
        self.durations: dict[str, list[float]] = {}
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if self._current is None or info["generation"] != 2:
            return
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.calls[self._current][-1] += time.perf_counter() - self._started

    def watch(
        self, name: str, body: Callable[[], Awaitable[None]]
    ) -> Callable[[], Awaitable[None]]:
        async def watched() -> None:
            self.calls.setdefault(name, []).append(0.0)
            self._current = name
            started = time.perf_counter()
            try:
                await body()
            finally:
                self._current = None
                self.durations.setdefault(name, []).append(time.perf_counter() - started)

        return watched

    def report(self, name: str) -> str:
        pauses = self.calls.get(name, [])[1:]  # not the warm-up
        hit = [p for p in pauses if p]
        mean = sum(hit) / len(hit) if hit else 0.0
        return f"{len(hit)} of {len(pauses)} rounds ({mean * 1000:.0f} ms each)"

    def median_without(self, name: str) -> float:
        """The median time of ``name`` with its full-collection pauses taken out (information)."""
        pairs = zip(self.durations.get(name, [])[1:], self.calls.get(name, [])[1:], strict=True)
        return statistics.median(duration - pause for duration, pause in pairs)


def eventsourcing_recorder(url: str) -> Any:
    """An eventsourcing application recorder on ``url`` (its own tables)."""
    info = conninfo_to_dict(url)
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": str(info.get("dbname", "postgres")),
        "POSTGRES_HOST": str(info.get("host", "127.0.0.1")),
        "POSTGRES_PORT": str(info.get("port", "5432")),
        "POSTGRES_USER": str(info.get("user", "postgres")),
        "POSTGRES_PASSWORD": str(info.get("password", "")),
    }
    from eventsourcing.persistence import InfrastructureFactory

    factory = InfrastructureFactory.construct(env=env)
    recorder = factory.application_recorder()
    return recorder


async def main() -> None:
    args = bench_args(__doc__ or "")
    admin = args.url or embedded_server_url()
    n_single = args.n
    n_batch = 5 * args.n
    os.environ.setdefault("ATLAS_HOME", tempfile.mkdtemp(prefix="atlas-bench-home-"))
    url = create_database(admin, prefix="atlas_bench")
    es_url = create_database(admin, prefix="atlas_bench_es")
    db = DatabaseBlock(url=SecretStr(url))
    await db.asetup()
    store = EventStore(db)
    conninfo = block_conninfo(db, url)
    raw_pool = await checked_raw_pool(db, conninfo, kwargs={"autocommit": True})
    raw_conn = await psycopg.AsyncConnection.connect(conninfo)
    recorder = eventsourcing_recorder(es_url)
    from eventsourcing.persistence import StoredEvent as EsStoredEvent

    round_no = 0

    def next_round() -> str:
        nonlocal round_no
        round_no += 1
        return f"r{round_no}"

    async def ours_many() -> None:
        tag = next_round()
        await store.aemit_many(
            [NewEvent("video.seen", f"{tag}-e{i % ENTITIES}", payload(i)) for i in range(n_batch)]
        )

    async def raw_copy() -> None:
        tag = next_round()
        now = datetime.now(UTC)
        ids = new_event_ids(
            n_batch
        )  # the same id generator as ours, so only the store's work differs
        async with raw_conn.transaction():
            async with raw_conn.cursor().copy(
                "COPY atlas.events (event_id, event_type, entity_id, "
                "version, payload, occurred_at) FROM STDIN"
            ) as copy:
                for i in range(n_batch):
                    await copy.write_row(
                        (
                            ids[i],
                            "video.seen",
                            f"{tag}-e{i % ENTITIES}",
                            i // ENTITIES + 1,
                            orjson.dumps(payload(i)).decode(),
                            now,
                        )
                    )

    async def raw_copy_binary() -> None:
        # Not a goal's reference: shown so that the gain of binary COPY itself is visible.
        tag = next_round()
        now = datetime.now(UTC)
        ids = new_event_ids(n_batch)
        async with raw_conn.transaction():
            async with raw_conn.cursor().copy(
                "COPY atlas.events (event_id, event_type, entity_id, version, payload, "
                "occurred_at) FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.set_types(["uuid", "text", "text", "int8", "jsonb", "timestamptz"])
                for i in range(n_batch):
                    await copy.write_row(
                        (
                            ids[i],
                            "video.seen",
                            f"{tag}-e{i % ENTITIES}",
                            i // ENTITIES + 1,
                            Jsonb(payload(i), dumps=orjson.dumps),
                            now,
                        )
                    )

    async def es_batched() -> None:
        for start in range(0, n_batch, 100):
            ids = [new_event_id() for _ in range(ENTITIES)]
            events = [
                EsStoredEvent(
                    ids[i % ENTITIES],
                    1 + (i - start) // ENTITIES,
                    "video.seen",
                    orjson.dumps(payload(i)),
                )
                for i in range(start, min(start + 100, n_batch))
            ]
            recorder.insert_events(events)

    async def ours_single() -> None:
        tag = next_round()
        for i in range(n_single):
            await store.aemit("video.seen", f"{tag}-e{i % ENTITIES}", payload(i))

    async def raw_insert() -> None:
        tag = next_round()
        now = datetime.now(UTC)
        for i in range(n_single):
            async with raw_pool.connection() as conn:
                await conn.execute(
                    "INSERT INTO atlas.events (event_id, event_type, entity_id, version, "
                    "payload, occurred_at) VALUES (%s, %s, %s, %s, %s, %s)",
                    (
                        new_event_id(),
                        "video.seen",
                        f"{tag}-e{i % ENTITIES}",
                        i // ENTITIES + 1,
                        orjson.dumps(payload(i)).decode(),
                        now,
                    ),
                )

    async def es_single() -> None:
        for i in range(n_single):
            recorder.insert_events(
                [EsStoredEvent(new_event_id(), 1, "video.seen", orjson.dumps(payload(i)))]
            )

    gc_pauses = GcPauses()
    batch = await interleaved(
        args.rounds,
        {
            "emit_many": gc_pauses.watch("emit_many", ours_many),
            "raw COPY": gc_pauses.watch("raw COPY", raw_copy),
            "raw binary COPY": raw_copy_binary,
            "eventsourcing x100": es_batched,
        },
    )
    single = await interleaved(
        args.rounds, {"emit": ours_single, "raw INSERT": raw_insert, "eventsourcing x1": es_single}
    )
    await db.aclose()
    await raw_pool.close()
    await raw_conn.close()
    store.close()

    print(f"events benchmark: median of {args.rounds} rounds, server {db.describe()}")
    print(f"  batch of {n_batch} events:")
    for name, seconds in batch.items():
        print(f"    {name:<20} {seconds:8.3f} s  {n_batch / seconds:10.0f} events/s")
    for name in ("emit_many", "raw COPY"):
        print(f"    {name}: full garbage collections in {gc_pauses.report(name)}")
    without = gc_pauses.median_without("raw COPY") / gc_pauses.median_without("emit_many")
    print(
        "    (emit_many rate / raw COPY rate with those "
        f"pauses taken out = {without:.2f}, for information)"
    )
    print(f"  {n_single} sequential single events:")
    for name, seconds in single.items():
        print(f"    {name:<20} {seconds:8.3f} s  {n_single / seconds:10.0f} events/s")
    p1 = batch["raw COPY"] / batch["emit_many"]
    p2 = single["emit"] / single["raw INSERT"]
    p3_batch = batch["eventsourcing x100"] / batch["emit_many"]
    p3_single = single["eventsourcing x1"] / single["emit"]
    p1_binary = batch["raw binary COPY"] / batch["emit_many"]
    print(f"  batch: emit_many rate / raw COPY rate          = {p1:.2f} (goal >= 0.85)")
    print(f"  (emit_many rate / raw binary COPY rate     = {p1_binary:.2f}, for information)")
    print(f"  single: emit time / raw INSERT time             = {p2:.2f} (goal <= 1.1)")
    print(f"  vs eventsourcing: emit_many rate / x100 rate = {p3_batch:.2f} (goal >= 4)")
    print(f"  vs eventsourcing: emit rate / eventsourcing x1 rate = {p3_single:.2f} (goal >= 1.5)")
    print(
        "  ceiling: raw COPY rate / eventsourcing x100 rate = "
        f"{batch['eventsourcing x100'] / batch['raw COPY']:.2f}, raw INSERT rate / eventsourcing "
        f"x1 rate = {single['eventsourcing x1'] / single['raw INSERT']:.2f}"
    )
    print(
        f"RESULT events batch={p1:.2f} single={p2:.2f} "
        f"es_batch={p3_batch:.2f} es_single={p3_single:.2f}"
    )


if __name__ == "__main__":
    asyncio.run(main())
