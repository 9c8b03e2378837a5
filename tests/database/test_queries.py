"""DatabaseBlock's query interface, async originals and sync faces, on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import copy
import pickle
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from pydantic import SecretStr, ValidationError

from prefect_atlas import DatabaseBlock


async def test_fetch_and_execute_async(db: DatabaseBlock) -> None:
    await db.aexecute("CREATE TABLE t (id int PRIMARY KEY, name text)")
    touched = await db.aexecute_many(
        "INSERT INTO t (id, name) VALUES (%(id)s, %(name)s)",
        [{"id": i, "name": f"n{i}"} for i in range(10)],
    )
    assert touched >= 1
    assert await db.afetch_one("SELECT count(*) FROM t") == (10,)
    assert await db.afetch_one("SELECT name FROM t WHERE id = %s", [3]) == ("n3",)
    assert await db.afetch_one("SELECT name FROM t WHERE id = %s", [99]) is None
    assert await db.afetch_many("SELECT id FROM t ORDER BY id", size=3) == [(0,), (1,), (2,)]
    rows = await db.afetch_all("SELECT id FROM t WHERE id >= %(low)s ORDER BY id", {"low": 7})
    assert rows == [(7,), (8,), (9,)]
    assert await db.aexecute("DELETE FROM t WHERE id < %s", [5]) == 5


async def test_abstract_interface_is_awaitable(db: DatabaseBlock) -> None:
    # prefect.blocks.abstract.DatabaseBlock promises `await db.fetch_one(...)`.
    row = await db.fetch_one("SELECT 41 + 1")  # type: ignore[misc]
    assert row == (42,)
    await db.execute("CREATE TABLE u (v text)")  # type: ignore[misc]
    await db.execute_many("INSERT INTO u VALUES (%s)", [["a"], ["b"]])  # type: ignore[misc]
    assert await db.fetch_all("SELECT v FROM u ORDER BY v") == [("a",), ("b",)]  # type: ignore[misc]


async def test_sql_injection_strings_are_data(db: DatabaseBlock) -> None:
    await db.aexecute("CREATE TABLE s (v text)")
    evil = "x'); DROP TABLE s; --"
    await db.aexecute("INSERT INTO s VALUES (%s)", [evil])
    assert await db.afetch_one("SELECT v FROM s") == (evil,)


async def test_connection_commits_or_rolls_back(db: DatabaseBlock) -> None:
    await db.aexecute("CREATE TABLE c (v int)")
    async with db.connection() as conn:
        await conn.execute("INSERT INTO c VALUES (1)")

    async def insert_then_fail() -> None:
        async with db.connection() as conn:
            await conn.execute("INSERT INTO c VALUES (2)")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await insert_then_fail()
    assert await db.afetch_all("SELECT v FROM c") == [(1,)]


async def test_stream_pages_through_a_large_result(db: DatabaseBlock) -> None:
    seen = [
        row[0]
        async for row in db.stream("SELECT g FROM generate_series(1, 2500) g", batch_size=300)
    ]
    assert seen == list(range(1, 2501))


def test_sync_faces_in_sync_code(database_url: str) -> None:
    db = DatabaseBlock(url=SecretStr(database_url))
    try:
        assert db.setup()
        report = db.health()
        assert report.ok and report.schema_version is not None
        db.execute("CREATE TABLE st (v int)")
        db.execute_many("INSERT INTO st VALUES (%s)", [[i] for i in range(5)])
        assert db.fetch_one("SELECT sum(v) FROM st") == (10,)
        assert db.fetch_all("SELECT v FROM st ORDER BY v")[-1] == (4,)
        assert db.fetch_many("SELECT v FROM st ORDER BY v", size=2) == [(0,), (1,)]
    finally:
        db.close()


def test_sync_faces_from_many_threads_share_one_pool(database_url: str) -> None:
    db = DatabaseBlock(url=SecretStr(database_url), max_size=4)
    try:
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda i: db.fetch_one("SELECT %s::int", [i]), range(64)))
        assert results == [(i,) for i in range(64)]
        # every sync call ran on Prefect's one run-sync loop: one pool, not one per thread
        assert repr(db._pools) == "PerLoop(loops=1)"
    finally:
        db.close()


def test_one_pool_per_event_loop(database_url: str) -> None:
    db = DatabaseBlock(url=SecretStr(database_url))
    errors: list[BaseException] = []

    def worker() -> None:
        async def run() -> None:
            for i in range(3):
                assert await db.afetch_one("SELECT %s::int", [i]) == (i,)
            pools = db._pools.get()
            assert pools is not None and pools.loop is asyncio.get_running_loop()
            await db.aclose()

        try:
            asyncio.run(run())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


async def test_pickle_and_copy_never_carry_the_pool(db: DatabaseBlock) -> None:
    """Copies carry configuration only; the pools belong to the process runtime, so a copy with
    the same settings shares the original's pool (no second pool, no second probe). Closing a
    copy releases only that copy: the pool stays open for the original until its last user
    closes it."""
    assert await db.afetch_one("SELECT 1") == (1,)
    pools = db._pools.get()
    assert pools is not None
    state = pickle.dumps(db)
    assert b"AsyncConnectionPool" not in state and b"PerLoop" not in state
    for clone in (pickle.loads(state), copy.deepcopy(db), copy.copy(db)):
        assert clone.url is not None and db.url is not None
        assert clone.url.get_secret_value() == db.url.get_secret_value()
        assert clone._pools is db._pools  # one pool per settings and loop in the process
        assert await clone.afetch_one("SELECT 2") == (2,)
        await clone.aclose()
        assert not pools.primary.closed  # the original still uses it
    other = DatabaseBlock(url=db.url, timeout=db.timeout, max_size=3)
    assert other._pools is not db._pools  # other settings, other pool
    await other.aclose()
    assert await db.afetch_one("SELECT 3") == (3,)
    await db.aclose()  # the last user
    assert pools.primary.closed
    assert await db.afetch_one("SELECT 4") == (4,)  # reopens on next use
    assert db._pools.get() is not pools


async def test_closing_one_instance_never_closes_the_pool_under_another(database_url: str) -> None:
    first = DatabaseBlock(url=SecretStr(database_url), max_size=1)
    second = DatabaseBlock(url=SecretStr(database_url), max_size=1)
    async with first.connection() as conn:
        waiter = asyncio.create_task(second.afetch_one("SELECT 42"))
        await asyncio.sleep(0.2)  # second waits for the only connection
        await DatabaseBlock(url=SecretStr(database_url), max_size=1).aclose()  # a third, never used
        await conn.execute("SELECT 1")
    assert await waiter == (42,)
    await first.aclose()
    assert not second._pools.get().primary.closed  # type: ignore[union-attr]
    await second.aclose()
    assert second._pools.get() is None


async def test_async_context_manager_closes_pools(database_url: str) -> None:
    async with DatabaseBlock(url=SecretStr(database_url)) as db:
        assert await db.afetch_one("SELECT 1") == (1,)
        pools = db._pools.get()
        assert pools is not None
    assert pools.primary.closed
    assert db._pools.get() is None


def test_field_validation_names_the_field() -> None:
    with pytest.raises(ValidationError, match=r"min_size .* must not exceed max_size"):
        DatabaseBlock(min_size=5, max_size=2)
    with pytest.raises(ValidationError, match="url must be a PostgreSQL URL"):
        DatabaseBlock(url=SecretStr("mysql://root:topsecret@h/db"))
    with pytest.raises(ValidationError) as info:
        DatabaseBlock(
            url=SecretStr("postgresql://u:topsecret@h/db"), read_replica_urls=["http://r:pw2@x/y"]
        )
    assert "read_replica_urls[0]" in str(info.value)
    assert "pw2" not in str(info.value)
    with pytest.raises(ValidationError) as info:
        DatabaseBlock(url="mysql://root:topsecret@h/db")
    assert "topsecret" not in str(info.value)
    with pytest.raises(ValidationError, match="max_size"):
        DatabaseBlock(max_size=0)
