"""DatabaseBlock's paging contract (Prefect's database-block family) on a real PostgreSQL.

Repeated fetches with the same inputs return the next rows of the first execution until
``reset_cursors()``; paging never holds a pool connection, a transaction or a lock between
fetches; cursors belong to one block instance and one event loop.
"""

from __future__ import annotations

import asyncio
import copy
import threading

import psycopg
import pytest
from prefect import flow, task
from pydantic import SecretStr

from prefect_atlas import DatabaseBlock
from prefect_atlas.database import _cursors
from prefect_atlas.exceptions import DatabaseError

# nextval() counts executions: a statement paged through runs exactly once
PAGED = "SELECT g, nextval('runs') FROM generate_series(1, 25) AS g ORDER BY g"


async def _prepare(db: DatabaseBlock) -> None:
    await db.aexecute("CREATE SEQUENCE runs")
    await db.aexecute("CREATE TABLE customers (id int PRIMARY KEY, name text)")
    await db.aexecute_many(
        "INSERT INTO customers VALUES (%s, %s)", [(i, f"c{i}") for i in range(1, 26)]
    )


async def _runs(db: DatabaseBlock) -> int:
    rows = await db.afetch_all("SELECT last_value FROM runs")
    return int(rows[0][0])


async def test_sqlalchemy_style_loops_see_every_row_exactly_once(db: DatabaseBlock) -> None:
    await _prepare(db)
    # the loop of SqlAlchemyConnector's fetch_many docs, run to its end
    pages = []
    while rows := await db.afetch_many(PAGED, size=7):
        pages.append(rows)
        assert len(pages) <= 10, "the paging loop does not end"
    assert [len(p) for p in pages] == [7, 7, 7, 4]
    assert [r[0] for p in pages for r in p] == list(range(1, 26))
    assert await _runs(db) == 25  # one execution for five fetches
    # a used-up result keeps answering "nothing left", from any fetch, until reset_cursors
    assert await db.afetch_many(PAGED, size=7) == []
    assert await db.afetch_one(PAGED) is None
    assert await _runs(db) == 25

    # the loop of SqlAlchemyConnector's fetch_one docs
    seen = []
    results: object = True
    while results:
        results = await db.afetch_one("SELECT id, name FROM customers ORDER BY id")
        if results:
            seen.append(results)
        assert len(seen) <= 30, "the fetch_one loop does not end"
    assert seen == [(i, f"c{i}") for i in range(1, 26)]


async def test_interleaved_statements_page_independently(db: DatabaseBlock) -> None:
    await _prepare(db)
    by_id = "SELECT id FROM customers WHERE id > %s ORDER BY id"
    assert await db.afetch_many(by_id, [0], size=2) == [(1,), (2,)]
    assert await db.afetch_many(by_id, [20], size=2) == [(21,), (22,)]  # other parameters
    assert await db.afetch_one("SELECT name FROM customers ORDER BY id DESC") == ("c25",)
    assert await db.afetch_many(by_id, [0], size=3) == [(3,), (4,), (5,)]
    assert await db.afetch_one("SELECT name FROM customers ORDER BY id DESC") == ("c24",)
    assert await db.afetch_many(by_id, [20], size=10) == [(23,), (24,), (25,)]
    assert await db.afetch_many(by_id, [20], size=10) == []
    assert await db.afetch_many(by_id, [0], size=1) == [(6,)]  # untouched by the other's end
    # the same inputs spelled differently are the same cursor; a different type is not
    named = "SELECT id FROM customers WHERE id BETWEEN %(lo)s AND %(hi)s ORDER BY id"
    assert await db.afetch_one(named, {"lo": 1, "hi": 3}) == (1,)
    assert await db.afetch_one(named, {"hi": 3, "lo": 1}) == (2,)
    assert await db.afetch_one("SELECT %s::int", [1]) == (1,)
    assert await db.afetch_one("SELECT %s::int", [True]) == (1,)  # not the [1] cursor


async def test_reset_cursors_restarts_every_statement(db: DatabaseBlock) -> None:
    await _prepare(db)
    assert await db.afetch_many(PAGED, size=20) == [(i, i) for i in range(1, 21)]
    assert await db.afetch_one("SELECT count(*) FROM customers") == (25,)
    assert await db.afetch_one("SELECT count(*) FROM customers") is None  # used up
    await db.areset_cursors()
    assert await db.afetch_one("SELECT count(*) FROM customers") == (25,)
    assert await db.afetch_many(PAGED, size=2) == [(1, 26), (2, 27)]  # ran again
    assert await _runs(db) == 50


async def test_fetch_all_returns_every_row_or_the_rest_of_a_paged_result(
    db: DatabaseBlock,
) -> None:
    await _prepare(db)
    query = "SELECT id FROM customers WHERE id <= %s ORDER BY id"
    every = [(i,) for i in range(1, 6)]
    assert await db.afetch_all(query, [5]) == every
    assert await db.afetch_all(query, [5]) == every  # no cursor open: runs again
    assert await db.afetch_many(query, [5], size=2) == every[:2]
    assert await db.afetch_all(query, [5]) == every[2:]  # the rest, which ends the cursor
    assert await db.afetch_one(query, [5]) is None
    assert await db.afetch_all(query, [5]) == every


async def test_a_statement_with_effects_runs_once_per_cursor(db: DatabaseBlock) -> None:
    await _prepare(db)
    insert = "INSERT INTO customers VALUES (%s, 'new') RETURNING id"
    assert await db.afetch_one(insert, [100]) == (100,)  # committed at once
    assert await db.afetch_all("SELECT count(*) FROM customers WHERE id = 100") == [(1,)]
    assert await db.afetch_one(insert, [100]) is None  # not run again: no unique violation
    assert await db.afetch_all("SELECT count(*) FROM customers") == [(26,)]
    # a statement that fails leaves no cursor: the next fetch runs it again
    with pytest.raises(psycopg.errors.UniqueViolation):
        await db.afetch_one("INSERT INTO customers VALUES (1, 'dup') RETURNING id")
    with pytest.raises(psycopg.errors.UniqueViolation):
        await db.afetch_one("INSERT INTO customers VALUES (1, 'dup') RETURNING id")


async def test_no_connection_transaction_or_lock_is_held_between_fetches(
    db: DatabaseBlock, database_url: str
) -> None:
    await _prepare(db)
    first = await db.afetch_many("SELECT id FROM customers ORDER BY id", size=5)
    assert first == [(i,) for i in range(1, 6)]
    stats = db.pool_stats()
    assert stats is not None and stats.size == stats.available  # every connection back
    with psycopg.connect(database_url, autocommit=True) as other:
        held = other.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = %s AND state <> 'idle'",
            [db.application_name],
        ).fetchone()
        assert held == (0,)  # no backend of the block idle in a transaction
        # a lock-hungry statement elsewhere does not wait for the open cursor
        other.execute("SET lock_timeout = '5s'")
        other.execute("TRUNCATE customers")
    # the rest of the result was read by the first fetch
    rest = await db.afetch_many("SELECT id FROM customers ORDER BY id", size=100)
    assert rest == [(i,) for i in range(6, 26)]


async def test_close_ends_the_cursors_and_releases_the_connections(
    database_url: str,
) -> None:
    db = DatabaseBlock(url=SecretStr(database_url), timeout=10, min_size=1, max_size=2)
    await _prepare(db)
    assert await db.afetch_many(PAGED, size=3) == [(1, 1), (2, 2), (3, 3)]
    pools = db._pools.get()
    assert pools is not None

    def backends() -> int:
        with psycopg.connect(database_url, autocommit=True) as other:
            row = other.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name = %s",
                [db.application_name],
            ).fetchone()
            assert row is not None
            return int(row[0])

    assert await asyncio.to_thread(backends) >= 1
    await db.aclose()
    assert pools.primary.closed
    for _ in range(200):  # the server notices the closed sockets (a hang bound, not a timing)
        if await asyncio.to_thread(backends) == 0:
            break
        await asyncio.sleep(0.05)
    assert await asyncio.to_thread(backends) == 0
    # closing ended the cursor: the statement runs again from its first row
    assert await db.afetch_many(PAGED, size=3) == [(1, 26), (2, 27), (3, 28)]
    await db.aclose()


async def test_context_manager_exit_resets_cursors(database_url: str) -> None:
    block = DatabaseBlock(url=SecretStr(database_url), timeout=10)
    async with block as db:
        await _prepare(db)
        assert await db.afetch_many(PAGED, size=2) == [(1, 1), (2, 2)]
        assert await db.afetch_many(PAGED, size=2) == [(3, 3), (4, 4)]
    async with block as db:
        assert await db.afetch_many(PAGED, size=2) == [(1, 26), (2, 27)]


async def test_more_open_cursors_than_the_cap_never_exhaust_the_pool(database_url: str) -> None:
    # One connection in the pool: a paging scheme that pinned one would block the next fetch.
    db = DatabaseBlock(url=SecretStr(database_url), timeout=10, max_size=1)
    try:
        query = "SELECT %s::int, g FROM generate_series(1, 3) AS g ORDER BY g"
        extra = 5
        count = _cursors.MAX_OPEN_RESULTS + extra
        firsts = [await db.afetch_one(query, [n]) for n in range(count)]
        assert firsts == [(n, 1) for n in range(count)]
        stats = db.pool_stats()
        assert stats is not None and stats.size <= 1 and stats.waiting == 0
        assert stats.available == stats.size
        assert await asyncio.wait_for(db.aexecute("SELECT 1"), timeout=20) == 1
        # the newest MAX_OPEN_RESULTS go on where they were
        for n in range(extra, count):
            assert await db.afetch_one(query, [n]) == (n, 2)
        # the least recently used were dropped: one clear error, then a fresh start
        for n in range(extra):
            with pytest.raises(DatabaseError, match=r"dropped unread.*reset_cursors\(\)") as info:
                await db.afetch_one(query, [n])
            assert f"more than {_cursors.MAX_OPEN_RESULTS} results" in str(info.value)
            assert await db.afetch_one(query, [n]) == (n, 1)
    finally:
        await db.aclose()


async def test_dropped_cursor_error_never_shows_parameters(database_url: str) -> None:
    db = DatabaseBlock(url=SecretStr(database_url), timeout=10)
    try:
        secret = "s3cr3t-token-value"
        query = "SELECT %s::text, g FROM generate_series(1, 2) AS g"
        assert await db.afetch_one(query, [secret]) == (secret, 1)
        for n in range(_cursors.MAX_OPEN_RESULTS):
            assert await db.afetch_one(query, [str(n)]) == (str(n), 1)
        with pytest.raises(DatabaseError) as info:
            await db.afetch_one(query, [secret])
        assert secret not in str(info.value)
        assert "SELECT %s::text, g FROM generate_series" in str(info.value)
    finally:
        await db.aclose()


async def test_concurrent_fetches_of_one_statement_share_one_execution(db: DatabaseBlock) -> None:
    await _prepare(db)
    pages = await asyncio.gather(*(db.afetch_many(PAGED, size=5) for _ in range(6)))
    got = sorted(r[0] for p in pages for r in p)
    assert got == list(range(1, 26))  # every row once across the tasks
    assert sorted(len(p) for p in pages) == [0, 5, 5, 5, 5, 5]
    assert await _runs(db) == 25


async def test_a_copy_starts_with_no_cursors(db: DatabaseBlock) -> None:
    await _prepare(db)
    assert await db.afetch_many(PAGED, size=2) == [(1, 1), (2, 2)]
    clone = copy.copy(db)
    try:
        assert await clone.afetch_many(PAGED, size=2) == [(1, 26), (2, 27)]
        assert await db.afetch_many(PAGED, size=2) == [(3, 3), (4, 4)]  # its own, untouched
    finally:
        await clone.aclose()


def test_sync_faces_page_in_a_plain_function(database_url: str) -> None:
    with DatabaseBlock(url=SecretStr(database_url), timeout=10) as db:
        db.execute("CREATE TABLE customers (name varchar, address varchar)")
        db.execute_many(
            "INSERT INTO customers (name, address) VALUES (%(name)s, %(address)s)",
            [
                {"name": "Ford", "address": "Highway 42"},
                {"name": "Unknown", "address": "Space"},
                {"name": "Me", "address": "Myway 88"},
            ],
        )
        query = "SELECT * FROM customers ORDER BY name"
        assert db.fetch_many(query, size=2) == [("Ford", "Highway 42"), ("Me", "Myway 88")]
        assert db.fetch_many(query, size=2) == [("Unknown", "Space")]
        assert db.fetch_many(query, size=2) == []
        seen = []
        results: object = True
        while results:
            results = db.fetch_one("SELECT name FROM customers ORDER BY name")
            if results:
                seen.append(results)
            assert len(seen) <= 5, "the fetch_one loop does not end"
        assert seen == [("Ford",), ("Me",), ("Unknown",)]
        assert db.fetch_one("SELECT name FROM customers ORDER BY name") is None
        db.reset_cursors()
        assert db.fetch_one("SELECT name FROM customers ORDER BY name") == ("Ford",)
        assert db.fetch_all(query) == [
            ("Ford", "Highway 42"),
            ("Me", "Myway 88"),
            ("Unknown", "Space"),
        ]
    with db:  # leaving `with db:` ended the sync faces' cursors
        assert db.fetch_one("SELECT name FROM customers ORDER BY name") == ("Ford",)


def test_cursors_of_one_event_loop_are_never_used_in_another(database_url: str) -> None:
    db = DatabaseBlock(url=SecretStr(database_url), timeout=10)
    query = "SELECT g FROM generate_series(1, 10) AS g ORDER BY g"
    try:
        assert db.fetch_many(query, size=2) == [(1,), (2,)]  # Prefect's run-sync loop

        async def in_a_new_loop() -> list[list[tuple[int, ...]]]:
            try:
                return [await db.afetch_many(query, size=2) for _ in range(2)]
            finally:
                await db.aclose()  # resets only this loop's cursors

        assert asyncio.run(in_a_new_loop()) == [[(1,), (2,)], [(3,), (4,)]]
        assert db.fetch_many(query, size=2) == [(3,), (4,)]  # the sync cursor went on
        pages: list[list[list[tuple[int, ...]]]] = []
        thread = threading.Thread(target=lambda: pages.append(asyncio.run(in_a_new_loop())))
        thread.start()
        thread.join(60)
        assert pages == [[[(1,), (2,)], [(3,), (4,)]]]  # a new loop starts its own cursor
        assert db.fetch_many(query, size=2) == [(5,), (6,)]
    finally:
        db.close()


def test_cursor_keys() -> None:
    key = _cursors.cursor_key
    assert key("SELECT %s", [1], {}) == key("SELECT %s", (1,), {})
    assert key("SELECT %s", [1], {}) == key("SELECT %s", [1], {})
    assert key("SELECT %s", [1], {}) != key("SELECT %s", [True], {})
    assert key("SELECT %s", [1], {}) != key("SELECT %s", [1.0], {})
    assert key("q", {"a": 1, "b": [2]}, {}) == key("q", {"b": [2], "a": 1}, {})
    assert key("q", None, {}) != key("q", None, {"prepare": True})
    assert key("q", [{"x": {1, 2}}], {}) == key("q", [{"x": {1, 2}}], {})  # unhashable: repr
    assert key(b"q", None, {}) != key("q", None, {})
    assert _cursors.describe_statement("SELECT  *\n FROM t") == "SELECT * FROM t"
    assert len(_cursors.describe_statement("SELECT " + "x, " * 50, limit=20)) == 20


NINE = "SELECT g FROM generate_series(1, 9) AS g ORDER BY g"


@task
def page_through(db: DatabaseBlock, size: int) -> list[int]:
    seen: list[int] = []
    while rows := db.fetch_many(NINE, size=size):
        seen.extend(int(r[0]) for r in rows)
        assert len(seen) <= 9, "the paging loop does not end"
    return seen


@flow
def paging_flow(db: DatabaseBlock) -> list[list[int]]:
    first = page_through(db, 2)
    # In one process the tasks get the flow's block itself, not a copy: its cursor is used up.
    used_up = page_through(db, 4)
    db.reset_cursors()
    again = page_through(db, 4)
    fresh = page_through(DatabaseBlock(url=db.url, timeout=db.timeout), 3)  # another instance
    return [first, used_up, again, fresh]


def test_paging_in_a_sync_flow_and_its_tasks(database_url: str) -> None:
    db = DatabaseBlock(url=SecretStr(database_url), timeout=10)
    try:
        every = list(range(1, 10))
        assert paging_flow(db) == [every, [], every, every]
    finally:
        db.close()
