"""The partitioned log: partitions ahead, routing, idempotency and versions across partitions,
commit-safe order across them, pruning by recorded_at, the DEFAULT partition, dropping."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from prefect_atlas import DatabaseBlock
from prefect_atlas.events import ConcurrencyError, EventStore, NewEvent
from prefect_atlas.events.partitions import (
    Partition,
    adrop_partition,
    aensure_partitions,
    alist_partitions,
)


def _today() -> datetime:
    now = datetime.now(UTC)
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


@pytest.fixture
async def conn(store: EventStore, database_url: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A raw autocommit connection on the migrated database (the store fixture set it up)."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as c:
        yield c


async def _rows(conn: psycopg.AsyncConnection[Any], query: str, *args: Any) -> list[Any]:
    cur = await conn.execute(query, list(args))
    return await cur.fetchall()


async def _raw_append(
    conn: psycopg.AsyncConnection[Any],
    entity_id: str,
    version: int,
    recorded_at: datetime,
    event_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """Append a row recorded at ``recorded_at`` the way any other writer would (a plain INSERT,
    which the log's trigger checks and records)."""
    eid = event_id or uuid.uuid4()
    await conn.execute(
        "INSERT INTO atlas.events (event_id, event_type, entity_id, version, payload, "
        "occurred_at, recorded_at) VALUES (%s, 'old.thing', %s, %s, %s, %s, %s)",
        [eid, entity_id, version, json.dumps({"v": version}), recorded_at, recorded_at],
    )
    return eid


async def _partition_of(conn: psycopg.AsyncConnection[Any], event_id: uuid.UUID) -> str:
    [(name,)] = await _rows(
        conn, "SELECT tableoid::regclass::text FROM atlas.events WHERE event_id = %s", event_id
    )
    return str(name)


async def test_setup_creates_today_and_seven_days_ahead(
    store: EventStore, db: DatabaseBlock, conn: psycopg.AsyncConnection[Any]
) -> None:
    today = _today()
    parts = await alist_partitions(conn)
    expected = [today + timedelta(days=d) for d in range(8)]
    assert [p.lower for p in parts] == expected
    assert all(p.upper == p.lower + timedelta(days=1) for p in parts)
    assert [p.name for p in parts] == [f"events_p{d:%Y%m%d}" for d in expected]
    # The DEFAULT partition exists but is not listed.
    assert await _rows(conn, "SELECT name FROM atlas.event_partitions WHERE is_default") == [
        ("events_default",)
    ]

    # setup() again, and ensuring again: nothing new.
    assert await db.asetup() == []
    assert await aensure_partitions(conn) == []
    assert len(await alist_partitions(conn)) == 8
    # Five days later: the days from +8 through +12 are created, exactly those.
    created = await aensure_partitions(conn, now=today + timedelta(days=5, hours=5))
    assert [p.lower for p in created] == [today + timedelta(days=d) for d in range(8, 13)]
    assert len(await alist_partitions(conn)) == 13
    with pytest.raises(ValueError, match="negative"):
        await aensure_partitions(conn, ahead=timedelta(days=-1))


async def test_rows_land_in_their_days_partition(
    store: EventStore, conn: psycopg.AsyncConnection[Any]
) -> None:
    today = _today()
    emitted = await store.aemit("video.ingested", "v1", {"n": 1})
    batch = await store.aemit_many([NewEvent("video.tagged", "v1", {"n": 2})])
    assert await _partition_of(conn, emitted) == f"atlas.events_p{today:%Y%m%d}"
    assert await _partition_of(conn, batch[0]) == f"atlas.events_p{today:%Y%m%d}"
    tomorrow = today + timedelta(days=1, hours=3)
    later = await _raw_append(conn, "v1", 3, tomorrow)
    assert await _partition_of(conn, later) == f"atlas.events_p{tomorrow:%Y%m%d}"
    assert await _rows(conn, "SELECT count(*) FROM ONLY atlas.events_default") == [(0,)]


async def _old_partition(conn: psycopg.AsyncConnection[Any], days_ago: int) -> Partition:
    day = _today() - timedelta(days=days_ago)
    created = await aensure_partitions(conn, ahead=timedelta(0), now=day)
    assert [p.lower for p in created] == [day]
    return created[0]


async def test_idempotency_and_versions_across_partitions(
    store: EventStore, conn: psycopg.AsyncConnection[Any]
) -> None:
    old = await _old_partition(conn, 3)
    at = old.lower + timedelta(hours=12)
    old_ids = [await _raw_append(conn, "chan", v, at) for v in (1, 2)]
    assert {await _partition_of(conn, i) for i in old_ids} == {f"atlas.{old.name}"}

    # Re-emitting an id stored in the older partition stores nothing, by either path.
    assert await store.aemit("x.y", "chan", {}, event_id=old_ids[0]) == old_ids[0]
    assert await store.aemit_many([NewEvent("x.y", "chan", {}, event_id=old_ids[1])]) == [
        old_ids[1]
    ]
    # ... also when the retry's expected version no longer matches (it had succeeded).
    assert (
        await store.aemit("x.y", "chan", {}, event_id=old_ids[0], expected_version=0)
        == (old_ids[0])
    )
    assert await _rows(conn, "SELECT count(*) FROM atlas.events") == [(2,)]

    # Versions continue across the partition boundary, on both paths.
    await store.aemit("x.y", "chan", {"n": 3}, expected_version=2)
    await store.aemit_many([NewEvent("x.y", "chan", {"n": 4}), NewEvent("x.y", "chan", {})])
    rows = await _rows(
        conn,
        "SELECT version, tableoid::regclass::text FROM atlas.events WHERE entity_id = 'chan' "
        "ORDER BY version",
    )
    today = f"atlas.events_p{_today():%Y%m%d}"
    assert rows == [
        (1, f"atlas.{old.name}"),
        (2, f"atlas.{old.name}"),
        (3, today),
        (4, today),
        (5, today),
    ]
    assert await _rows(
        conn, "SELECT version FROM atlas.entity_versions WHERE entity_id = 'chan'"
    ) == [(5,)]
    with pytest.raises(ConcurrencyError) as info:
        await store.aemit("x.y", "chan", {}, expected_version=2)
    assert info.value.actual == 5


async def test_other_writers_are_held_to_the_rules(
    store: EventStore, conn: psycopg.AsyncConnection[Any]
) -> None:
    old = await _old_partition(conn, 2)
    at = old.lower + timedelta(hours=1)
    first = await _raw_append(conn, "e", 1, at)
    await store.aemit("x.y", "e", {})  # version 2, today
    # A raw write of a stored id, in another partition than the stored one: 23505 on the key.
    with pytest.raises(psycopg.errors.UniqueViolation) as dup:
        await _raw_append(conn, "other", 1, datetime.now(UTC), event_id=first)
    assert dup.value.diag.constraint_name == "events_event_id_key"
    # A version that is not the next one (a gap, a repeat): 23505 on the versions rule.
    for version in (2, 4):
        with pytest.raises(psycopg.errors.UniqueViolation) as bad:
            await _raw_append(conn, "e", version, at)
        assert bad.value.diag.constraint_name == "events_entity_version_key"
    with pytest.raises(psycopg.errors.UniqueViolation):
        await _raw_append(conn, "new", 2, at)
    assert await _rows(conn, "SELECT count(*) FROM atlas.events") == [(2,)]
    assert await _rows(conn, "SELECT count(*) FROM atlas.event_ids") == [(2,)]
    assert await _raw_append(conn, "e", 3, at)
    assert await _rows(conn, "SELECT version FROM atlas.entity_versions WHERE entity_id = 'e'") == [
        (3,)
    ]


async def test_replay_order_is_commit_order_across_partitions(
    store: EventStore, conn: psycopg.AsyncConnection[Any]
) -> None:
    old = await _old_partition(conn, 5)
    at = old.lower + timedelta(hours=2)
    a = await _raw_append(conn, "a", 1, at)  # oldest partition, first transaction
    b = await store.aemit("x.y", "b", {})  # today
    # A later transaction writing into the OLDER partition: replay must give it last.
    c = await _raw_append(conn, "a", 2, at)
    d = (await store.aemit_many([NewEvent("x.y", "b", {})]))[0]
    events = [e async for e in store.replay(batch_size=1)]
    assert [e.event_id for e in events] == [a, b, c, d]
    assert [(e.xid, e.position) for e in events] == sorted((e.xid, e.position) for e in events)
    # Resuming after an event of each partition.
    assert [e.event_id async for e in store.replay(after_position=events[0].position)] == [
        b,
        c,
        d,
    ]
    assert [e.event_id async for e in store.replay(after_position=events[2].position)] == [d]
    with pytest.raises(ValueError, match="not the position of a stored event"):
        [e async for e in store.replay(after_position=10**9)]


async def _plan_relations(conn: psycopg.AsyncConnection[Any], query: str, *args: Any) -> set[str]:
    """The tables an executed plan read (pruned partitions do not appear)."""
    [(plan,)] = await _rows(conn, "EXPLAIN (ANALYZE, FORMAT JSON) " + query, *args)
    found: set[str] = set()

    def walk(node: dict[str, Any]) -> None:
        if "Relation Name" in node:
            found.add(node["Relation Name"])
        for child in node.get("Plans", []):
            walk(child)

    walk(plan[0]["Plan"])
    return found


async def test_recorded_at_ranges_prune_partitions(
    store: EventStore, conn: psycopg.AsyncConnection[Any]
) -> None:
    old = await _old_partition(conn, 4)
    at = old.lower + timedelta(hours=6)
    await _raw_append(conn, "p", 1, at)
    today = _today()
    now_id = await store.aemit("x.y", "p", {})
    everything = await _plan_relations(conn, "SELECT * FROM atlas.events")
    assert len(everything) == 10  # 8 ahead, the old day, the default
    only_old = await _plan_relations(
        conn,
        "SELECT * FROM atlas.events WHERE recorded_at >= %s AND recorded_at < %s",
        old.lower,
        old.upper,
    )
    assert only_old == {old.name}
    # Replay's own query with a recorded_at range (its rule and order kept) reads one partition.
    replay_query = (
        "SELECT position FROM atlas.events WHERE xid < pg_snapshot_xmin(pg_current_snapshot()) "
        "AND (xid, position) > ('0'::xid8, 0) AND recorded_at >= %s AND recorded_at < %s "
        "ORDER BY xid, position LIMIT 1000"
    )
    assert await _plan_relations(conn, replay_query, today, today + timedelta(days=1)) == {
        f"events_p{today:%Y%m%d}"
    }
    # The store's face returns exactly the events of the range.
    got = [
        e.event_id
        async for e in store.replay(recorded_since=today, recorded_until=today + timedelta(1))
    ]
    assert got == [now_id]
    got_old = [e.version async for e in store.replay(recorded_until=today)]
    assert got_old == [1]


async def test_default_partition_catches_rows_and_gives_them_up(
    store: EventStore, conn: psycopg.AsyncConnection[Any]
) -> None:
    far = _today() + timedelta(days=30, hours=7)
    stray = await _raw_append(conn, "s", 1, far)
    assert await _partition_of(conn, stray) == "atlas.events_default"
    [before] = await _rows(
        conn, "SELECT position, xid::text, version FROM atlas.events WHERE event_id = %s", stray
    )
    created = await aensure_partitions(conn, ahead=timedelta(0), now=far)
    assert [p.name for p in created] == [f"events_p{far:%Y%m%d}"]
    assert await _partition_of(conn, stray) == f"atlas.events_p{far:%Y%m%d}"
    assert await _rows(
        conn, "SELECT position, xid::text, version FROM atlas.events WHERE event_id = %s", stray
    ) == [before]
    assert await _rows(conn, "SELECT count(*) FROM ONLY atlas.events_default") == [(0,)]
    assert await store.aemit("x.y", "s", {}, event_id=stray) == stray
    assert await _rows(conn, "SELECT count(*) FROM atlas.events") == [(1,)]


async def test_drop_keeps_ids_and_versions_exact(
    store: EventStore, conn: psycopg.AsyncConnection[Any]
) -> None:
    old = await _old_partition(conn, 6)
    at = old.lower + timedelta(hours=3)
    gone = [await _raw_append(conn, "d", v, at) for v in (1, 2, 3)]
    kept = await store.aemit("x.y", "d", {})  # version 4, today
    [(first, last)] = await _rows(
        conn,
        "SELECT min(position), max(position) FROM atlas.events WHERE entity_id = 'd' "
        "AND version <= 3",
    )

    await adrop_partition(conn, old)
    assert old.name not in [p.name for p in await alist_partitions(conn)]
    assert await _rows(conn, "SELECT to_regclass(%s) IS NULL", f"atlas.{old.name}") == [(True,)]
    assert await _rows(
        conn,
        "SELECT events, first_position, last_position, lower_bound, upper_bound "
        "FROM atlas.dropped_event_partitions WHERE name = %s",
        old.name,
    ) == [(3, first, last, old.lower, old.upper)]
    assert [e.event_id async for e in store.replay()] == [kept]

    # The dropped events' ids still store nothing; versions continue after them.
    for event_id in gone:
        assert await store.aemit("x.y", "d", {}, event_id=event_id) == event_id
    assert await store.aemit_many([NewEvent("x.y", "d", {}, event_id=gone[0])]) == [gone[0]]
    assert await _rows(conn, "SELECT count(*) FROM atlas.events") == [(1,)]
    await store.aemit("x.y", "d", {}, expected_version=4)
    assert [e.version async for e in store.replay(entity_id="d")] == [4, 5]

    # Refused: a partition that may still receive events, an unknown one, wrong bounds.
    today = (await alist_partitions(conn))[0]
    assert today.lower == _today()
    with pytest.raises(ValueError, match="too recent"):
        await adrop_partition(conn, today)
    with pytest.raises(ValueError, match="no partition"):
        await adrop_partition(conn, old)
    with pytest.raises(ValueError, match="not a day partition"):
        await adrop_partition(conn, Partition("events_default", old.lower, old.upper))
    with pytest.raises(ValueError, match="covers"):
        await adrop_partition(
            conn, Partition(today.name, today.lower, today.upper + timedelta(days=1))
        )
    assert await _rows(conn, "SELECT count(*) FROM atlas.events") == [(2,)]


async def test_partitions_created_while_writers_write(
    store: EventStore, database_url: str, conn: psycopg.AsyncConnection[Any]
) -> None:
    """Attaching partitions (and moving rows out of the DEFAULT one) under concurrent emits and
    batches loses, repeats and renumbers nothing."""
    today = _today()
    stray = [await _raw_append(conn, f"far-{d}", 1, today + timedelta(days=d)) for d in (9, 10)]
    stop = asyncio.Event()
    counts = {"single": 0, "batch": 0}

    async def single(k: int) -> None:
        while not stop.is_set():
            await store.aemit("x.y", f"w{k}", {"i": counts["single"]})
            counts["single"] += 1

    async def batch() -> None:
        while not stop.is_set():
            await store.aemit_many([NewEvent("x.y", f"w{i % 3}", {}) for i in range(30)])
            counts["batch"] += 30

    writers = [asyncio.create_task(single(k)) for k in range(3)] + [asyncio.create_task(batch())]
    created: list[Partition] = []
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as other:
        for day in range(1, 6):
            created += await aensure_partitions(other, now=today + timedelta(days=day))
            await asyncio.sleep(0.05)
    stop.set()
    await asyncio.gather(*writers)
    assert [p.lower for p in created] == [today + timedelta(days=d) for d in range(8, 13)]
    assert {await _partition_of(conn, s) for s in stray} == {
        f"atlas.events_p{today + timedelta(days=d):%Y%m%d}" for d in (9, 10)
    }
    total = counts["single"] + counts["batch"] + 2
    assert counts["single"] > 0 and counts["batch"] > 0
    assert await _rows(conn, "SELECT count(*), count(DISTINCT position) FROM atlas.events") == [
        (total, total)
    ]
    assert await _rows(conn, "SELECT count(*) FROM atlas.event_ids") == [(total,)]
    # Versions 1..n per entity, and the narrow table agrees.
    assert await _rows(
        conn,
        "SELECT count(*) FROM (SELECT entity_id FROM atlas.events GROUP BY entity_id "
        "HAVING max(version) <> count(*) OR count(DISTINCT version) <> count(*)) AS bad",
    ) == [(0,)]
    assert await _rows(
        conn,
        "SELECT count(*) FROM (SELECT entity_id, max(version) AS v FROM atlas.events GROUP BY 1) "
        "AS e FULL JOIN atlas.entity_versions AS ev USING (entity_id) WHERE e.v IS DISTINCT FROM "
        "ev.version",
    ) == [(0,)]
