"""The event log at scale: emit, replay, consumers and archive with N events in the log.

A database is filled with N events (``--events``, default 10,000,000) straight in SQL
(``INSERT ... SELECT generate_series``, in transactions of ``--chunk`` rows so the rows carry
many transaction ids): ``N / 100`` entities with versions 1, 2, 3... in commit order,
time-ordered (v7) event ids, payloads naming one of 1,000 channels, ``recorded_at`` spread
evenly over ``ceil(N / 1,000,000)`` past days (about a million events per day). When the
event table is partitioned, the partitions those days need are created first.

1. Emit: ``--samples`` single ``EventStore.aemit`` calls into the full log and into an
   empty one (another database on the same server), taking turns; p50 and p99 latency.
   Goal: full / empty within 1.2x.
2. Replay: the first ``--replay-events`` (1,000,000) events through ``EventStore.replay``
   (default batch size and ``--batch-size``) vs a raw psycopg server-side cursor
   (``fetchmany`` of the same size) over the same rows in the same (xid, position) order,
   decoding the same columns (payload JSON, xid). Goal: atlas events/s / raw >= 0.8.
3. Consumer: the same number of events through ``EventStore.aconsume`` with a handler that
   upserts a per-channel count table in the open transaction vs a raw loop (a WITH HOLD
   server-side cursor, ``executemany`` upsert and a hand-written checkpoint update in one
   transaction per batch). Both projections and final cursors must agree, else no ratio is
   given. Goal: >= 0.7.
4. Archive: the first filled day's partition to Parquet with ``aarchive_partition`` (no drop)
   vs pyarrow writing the same rows from a raw query (same columns, zstd, row groups of
   100,000). Goal: >= 0.8.

A section whose API is missing in this checkout prints ``not available: <reason>``.
Each side runs in this process against the same server, the sides taking turns (median of
``--rounds`` after a warm-up); the databases are created for the run and dropped afterwards.

    python bench/events_scale.py [--events 10000000] [--database-url postgresql://...]
        [--sections 1,2,3,4]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson
import psycopg
from pydantic import SecretStr

from bench._common import embedded_server_url, interleaved
from prefect_atlas import DatabaseBlock, EventStore
from prefect_atlas.testing.postgres import block_conninfo, create_database, drop_database

EVENTS_PER_DAY = 1_000_000
EVENTS_PER_ENTITY = 100
CHANNELS = 1000
EVENT_TYPES = ("video.seen", "video.ingested", "video.updated", "channel.scanned")

# The replay's columns, as EventStore.replay selects them.
COLUMNS = (
    "position, event_id, event_type, entity_id, version, payload::text, occurred_at, "
    "recorded_at, xid::text AS xid_text"
)
RAW_REPLAY = (
    f"SELECT {COLUMNS} FROM atlas.events WHERE xid < pg_snapshot_xmin(pg_current_snapshot()) "
    "ORDER BY events.xid, events.position LIMIT %(limit)s"
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--events", type=int, default=10_000_000, help="events in the log (default 10,000,000)"
    )
    parser.add_argument(
        "--database-url",
        "--url",
        dest="url",
        default=os.environ.get("ATLAS_BENCH_DATABASE_URL"),
        help="a PostgreSQL superuser URL; the run creates its databases there and drops them "
        "(default: a fresh embedded server in a temp folder)",
    )
    parser.add_argument("--samples", type=int, default=3000, help="emit samples per side")
    parser.add_argument(
        "--replay-events",
        type=int,
        default=1_000_000,
        help="events replayed, and consumed, per run (default 1,000,000)",
    )
    parser.add_argument("--batch-size", type=int, default=10_000, help="the tuned batch size")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per side (median)")
    parser.add_argument(
        "--chunk",
        type=int,
        default=10_000,
        help="rows per fill transaction (default 10,000, the size of a large emit_many batch)",
    )
    parser.add_argument(
        "--sections",
        default="1,2,3,4",
        help="the sections to run, comma-separated (default 1,2,3,4)",
    )
    args = parser.parse_args(argv)
    try:
        args.sections = sorted({int(part) for part in args.sections.split(",")})
    except ValueError:
        parser.error("--sections takes numbers 1 to 4, comma-separated")
    if not set(args.sections) <= {1, 2, 3, 4}:
        parser.error("--sections takes numbers 1 to 4, comma-separated")
    if args.events < 1:
        parser.error("--events must be >= 1")
    return args


# ---------------------------------------------------------------------------- filling


@dataclass(frozen=True)
class Layout:
    """What the filler generates: entities, channels and the recorded_at range."""

    events: int
    entities: int
    days: int
    start: datetime

    @classmethod
    def for_events(cls, events: int, now: datetime | None = None) -> Layout:
        days = max(1, math.ceil(events / EVENTS_PER_DAY))
        today = (now or datetime.now(UTC)).replace(hour=0, minute=0, second=0, microsecond=0)
        # Whole past days, ending the day before yesterday: old enough to be archived, and
        # clear of the partitions a store creates around today.
        start = today - timedelta(days=days + 2)
        return cls(events, max(1, events // EVENTS_PER_ENTITY), days, start)

    @property
    def end(self) -> datetime:
        return self.start + timedelta(days=self.days)

    @property
    def step_us(self) -> float:
        """Microseconds of recorded_at between two consecutive events."""
        return self.days * 86_400_000_000 / self.events


# Rows lo..hi-1 of the log: event i is entity (i mod E) at version (i div E) + 1, so each
# entity's versions are consecutive in commit order (chunks commit in order). Event ids are
# v7 UUIDs of the row's recorded_at (48-bit milliseconds, version nibble 7, random rest).
_FILL = """
INSERT INTO atlas.events
    (event_id, event_type, entity_id, version, payload, occurred_at, recorded_at)
SELECT encode(set_byte(overlay(s.u PLACING substring(int8send(
           (extract(epoch FROM s.t) * 1000)::bigint) FROM 3) FROM 1 FOR 6),
           6, (get_byte(s.u, 6) & 15) | 112), 'hex')::uuid,
       (%(types)s::text[])[1 + s.i %% %(n_types)s],
       'bench-e' || (s.i %% %(entities)s),
       s.i / %(entities)s + 1,
       jsonb_build_object('channel_id', 'ch' || (s.i %% %(entities)s) %% %(channels)s,
                          'video_id', 'vid' || lpad(s.i::text, 8, '0'),
                          'views', s.i * 7, 'tags', '["news", "live"]'::jsonb, 'ok', true),
       s.t - interval '1 second',
       s.t
FROM (SELECT i, %(start)s::timestamptz + (i * %(step)s) * interval '1 microsecond' AS t,
             uuid_send(gen_random_uuid()) AS u
      FROM generate_series(%(lo)s::bigint, %(hi)s::bigint - 1) AS i) AS s
"""


async def is_partitioned(conn: psycopg.AsyncConnection[Any]) -> bool:
    """Whether atlas.events is a partitioned table (in this checkout's schema)."""
    cur = await conn.execute(
        "SELECT c.relkind = 'p' FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'atlas' AND c.relname = 'events'"
    )
    row = await cur.fetchone()
    return bool(row and row[0])


async def fill(conninfo: str, layout: Layout, chunk: int) -> tuple[float, str]:
    """Write the layout's events (see ``_FILL``); returns the seconds it took and the table's
    layout."""
    started = time.perf_counter()
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        await conn.execute("SET synchronous_commit = off")
        table = await prepare_layout(conn, layout)
        for lo in range(0, layout.events, chunk):
            await conn.execute(
                _FILL,
                {
                    "types": list(EVENT_TYPES),
                    "n_types": len(EVENT_TYPES),
                    "entities": layout.entities,
                    "channels": CHANNELS,
                    "start": layout.start,
                    "step": layout.step_us,
                    "lo": lo,
                    "hi": min(layout.events, lo + chunk),
                },
            )
        await conn.execute("VACUUM (ANALYZE) atlas.events")
        await conn.execute("CHECKPOINT")
    return time.perf_counter() - started, table


async def prepare_layout(conn: psycopg.AsyncConnection[Any], layout: Layout) -> str:
    """Before the fill: on a partitioned table, the partitions the layout's days need.
    Returns the table's layout, in words."""
    if not await is_partitioned(conn):
        return "one unpartitioned table"
    # The day partitions, so the rows go straight in (not through the DEFAULT partition).
    # The narrow id and version tables are kept by the table's own append trigger, which
    # checks what the filler guarantees: each statement's versions of an entity follow on.
    from prefect_atlas.events import partitions

    await partitions.aensure_partitions(
        conn, ahead=timedelta(days=layout.days - 1), now=layout.start
    )
    days = [p for p in await partitions.alist_partitions(conn) if p.lower < layout.end]
    return f"partitioned by day, {len(days)} partition(s) for the filled days"


# ---------------------------------------------------------------------------- helpers


def percentile(samples: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``samples``, nearest rank."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def verdict(ratio: float, goal: float, *, higher_is_better: bool) -> str:
    met = ratio >= goal if higher_is_better else ratio <= goal
    sign = ">=" if higher_is_better else "<="
    return f"(goal {sign} {goal}: {'met' if met else 'NOT met'})"


@dataclass
class Bench:
    """The run's databases, blocks and stores."""

    args: argparse.Namespace
    admin: str
    layout: Layout
    full_url: str
    empty_url: str
    full_db: DatabaseBlock
    empty_db: DatabaseBlock
    full: EventStore
    empty: EventStore
    conninfo: str
    results: dict[str, str]


# ---------------------------------------------------------------------------- 1. emit


async def bench_emit(b: Bench) -> None:
    samples = b.args.samples
    entities = b.layout.entities
    latencies: dict[str, list[float]] = {"full": [], "empty": []}
    stores = {"full": b.full, "empty": b.empty}
    payload = {"channel_id": "ch1", "video_id": "vid-new", "views": 1, "ok": True}

    async def one(side: str, i: int) -> float:
        started = time.perf_counter()
        await stores[side].aemit("video.seen", f"bench-e{(i * 7919) % entities}", payload)
        return time.perf_counter() - started

    for i in range(min(200, samples)):  # warm-up: pools, prepared statements, caches
        await one("full", i)
        await one("empty", i)
    for i in range(samples):
        for side in ("full", "empty") if i % 2 else ("empty", "full"):
            latencies[side].append(await one(side, samples + i))
    p = {
        (side, q): percentile(values, q) * 1000
        for side, values in latencies.items()
        for q in (0.5, 0.99)
    }
    print(f"1. emit: {samples} single aemit() per side, into existing entities, taking turns")
    print(
        f"   {b.layout.events:,} events in the log: p50 {p['full', 0.5]:.3f} ms, "
        f"p99 {p['full', 0.99]:.3f} ms"
    )
    print(
        f"   empty log (reference):    p50 {p['empty', 0.5]:.3f} ms, p99 {p['empty', 0.99]:.3f} ms"
    )
    r50 = p["full", 0.5] / p["empty", 0.5]
    r99 = p["full", 0.99] / p["empty", 0.99]
    print(f"   p50 full / empty = {r50:.2f} {verdict(r50, 1.2, higher_is_better=False)}")
    print(f"   p99 full / empty = {r99:.2f} {verdict(r99, 1.2, higher_is_better=False)}")
    b.results["emit_p50"] = f"{r50:.2f}"
    b.results["emit_p99"] = f"{r99:.2f}"


# ---------------------------------------------------------------------------- 2. replay


async def bench_replay(b: Bench) -> None:
    limit = min(b.args.replay_events, b.layout.events)
    tuned = b.args.batch_size
    checks: dict[str, tuple[int, int]] = {}

    def atlas_side(name: str, batch_size: int) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            count = total = 0
            async for event in b.full.replay(batch_size=batch_size):
                total += event.position
                count += 1
                if count >= limit:
                    break
            checks[name] = (count, total)

        return run

    def raw_side(name: str, itersize: int) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            count = total = 0
            loads = orjson.loads
            async with raw.transaction():
                cur = raw.cursor(name="bench_replay")
                await cur.execute(RAW_REPLAY, {"limit": limit})
                while rows := await cur.fetchmany(itersize):
                    for position, _, _, _, _, payload, _, _, xid in rows:
                        loads(payload)
                        int(xid)
                        total += position
                    count += len(rows)
                await cur.close()
            checks[name] = (count, total)

        return run

    default = 1000  # EventStore.replay's default batch_size
    sides = {
        f"atlas replay batch {default}": atlas_side("atlas-default", default),
        f"raw cursor itersize {default}": raw_side("raw-default", default),
        f"atlas replay batch {tuned}": atlas_side("atlas-tuned", tuned),
        f"raw cursor itersize {tuned}": raw_side("raw-tuned", tuned),
    }
    # One raw connection for the whole section, as the store's pool keeps its own open.
    raw = await psycopg.AsyncConnection.connect(b.conninfo)
    try:
        times = await interleaved(b.args.rounds, sides)
    finally:
        await raw.close()
    if len(set(checks.values())) != 1:
        raise RuntimeError(f"the replay sides read different rows: {checks}")
    print(f"2. replay of {limit:,} events (median of {b.args.rounds} rounds)")
    rates = {name: limit / seconds for name, seconds in times.items()}
    for name, rate in rates.items():
        print(f"   {name:<28} {times[name]:8.3f} s  {rate:10.0f} events/s")
    r_default = rates[f"atlas replay batch {default}"] / rates[f"raw cursor itersize {default}"]
    r_tuned = rates[f"atlas replay batch {tuned}"] / rates[f"raw cursor itersize {tuned}"]
    print(
        f"   batch {default}: atlas / raw = {r_default:.2f} "
        f"{verdict(r_default, 0.8, higher_is_better=True)}"
    )
    print(
        f"   batch {tuned}: atlas / raw = {r_tuned:.2f} "
        f"{verdict(r_tuned, 0.8, higher_is_better=True)}"
    )
    b.results["replay"] = f"{r_default:.2f}"
    b.results["replay_tuned"] = f"{r_tuned:.2f}"


# ---------------------------------------------------------------------------- 3. consumer


PROJECTION = """
CREATE TABLE IF NOT EXISTS public.{table} (
    channel_id TEXT PRIMARY KEY,
    events     BIGINT NOT NULL
)
"""
UPSERT = (
    "INSERT INTO public.{table} (channel_id, events) VALUES (%s, %s) ON CONFLICT (channel_id) "
    "DO UPDATE SET events = {table}.events + EXCLUDED.events"
)
RAW_CONSUME = (
    f"SELECT {COLUMNS} FROM atlas.events WHERE xid < pg_snapshot_xmin(pg_current_snapshot()) "
    "ORDER BY events.xid, events.position LIMIT %(limit)s"
)
RAW_CHECKPOINT = (
    "UPDATE public.bench_checkpoint SET last_xid = %s::xid8, last_position = %s, "
    "processed = processed + %s, updated_at = now() WHERE name = 'raw'"
)


def channel_counts(payloads: list[Any]) -> list[tuple[str, int]]:
    """The projection's rows for one batch: events per channel (both sides use this)."""
    counts: dict[str, int] = {}
    for payload in payloads:
        channel = payload["channel_id"]
        counts[channel] = counts.get(channel, 0) + 1
    return sorted(counts.items())


async def bench_consume(b: Bench) -> None:
    if not hasattr(EventStore, "aconsume"):
        print("3. consumer projection: not available: EventStore.aconsume is not in this checkout")
        b.results["consume"] = "n/a"
        return
    from prefect_atlas.events.models import StoredEvent

    limit = min(b.args.replay_events, b.layout.events)
    batch_size = 500  # EventStore.aconsume's default
    atlas_upsert = UPSERT.format(table="bench_counts_atlas")
    raw_upsert = UPSERT.format(table="bench_counts_raw")
    setup = await psycopg.AsyncConnection.connect(b.conninfo, autocommit=True)
    await setup.execute(PROJECTION.format(table="bench_counts_atlas"))
    await setup.execute(PROJECTION.format(table="bench_counts_raw"))
    await setup.execute(
        "CREATE TABLE IF NOT EXISTS public.bench_checkpoint (name TEXT PRIMARY KEY, "
        "last_xid XID8 NOT NULL, last_position BIGINT NOT NULL, processed BIGINT NOT NULL, "
        "updated_at TIMESTAMPTZ NOT NULL DEFAULT now())"
    )
    raw = await psycopg.AsyncConnection.connect(b.conninfo)
    runs = 0
    done: dict[str, tuple[int, int, int]] = {}  # side: (events, last xid, last position)

    async def atlas_side() -> None:
        nonlocal runs
        runs += 1
        await setup.execute("TRUNCATE public.bench_counts_atlas")
        stop = asyncio.Event()
        seen = 0

        async def project(
            events: Sequence[StoredEvent], conn: psycopg.AsyncConnection[Any]
        ) -> None:
            nonlocal seen
            async with conn.cursor() as cur:
                await cur.executemany(atlas_upsert, channel_counts([e.payload for e in events]))
            seen += len(events)
            if seen >= limit:
                stop.set()

        result = await b.full.aconsume(
            f"bench-projection-{runs}", project, batch_size=batch_size, stop=stop
        )
        done["atlas"] = (result.processed, result.xid, result.position)

    async def raw_side() -> None:
        await setup.execute("TRUNCATE public.bench_counts_raw")
        await setup.execute(
            "INSERT INTO public.bench_checkpoint (name, last_xid, last_position, processed) "
            "VALUES ('raw', '0', 0, 0) ON CONFLICT (name) DO UPDATE SET last_xid = '0', "
            "last_position = 0, processed = 0"
        )
        count = 0
        last = (0, 0)
        loads = orjson.loads
        # A WITH HOLD cursor: its rows outlive the declaring transaction (PostgreSQL keeps
        # them at that first commit), so each batch is one short transaction (fetch, upserts,
        # checkpoint, commit) and no snapshot stays open to keep the projection's dead rows.
        cur = raw.cursor(name="bench_consume", withhold=True)
        await cur.execute(RAW_CONSUME, {"limit": math.ceil(limit / batch_size) * batch_size})
        await raw.commit()
        while rows := await cur.fetchmany(batch_size):
            payloads = [loads(row[5]) for row in rows]
            last = (int(rows[-1][8]), rows[-1][0])
            async with raw.cursor() as wcur:
                await wcur.executemany(raw_upsert, channel_counts(payloads))
                await wcur.execute(RAW_CHECKPOINT, [str(last[0]), last[1], len(rows)])
            await raw.commit()
            count += len(rows)
        await cur.close()
        await raw.commit()
        done["raw"] = (count, *last)

    # The sides take turns, the raw loop first; a consumer run longer than 5 times the raw
    # loop's (at least a minute) is stopped: far off the goal, its figure would say nothing.
    samples: dict[str, list[float]] = {"atlas aconsume": [], "raw loop": []}
    overdue: float | None = None
    try:
        for round_no in range(b.args.rounds + 1):  # the first round warms up
            started = time.perf_counter()
            await raw_side()
            raw_seconds = time.perf_counter() - started
            budget = max(60.0, 5 * raw_seconds)
            started = time.perf_counter()
            try:
                await asyncio.wait_for(atlas_side(), budget)
            except TimeoutError:
                overdue = budget
                break
            if round_no:
                samples["raw loop"].append(raw_seconds)
                samples["atlas aconsume"].append(time.perf_counter() - started)
        tables = []
        for table in ("bench_counts_atlas", "bench_counts_raw"):
            cur = await setup.execute(f"SELECT channel_id, events FROM public.{table} ORDER BY 1")
            tables.append(await cur.fetchall())
    finally:
        await raw.close()
        await setup.close()
    print(
        f"3. consumer projection: events per channel upserted in each batch's transaction, "
        f"batches of {batch_size}, {limit:,} events (median of {b.args.rounds} rounds)"
    )
    if overdue is not None:
        print(
            f"   INVALID: aconsume did not finish within {overdue:.0f} s (the raw loop took "
            f"{raw_seconds:.1f} s for {done['raw'][0]:,} events), so no ratio is given"
        )
        b.results["consume"] = "invalid"
        return
    times = {name: statistics.median(values) for name, values in samples.items()}
    rates = {
        name: done[key][0] / times[name]
        for name, key in (("atlas aconsume", "atlas"), ("raw loop", "raw"))
    }
    for name, rate in rates.items():
        key = "atlas" if name.startswith("atlas") else "raw"
        print(
            f"   {name:<28} {times[name]:8.3f} s  {rate:10.0f} events/s  ({done[key][0]:,} events)"
        )
    if done["atlas"] != done["raw"] or tables[0] != tables[1]:
        print(
            f"   INVALID: the consumer and the raw loop disagree (events, last xid, last position: "
            f"consumer {done['atlas']}, raw {done['raw']}; projections "
            f"{'equal' if tables[0] == tables[1] else 'differ'}), so no ratio is given"
        )
        b.results["consume"] = "invalid"
        return
    ratio = rates["atlas aconsume"] / rates["raw loop"]
    print(f"   consumer / raw loop = {ratio:.2f} {verdict(ratio, 0.7, higher_is_better=True)}")
    b.results["consume"] = f"{ratio:.2f}"


# ---------------------------------------------------------------------------- 4. archive


ROW_GROUP = 100_000
# The archive's columns as a hand-written export would select them (text ids and payloads,
# integer xids), in replay order.
RAW_ARCHIVE = (
    "SELECT e.position, e.event_id::text, e.event_type, e.entity_id, e.version, "
    "e.payload::text, e.occurred_at, e.recorded_at, e.xid::text::bigint AS xid_n "
    "FROM atlas.{} AS e ORDER BY e.xid, e.position"
)


def arrow_schema() -> Any:
    """The reference side's Arrow schema: the archive's columns and types."""
    import pyarrow as pa

    stamp = pa.timestamp("us", tz="UTC")
    return pa.schema(
        [
            ("position", pa.int64()),
            ("event_id", pa.string()),
            ("event_type", pa.string()),
            ("entity_id", pa.string()),
            ("version", pa.int64()),
            ("payload", pa.string()),
            ("occurred_at", stamp),
            ("recorded_at", stamp),
            ("xid", pa.int64()),
        ]
    )


def archive_api() -> tuple[Any, str | None]:
    """The archive module, or None and why it cannot be benchmarked in this checkout."""
    import importlib
    import importlib.util

    if importlib.util.find_spec("prefect_atlas.events.archive") is None:
        return None, "prefect_atlas.events.archive is not in this checkout"
    module = importlib.import_module("prefect_atlas.events.archive")
    if not hasattr(module, "aarchive_partition"):
        return None, "prefect_atlas.events.archive has no aarchive_partition"
    return module, None


async def bench_archive(b: Bench) -> None:
    module, missing = archive_api()
    if missing is None:
        async with await psycopg.AsyncConnection.connect(b.conninfo) as conn:
            if not await is_partitioned(conn):
                missing = "atlas.events is not partitioned in this checkout"
    if module is None or missing is not None:
        print(f"4. archive: not available: {missing}")
        b.results["archive"] = "n/a"
        return
    import pyarrow.parquet as pq

    from prefect_atlas import VaultBlock
    from prefect_atlas.events import partitions

    async with await psycopg.AsyncConnection.connect(b.conninfo, autocommit=True) as conn:
        days = [p for p in await partitions.alist_partitions(conn) if p.lower == b.layout.start]
        partition = days[0]
        cur = await conn.execute(f"SELECT count(*) FROM atlas.{partition.name}")
        row = await cur.fetchone()
        rows = int(row[0]) if row else 0
    folder = Path(tempfile.mkdtemp(prefix="atlas-bench-archive-"))
    vault = VaultBlock(root=str(folder / "vault"))
    schema = arrow_schema()
    raw = await psycopg.AsyncConnection.connect(b.conninfo)
    reset = await psycopg.AsyncConnection.connect(b.conninfo, autocommit=True)
    sizes: dict[str, int] = {}
    steps: list[tuple[str, ...]] = []

    async def atlas_side() -> None:
        result = await module.aarchive_partition(b.full_db, vault, partition, drop=False)
        sizes["atlas"] = int(result.rows)
        steps.append(tuple(result.steps))

    async def raw_side() -> None:
        import pyarrow as pa

        path = folder / "raw.parquet"
        count = 0
        writer = pq.ParquetWriter(path, schema, compression="zstd")
        try:
            async with raw.transaction():
                cur = raw.cursor(name="bench_archive")
                await cur.execute(RAW_ARCHIVE.format(partition.name))
                while block := await cur.fetchmany(ROW_GROUP):
                    columns = list(zip(*block, strict=True))
                    table = pa.Table.from_arrays(
                        [
                            pa.array(values, type=field.type)
                            for values, field in zip(columns, schema, strict=True)
                        ],
                        schema=schema,
                    )
                    await asyncio.to_thread(writer.write_table, table, row_group_size=ROW_GROUP)
                    count += len(block)
                await cur.close()
        finally:
            writer.close()
        sizes["raw"] = count

    async def export_side() -> None:
        # For information: the export step alone (Parquet bytes in memory, checked against
        # PostgreSQL's counts), without the vault, the read-back or the record.
        async with b.full_db.connection() as conn:
            export = await module.export_partition(conn, partition)
        sizes["export"] = int(export.stats.rows)

    async def fresh() -> None:
        # The archive's record of the partition, removed so every round exports afresh.
        await reset.execute(
            "DELETE FROM atlas.event_archives WHERE partition_name = %s", [partition.name]
        )

    sides: dict[str, Callable[[], Awaitable[None]]] = {"atlas": atlas_side, "raw": raw_side}
    if hasattr(module, "export_partition"):
        sides["export"] = export_side
    samples: dict[str, list[float]] = {side: [] for side in sides}
    try:
        for round_no in range(b.args.rounds + 1):  # the first round warms up
            for side, body in sides.items():
                await fresh()
                started = time.perf_counter()
                await body()
                if round_no:
                    samples[side].append(time.perf_counter() - started)
        await fresh()
    finally:
        await raw.close()
        await reset.close()
        shutil.rmtree(folder, ignore_errors=True)
    times = {side: statistics.median(values) for side, values in samples.items()}
    print(
        f"4. archive of partition {partition.name} ({rows:,} events) to zstd Parquet, row "
        f"groups of {ROW_GROUP:,} (median of {b.args.rounds} rounds)"
    )
    names = {
        "atlas": "atlas aarchive_partition",
        "raw": "pyarrow from a raw cursor",
        "export": "atlas export_partition only",
    }
    for side, seconds in times.items():
        print(f"   {names[side]:<28} {seconds:8.3f} s  {rows / seconds:10.0f} events/s")
    print(
        "   (aarchive_partition: export, store in a local vault, read back and verify, record; "
        "no drop. The reference writes a plain file)"
    )
    if any(sizes.get(side) != rows for side in sides):
        print(f"   INVALID: rows written {sizes}, the partition holds {rows}: no ratio is given")
        b.results["archive"] = "invalid"
        return
    if any("exported" not in done for done in steps):
        print(f"   INVALID: not every archive run exported afresh ({steps}): no ratio is given")
        b.results["archive"] = "invalid"
        return
    ratio = times["raw"] / times["atlas"]
    print(f"   archive / pyarrow = {ratio:.2f} {verdict(ratio, 0.8, higher_is_better=True)}")
    if "export" in times:
        print(f"   (export only / pyarrow = {times['raw'] / times['export']:.2f}, for information)")
    b.results["archive"] = f"{ratio:.2f}"


# ---------------------------------------------------------------------------- main


async def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    admin = args.url or embedded_server_url()
    os.environ.setdefault("ATLAS_HOME", tempfile.mkdtemp(prefix="atlas-bench-home-"))
    layout = Layout.for_events(args.events)
    full_url = create_database(admin, prefix="atlas_bench")
    empty_url = create_database(admin, prefix="atlas_bench_empty")
    full_db = DatabaseBlock(url=SecretStr(full_url))
    empty_db = DatabaseBlock(url=SecretStr(empty_url))
    try:
        await full_db.asetup()
        await empty_db.asetup()
        conninfo = block_conninfo(full_db, full_url)
        seconds, table = await fill(conninfo, layout, args.chunk)
        b = Bench(
            args=args,
            admin=admin,
            layout=layout,
            full_url=full_url,
            empty_url=empty_url,
            full_db=full_db,
            empty_db=empty_db,
            full=EventStore(full_db, mode="strict"),
            empty=EventStore(empty_db, mode="strict"),
            conninfo=conninfo,
            results={},
        )
        print(f"events at scale: server {full_db.describe()}")
        print(
            f"   filled {layout.events:,} events ({layout.entities:,} entities, {layout.days} "
            f"day(s) of recorded_at from {layout.start:%Y-%m-%d}) in {seconds:.1f} s "
            f"({layout.events / seconds:,.0f} rows/s); atlas.events: {table}"
        )
        sections = (bench_emit, bench_replay, bench_consume, bench_archive)
        for number in args.sections:
            await sections[number - 1](b)
        b.full.close()
        b.empty.close()
        print("RESULT events_scale " + " ".join(f"{k}={v}" for k, v in b.results.items()))
    finally:
        await full_db.aclose()
        await empty_db.aclose()
        drop_database(admin, full_url)
        drop_database(admin, empty_url)


if __name__ == "__main__":
    asyncio.run(main())
