"""Checkpointed consumers on a real PostgreSQL: exactly once across a SIGKILL, groups without
overlap, two processes on one checkpoint, dead letters, filters, late commits, lag, faces."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
import stamina
from prefect import flow
from psycopg import AsyncConnection
from pydantic import SecretStr

from prefect_atlas import DatabaseBlock, DiscordBlock, EventStore, NewEvent, metrics
from prefect_atlas.events.consumers import ConsumerDeadLetter, ConsumeResult, oldest_checkpoint
from prefect_atlas.events.models import StoredEvent
from prefect_atlas.exceptions import ConsumerError, DeadLetterError
from prefect_atlas.tasks import consume_events
from tests.discord._server import DiscordServer

PROJECTION = """
CREATE TABLE public.seen (
    event_id UUID PRIMARY KEY,
    entity_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    tag TEXT NOT NULL DEFAULT '',
    times INTEGER NOT NULL DEFAULT 1
)
"""
UPSERT = (
    "INSERT INTO public.seen (event_id, entity_id, version, tag) VALUES (%s, %s, %s, %s) "
    "ON CONFLICT (event_id) DO UPDATE SET times = seen.times + 1"
)


async def project(events: Sequence[StoredEvent], conn: AsyncConnection[Any]) -> None:
    """A projection in PostgreSQL: one row per event; `times` counts deliveries."""
    await conn.cursor().executemany(
        UPSERT, [(e.event_id, e.entity_id, e.version, "") for e in events]
    )


async def _truncate(conn: AsyncConnection[Any]) -> None:
    await conn.execute("TRUNCATE public.seen")


def _events(kind: str, n: int, entities: int = 7) -> list[NewEvent]:
    return [NewEvent(kind, f"{kind}-{i % entities}", {"i": i}) for i in range(n)]


async def _one(db: DatabaseBlock, query: str) -> tuple[Any, ...]:
    """The one row of ``query`` (``afetch_one`` pages: a repeated call gives the next row)."""
    [row] = await db.afetch_all(query)
    return tuple(row)


async def _seen(db: DatabaseBlock) -> tuple[Any, ...]:
    return await _one(db, "SELECT count(*), count(DISTINCT event_id), max(times) FROM seen")


async def test_consume_processes_each_event_once_and_resumes_after_its_checkpoint(
    store: EventStore, db: DatabaseBlock
) -> None:
    await db.aexecute(PROJECTION)
    await store.aemit_many(_events("c.made", 1000))
    first = await store.aconsume("proj", project, batch_size=300)
    assert isinstance(first, ConsumeResult)
    assert (first.processed, first.batches, first.dead_lettered, first.caught_up) == (
        1000,
        4,
        0,
        True,
    )
    again = await store.aconsume("proj", project, batch_size=300)
    assert (again.processed, again.batches, again.position) == (0, 0, first.position)
    await store.aemit_many(_events("c.made", 10))
    third = await store.aconsume("proj", project, batch_size=300)
    assert third.processed == 10
    assert await _seen(db) == (1010, 1010, 1)
    [lag] = await store.aconsumer_lag("proj")
    assert (lag.processed, lag.events_behind, lag.seconds_behind) == (1010, 0, 0.0)
    assert (lag.position, lag.xid, lag.group_size, lag.dead_letters) == (
        third.position,
        third.xid,
        1,
        0,
    )


CRASH_CHILD = """
import asyncio, pathlib, sys
from pydantic import SecretStr
from prefect_atlas import DatabaseBlock, EventStore

async def main():
    store = EventStore(DatabaseBlock(url=SecretStr(sys.argv[1])), mode="strict",
                       spool_path=sys.argv[2])
    marker = pathlib.Path(sys.argv[3])
    batches = 0

    async def handler(events, conn):
        nonlocal batches
        await conn.cursor().executemany(
            "INSERT INTO public.seen (event_id, entity_id, version) VALUES (%s, %s, %s) "
            "ON CONFLICT (event_id) DO UPDATE SET times = seen.times + 1",
            [(e.event_id, e.entity_id, e.version) for e in events],
        )
        batches += 1
        if batches == 4:  # this batch's rows are written, not committed: killed here
            marker.write_text("inside batch 4")
            await asyncio.sleep(3600)

    await store.aconsume("crash", handler, batch_size=100)
    print("finished without being killed", flush=True)

asyncio.run(main())
"""


async def test_sigkill_mid_batch_then_restart_projects_every_event_exactly_once(
    store: EventStore, db: DatabaseBlock, database_url: str, tmp_path: Path
) -> None:
    await db.aexecute(PROJECTION)
    await store.aemit_many(_events("crash.ev", 1000, entities=13))
    marker = tmp_path / "marker"
    child = subprocess.Popen(
        [sys.executable, "-c", CRASH_CHILD, database_url, str(tmp_path / "s.sqlite"), str(marker)],
        env=os.environ.copy(),
    )
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and child.poll() is None and not marker.exists():
            await asyncio.sleep(0.02)
        assert marker.exists(), "the child never reached its fourth batch"
        # the child's fourth batch is written on the server, uncommitted
        assert await _seen(db) == (300, 300, 1)
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(30)
    assert child.returncode == -signal.SIGKILL
    [lag] = await store.aconsumer_lag("crash")
    assert (lag.processed, lag.events_behind) == (300, 700)  # the checkpoint agrees
    # the restart waits for the server to roll the dead client's transaction back (row lock)
    resumed = await asyncio.wait_for(store.aconsume("crash", project, batch_size=100), 120)
    assert (resumed.processed, resumed.batches, resumed.caught_up) == (700, 7, True)
    assert await _seen(db) == (1000, 1000, 1)  # every event once, none twice, none lost
    [lag] = await store.aconsumer_lag("crash")
    assert (lag.processed, lag.events_behind) == (1000, 0)


async def test_a_group_of_two_splits_entities_without_overlap_in_order(
    store: EventStore, db: DatabaseBlock
) -> None:
    await db.aexecute(PROJECTION)
    await store.aemit_many(_events("g.ev", 600, entities=40))
    order: dict[int, list[tuple[str, int]]] = {0: [], 1: []}

    def member_handler(member: int) -> Any:
        async def handle(events: Sequence[StoredEvent], conn: AsyncConnection[Any]) -> None:
            order[member] += [(e.entity_id, e.version) for e in events]
            await conn.cursor().executemany(
                UPSERT, [(e.event_id, e.entity_id, e.version, str(member)) for e in events]
            )
            await asyncio.sleep(0)  # let the other member interleave

        return handle

    results = await asyncio.gather(
        *(
            store.aconsume("grp", member_handler(m), group_size=2, member=m, batch_size=50)
            for m in (0, 1)
        )
    )
    assert results[0].processed + results[1].processed == 600
    assert results[0].processed > 0 and results[1].processed > 0
    assert await _seen(db) == (600, 600, 1)  # the union is every event, no overlap
    split = await db.afetch_all(
        "SELECT entity_id, count(DISTINCT tag), min(tag), "
        "min(atlas.consumer_member(entity_id, 2))::text FROM seen GROUP BY 1"
    )
    assert len(split) == 40
    assert all(kinds == 1 and tag == member for _, kinds, tag, member in split)
    for seen in order.values():  # each entity's events in version order within its member
        per_entity: dict[str, list[int]] = {}
        for entity, version in seen:
            per_entity.setdefault(entity, []).append(version)
        assert all(v == list(range(1, len(v) + 1)) for v in per_entity.values())
    lags = await store.aconsumer_lag("grp")
    assert [(lag.member, lag.group_size, lag.events_behind) for lag in lags] == [
        (0, 2, 0),
        (1, 2, 0),
    ]
    with pytest.raises(ConsumerError, match=r"group of 2 .* not 3.*[Rr]ebuild"):
        await store.aconsume("grp", project, group_size=3, member=0)
    with pytest.raises(ConsumerError, match=r"member must be in 0\.\.1"):
        await store.aconsume("grp", project, group_size=2, member=2)
    rebuilt = await store.aconsume(
        "grp", project, group_size=3, member=2, rebuild=True, on_rebuild=_truncate
    )
    expected = await _one(
        db, "SELECT count(*) FROM atlas.events WHERE atlas.consumer_member(entity_id, 3) = 2"
    )
    assert expected is not None and rebuilt.processed == expected[0] > 0
    assert [(lag.member, lag.group_size) for lag in await store.aconsumer_lag("grp")] == [(2, 3)]


SAME_CHILD = """
import asyncio, pathlib, sys
from pydantic import SecretStr
from prefect_atlas import DatabaseBlock, EventStore

async def main():
    store = EventStore(DatabaseBlock(url=SecretStr(sys.argv[1])), mode="strict",
                       spool_path=sys.argv[2])
    go = pathlib.Path(sys.argv[3])
    await store.aconsumer_lag()  # connected and warm before the start
    pathlib.Path(sys.argv[4]).write_text("ready")
    while not go.exists():
        await asyncio.sleep(0.005)

    async def handler(events, conn):
        await conn.cursor().executemany(
            "INSERT INTO public.seen (event_id, entity_id, version, tag) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (event_id) DO UPDATE SET times = seen.times + 1",
            [(e.event_id, e.entity_id, e.version, sys.argv[4]) for e in events],
        )
        await asyncio.sleep(0.05)  # hold the batch's transaction a while

    result = await store.aconsume("same", handler, batch_size=25)
    print(result.processed, flush=True)

asyncio.run(main())
"""


async def test_two_processes_on_one_consumer_take_turns_and_never_double_process(
    store: EventStore, db: DatabaseBlock, database_url: str, tmp_path: Path
) -> None:
    await db.aexecute(PROJECTION)
    await store.aemit_many(_events("same.ev", 1000, entities=9))
    await store.aconsume("same", project, event_types=["no.such"], rebuild=True)  # fresh row
    await store.areset_consumer("same")
    go = tmp_path / "go"
    ready = [tmp_path / "ready-a", tmp_path / "ready-b"]
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                SAME_CHILD,
                database_url,
                str(tmp_path / f"s{i}.sqlite"),
                str(go),
                str(ready[i]),
            ],
            env=os.environ.copy(),
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not all(r.exists() for r in ready):
            assert all(c.poll() is None for c in children), "a child died before the start"
            await asyncio.sleep(0.02)
        go.write_text("go")
        outputs = [c.communicate(timeout=180)[0] for c in children]
    finally:
        for c in children:
            if c.poll() is None:
                c.kill()
                c.wait(30)
    assert [c.returncode for c in children] == [0, 0]
    processed = [int(out.split()[-1]) for out in outputs]
    assert sum(processed) == 1000
    assert await _seen(db) == (1000, 1000, 1)  # nothing twice
    per_child = await db.afetch_all("SELECT tag, count(*) FROM seen GROUP BY 1 ORDER BY 1")
    assert [n for _, n in per_child] == [p for p in processed if p]
    assert min(processed) > 0  # both worked: they took turns on the locked checkpoint


async def test_a_failing_event_is_retried_then_parked_and_the_consumer_goes_on(
    store: EventStore, db: DatabaseBlock, caplog: pytest.LogCaptureFixture
) -> None:
    await db.aexecute(PROJECTION)
    ids = await store.aemit_many(
        [NewEvent("dl.ev", f"e{i % 3}", {"i": i, "bad": i == 6}) for i in range(10)]
    )
    calls: list[int] = []

    async def picky(events: Sequence[StoredEvent], conn: AsyncConnection[Any]) -> None:
        calls.append(len(events))
        await project(events, conn)  # written, then rolled back with the failure
        if any(e.payload["bad"] for e in events):
            raise ValueError("bad event")

    alerts: list[ConsumerDeadLetter] = []

    async def alert(letter: ConsumerDeadLetter) -> None:
        alerts.append(letter)

    with (
        stamina.set_testing(True, attempts=100, cap=True),  # no waits; max_attempts governs
        caplog.at_level(logging.ERROR, logger="prefect_atlas.events"),
    ):
        result = await store.aconsume(
            "dl", picky, batch_size=10, max_attempts=3, on_dead_letter=alert
        )
    # 3 tries of the batch; bisect: 0-4 ok, 5-6 fail, 5 ok; 6 alone 3 tries; then 7-9
    assert calls == [10, 10, 10, 5, 2, 1, 1, 1, 1, 3]
    assert (result.processed, result.dead_lettered, result.caught_up) == (9, 1, True)
    assert await _seen(db) == (9, 9, 1)
    rows = await db.afetch_all(
        "SELECT consumer, member, event_id, event_type, entity_id, error, attempts, "
        "position = (SELECT position FROM atlas.events WHERE event_id = d.event_id), "
        "xid = (SELECT xid FROM atlas.events WHERE event_id = d.event_id) "
        "FROM atlas.consumer_dead_letters AS d"
    )
    assert rows == [("dl", 0, ids[6], "dl.ev", "e0", "ValueError: bad event", 3, True, True)]
    assert [(a.event_id, a.attempts, a.error) for a in alerts] == [
        (ids[6], 3, "ValueError: bad event")
    ]
    assert any(
        str(ids[6]) in r.getMessage() and "dead letter" in r.getMessage() for r in caplog.records
    )
    assert 'atlas_consumer_dead_lettered_total{consumer="dl"} 1.0' in metrics.render()
    [lag] = await store.aconsumer_lag("dl")
    assert (lag.processed, lag.dead_lettered, lag.dead_letters, lag.events_behind) == (9, 1, 1, 0)
    [letter] = await store.aconsumer_dead_letters("dl")
    assert letter == alerts[0]

    # retry: the handler fails again (attempts counted), then succeeds once fixed
    with pytest.raises(DeadLetterError, match=r"failed on event .* again"):
        await store.aretry_consumer_dead_letter("dl", ids[6], picky)
    [letter] = await store.aconsumer_dead_letters("dl")
    assert letter.attempts == 4
    assert await store.aretry_consumer_dead_letter("dl", str(ids[6]), project) == ids[6]
    assert await store.aconsumer_dead_letters("dl") == []
    assert await _seen(db) == (10, 10, 1)
    with pytest.raises(DeadLetterError, match="no dead letter"):
        await store.aretry_consumer_dead_letter("dl", ids[6], project)
    assert await store.adiscard_consumer_dead_letter("dl", ids[6]) is False


async def test_a_lost_connection_in_the_handler_is_raised_never_parked(
    store: EventStore, db: DatabaseBlock
) -> None:
    await store.aemit_many(_events("lost.ev", 5))

    async def dies(events: Sequence[StoredEvent], conn: AsyncConnection[Any]) -> None:
        await conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")

    with (
        stamina.set_testing(True, attempts=100, cap=True),
        pytest.raises(psycopg.OperationalError),
    ):
        await store.aconsume("lost", dies, max_attempts=2)
    assert await store.aconsumer_dead_letters("lost") == []
    [lag] = await store.aconsumer_lag("lost")
    assert (lag.processed, lag.events_behind) == (0, 5)


async def test_event_types_filter_and_a_changed_filter_is_refused(
    store: EventStore, db: DatabaseBlock
) -> None:
    await db.aexecute(PROJECTION)
    await store.aemit_many(
        [NewEvent("f.a" if i % 3 == 0 else "f.b", f"e{i % 4}", {"i": i}) for i in range(90)]
    )
    result = await store.aconsume("filt", project, event_types=["f.a"], batch_size=7)
    assert (result.processed, result.caught_up) == (30, True)
    assert await _one(
        db, "SELECT count(*) FROM seen JOIN atlas.events USING (event_id) WHERE event_type = 'f.a'"
    ) == (30,)
    assert await _seen(db) == (30, 30, 1)
    head = await _one(
        db, "SELECT position FROM atlas.events ORDER BY xid DESC, position DESC LIMIT 1"
    )
    assert head == (result.position,)  # caught up: the cursor moved past the f.b events too
    await store.aemit_many([NewEvent("f.b", "e1", {}), NewEvent("f.a", "e2", {})])
    [lag] = await store.aconsumer_lag("filt")
    assert (lag.events_behind, lag.event_types) == (1, ("f.a",))
    assert (await store.aconsume("filt", project, event_types=["f.a"])).processed == 1
    with pytest.raises(ConsumerError, match=r"event_types=\('f.a',\).*[Rr]ebuild"):
        await store.aconsume("filt", project, event_types=["f.a", "f.b"])
    with pytest.raises(TypeError, match=r"event_types=\['f.a'\]"):
        await store.aconsume("filt", project, event_types="f.a")


async def test_a_late_committing_transaction_is_not_skipped(
    store: EventStore, db: DatabaseBlock, database_url: str
) -> None:
    await db.aexecute(PROJECTION)
    await store.aemit_many(_events("late.before", 3))
    async with await psycopg.AsyncConnection.connect(database_url) as held:
        await held.execute("SELECT pg_current_xact_id()")  # its xid is older than what follows
        after = await store.aemit_many(_events("late.after", 5))  # committed, newer xids
        await held.execute(
            "SELECT atlas.append_event(%s, 'late.held', 'held-1', '{}'::jsonb, now(), NULL, false)",
            [uuid.uuid4()],
        )
        first = await store.aconsume("late", project)
        assert first.processed == 3  # the newer events wait behind the open transaction
        await held.commit()
    second = await store.aconsume("late", project)
    assert second.processed == 6
    assert await _seen(db) == (9, 9, 1)
    got = await db.afetch_all("SELECT event_id FROM seen WHERE entity_id LIKE 'late.after%%'")
    assert {r[0] for r in got} == set(after)


async def test_lag_counts_events_and_seconds_behind_and_reaches_health_and_metrics(
    store: EventStore, db: DatabaseBlock
) -> None:
    await db.aexecute(PROJECTION)
    await store.aemit_many(_events("lag.a", 40) + _events("lag.b", 10))
    stop = asyncio.Event()

    async def one_batch(events: Sequence[StoredEvent], conn: AsyncConnection[Any]) -> None:
        await project(events, conn)
        stop.set()  # the loop stops after this batch commits

    partial = await store.aconsume("lagging", one_batch, batch_size=20, stop=stop)
    assert (partial.processed, partial.batches, partial.caught_up) == (20, 1, False)
    filtered = await store.aconsume(
        "only-b", project, event_types=["lag.b"], batch_size=4, stop=stop
    )
    assert filtered.processed == 0  # stop was already set: nothing ran
    idle = await store.aconsume("lagging", project, stop=stop)
    assert (idle.processed, idle.position, idle.xid) == (0, partial.position, partial.xid)
    lags = {lag.name: lag for lag in await store.aconsumer_lag()}
    assert lags["lagging"].events_behind == 30
    assert lags["only-b"].events_behind == 10
    oldest = await _one(
        db, "SELECT extract(epoch FROM now() - min(recorded_at))::float8 FROM atlas.events"
    )
    assert oldest is not None
    assert 0 < lags["lagging"].seconds_behind <= oldest[0] + 60
    assert 0 < lags["only-b"].seconds_behind <= oldest[0] + 60
    text = metrics.render()
    assert 'atlas_consumer_lag_events{consumer="lagging",member="0"} 30.0' in text
    assert 'atlas_consumer_lag_events{consumer="only-b",member="0"} 10.0' in text
    health = await store.ahealth()
    assert health.consumers is not None
    assert {(c.name, c.events_behind) for c in health.consumers} == {
        ("lagging", 30),
        ("only-b", 10),
    }
    assert "most behind 'lagging'/0: 30 event(s)" in health.detail
    async with db.connection() as conn:
        assert await oldest_checkpoint(conn) == (0, 0)  # only-b has processed nothing
    done = await store.aconsume("lagging", project, batch_size=20)
    assert done.processed == 30
    [lag] = await store.aconsumer_lag("lagging")
    assert (lag.events_behind, lag.seconds_behind) == (0, 0.0)
    assert await _seen(db) == (50, 50, 1)


async def test_follow_handles_new_events_as_they_commit_until_stopped(
    store: EventStore, db: DatabaseBlock
) -> None:
    await db.aexecute(PROJECTION)
    stop = asyncio.Event()
    running = asyncio.create_task(
        store.aconsume("live", project, follow=True, poll_interval=30, stop=stop)
    )
    for wave in (1, 2):
        await store.aemit_many(_events(f"live.w{wave}", 10))  # NOTIFY wakes it (poll is 30 s)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (await _seen(db))[0] < 10 * wave:
            assert not running.done()
            await asyncio.sleep(0.05)
        assert await _seen(db) == (10 * wave, 10 * wave, 1)
    stop.set()
    result = await asyncio.wait_for(running, 60)
    assert (result.processed, result.caught_up) == (20, True)


async def test_rebuild_and_reset_commit_with_the_callers_truncate(
    store: EventStore, db: DatabaseBlock
) -> None:
    await db.aexecute(PROJECTION)
    await store.aemit_many(_events("rb.ev", 25))
    assert (await store.aconsume("rb", project)).processed == 25

    # a reset inside a transaction that rolls back leaves checkpoint and projection as they were
    async def reset_then_fail() -> None:
        async with db.connection() as conn, conn.transaction():
            await _truncate(conn)
            assert await store.areset_consumer("rb", conn=conn) == 1
            raise RuntimeError("changed my mind")

    with pytest.raises(RuntimeError, match="changed my mind"):
        await reset_then_fail()
    assert (await store.aconsume("rb", project)).processed == 0
    assert await _seen(db) == (25, 25, 1)
    rebuilt = await store.aconsume("rb", project, rebuild=True, on_rebuild=_truncate)
    assert rebuilt.processed == 25
    assert await _seen(db) == (25, 25, 1)  # truncated with the reset, then each event once
    async with db.connection() as conn, conn.transaction():
        await _truncate(conn)
        await store.areset_consumer("rb", conn=conn)
    assert (await store.aconsume("rb", project)).processed == 25
    assert await _seen(db) == (25, 25, 1)
    with pytest.raises(ConsumerError, match="pass rebuild=True"):
        await store.aconsume("rb", project, on_rebuild=_truncate)
    with pytest.raises(ConsumerError, match="1 to 200 characters"):
        await store.aconsume("", project)


async def test_sync_face_and_the_task_from_def_and_async_def_flows(
    store: EventStore, db: DatabaseBlock
) -> None:
    await db.aexecute(PROJECTION)
    await store.aemit_many(_events("sync.ev", 12))

    def sync_code() -> ConsumeResult:
        return store.consume("sync", project, batch_size=5)

    result = await asyncio.to_thread(sync_code)  # plain sync code: no running loop
    assert (result.processed, result.batches) == (12, 3)
    assert await _seen(db) == (12, 12, 1)

    await store.aemit_many(_events("sync.ev", 4))

    @flow
    def def_flow() -> ConsumeResult:
        return consume_events("sync", project, database=db)  # type: ignore[return-value]

    from_def = await asyncio.to_thread(def_flow)
    assert isinstance(from_def, ConsumeResult) and from_def.processed == 4

    await store.aemit_many(_events("sync.ev", 3))

    @flow
    async def async_flow() -> ConsumeResult:
        return await consume_events("sync", project, database=db)

    from_async = await async_flow()
    assert from_async.processed == 3
    assert await _seen(db) == (19, 19, 1)


async def test_cli_lists_consumers_with_lag_and_dead_letters(
    store: EventStore, db: DatabaseBlock, database_url: str, tmp_path: Path
) -> None:
    ids = await store.aemit_many(
        [NewEvent("cli.ev", f"e{i % 2}", {"bad": i == 1}) for i in range(4)]
    )

    async def refuses_bad(events: Sequence[StoredEvent], conn: AsyncConnection[Any]) -> None:
        if any(e.payload["bad"] for e in events):
            raise LookupError("no such channel")

    with stamina.set_testing(True, attempts=100, cap=True):
        await store.aconsume("cli-proj", refuses_bad, max_attempts=1)
    await store.aemit("cli.ev", "e9", {})
    env = {**os.environ, "DATABASE_URL": database_url, "ATLAS_HOME": str(tmp_path)}

    def cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "prefect_atlas", "events", "consumers", *args],
            capture_output=True,
            env=env,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    table = cli("--dead-letters")
    lines = table.splitlines()
    assert lines[0].startswith("cli-proj  member 0/1  position ")
    assert "processed 3  behind 1 event(s)" in lines[0] and "dead letters 1" in lines[0]
    assert lines[1].startswith(f"dead letter of cli-proj (member 0): {ids[1]}  'cli.ev'  'e1'")
    assert lines[1].endswith("x1  LookupError: no such channel")
    rows = [orjson.loads(line) for line in cli("--json", "--dead-letters").splitlines()]
    assert [(r.get("consumer"), r.get("events_behind"), r.get("dead_letters")) for r in rows] == [
        ("cli-proj", 1, 1),
        (None, None, None),
    ]
    assert rows[1]["event_id"] == str(ids[1]) and rows[1]["attempts"] == 1
    assert cli("--name", "nope").strip() == "no consumer named 'nope'"


async def test_without_a_callback_a_dead_letter_alerts_the_stores_discord_block(
    db: DatabaseBlock, tmp_path: Path, discord_server: DiscordServer
) -> None:
    await db.asetup()
    hook = discord_server.add_webhook()
    alerts = DiscordBlock(allowed_hosts=["127.0.0.1"], alerts=SecretStr(discord_server.url(hook)))
    store = EventStore(db, spool_path=str(tmp_path / "s.sqlite"), alerts=alerts)
    [event_id] = await store.aemit_many([NewEvent("alert.ev", "a1", {})])

    async def broken(events: Sequence[StoredEvent], conn: AsyncConnection[Any]) -> None:
        raise RuntimeError("projection table missing")

    with stamina.set_testing(True, attempts=100, cap=True):
        result = await store.aconsume("alerting", broken, max_attempts=2)
    assert (result.processed, result.dead_lettered) == (0, 1)
    assert len(hook.received) == 1
    text = str(hook.received[0])
    assert "alerting" in text and str(event_id) in text and "projection table missing" in text


async def test_a_following_consumer_under_concurrent_writers_sees_each_event_once(
    store: EventStore, db: DatabaseBlock
) -> None:
    await db.aexecute(PROJECTION)
    stop = asyncio.Event()
    following = asyncio.create_task(
        store.aconsume("busy", project, follow=True, poll_interval=0.1, batch_size=64, stop=stop)
    )

    async def writer(w: int) -> None:
        for chunk in range(20):
            await store.aemit_many(
                [NewEvent("busy.ev", f"w{w}-{i % 5}", {"c": chunk}) for i in range(50)]
            )

    await asyncio.gather(*(writer(w) for w in range(4)))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (await _seen(db))[0] < 4000:
        assert not following.done()
        await asyncio.sleep(0.05)
    stop.set()
    result = await asyncio.wait_for(following, 60)
    assert result.processed == 4000
    assert await _seen(db) == (4000, 4000, 1)
    gaps = await _one(
        db,
        "SELECT count(*) FROM (SELECT entity_id FROM seen GROUP BY 1 "
        "HAVING max(version) <> count(*)) AS g",
    )
    assert gaps == (0,)
