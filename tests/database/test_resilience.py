"""Failures a production pool meets: restarts, wrong targets, hung servers, replicas."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
from pydantic import SecretStr

from prefect_atlas import DatabaseBlock, DatabaseConnectionError
from tests._pg import PrivateServer, create_database, drop_database


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP listener on 127.0.0.1 that accepts connections and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        yield int(listener.getsockname()[1])
    finally:
        listener.close()


async def test_query_succeeds_after_server_restart(private_pg: PrivateServer) -> None:
    db = DatabaseBlock(url=SecretStr(private_pg.url()), timeout=5, min_size=2)
    try:
        assert await db.afetch_one("SELECT 1") == (1,)
        await asyncio.to_thread(private_pg.stop)
        with pytest.raises((DatabaseConnectionError, psycopg.OperationalError)):
            await db.afetch_one("SELECT 3")  # another statement: "SELECT 1" is used up
        await asyncio.to_thread(private_pg.start)
        # No user action: the pool notices the dead connections and reconnects.
        assert await asyncio.wait_for(db.afetch_one("SELECT 2"), timeout=5) == (2,)
        report = await db.ahealth()
        assert report.ok, report.reason
    finally:
        await db.aclose()


async def test_wrong_port_is_a_clear_error_naming_host_and_database() -> None:
    port = _closed_port()
    db = DatabaseBlock(
        url=SecretStr(f"postgresql://atlas:hunter2@127.0.0.1:{port}/hot_index"), timeout=3
    )
    with pytest.raises(DatabaseConnectionError) as info:
        await asyncio.wait_for(db.afetch_one("SELECT 1"), timeout=15)
    message = str(info.value)
    assert (
        "host=127.0.0.1" in message and f"port={port}" in message and "dbname=hot_index" in message
    )
    assert "hunter2" not in message
    report = await db.ahealth(timeout=3)
    assert not report.ok and "hunter2" not in (report.reason or "")


async def test_wrong_host_is_a_clear_error() -> None:
    db = DatabaseBlock(
        url=SecretStr("postgresql://atlas:hunter2@no-such-host.invalid/hot_index"), timeout=3
    )
    with pytest.raises(
        DatabaseConnectionError, match=r"host=no-such-host\.invalid .*dbname=hot_index"
    ):
        await asyncio.wait_for(db.afetch_one("SELECT 1"), timeout=15)


async def test_hung_server_fails_within_timeout_not_a_hang(silent_server: int) -> None:
    db = DatabaseBlock(
        url=SecretStr(f"postgresql://atlas:pw@127.0.0.1:{silent_server}/x"), timeout=2
    )
    # wait_for is a guard against a hang, not a speed assertion: `timeout` is 2 s.
    with pytest.raises(DatabaseConnectionError, match=f"port={silent_server}"):
        await asyncio.wait_for(db.afetch_one("SELECT 1"), timeout=20)
    report = await asyncio.wait_for(db.ahealth(timeout=2), timeout=20)
    assert not report.ok


@pytest.fixture
async def replica_urls(pg_admin_url: str) -> AsyncIterator[list[str]]:
    """Two extra databases standing in for replicas; each knows its own name."""
    urls = [create_database(pg_admin_url, prefix="atlas_replica") for _ in range(2)]
    try:
        yield urls
    finally:
        for url in urls:
            drop_database(pg_admin_url, url)


async def _current_db(db: DatabaseBlock, readonly: bool) -> str:
    async with db.connection(readonly=readonly) as conn:
        cur = await conn.execute("SELECT current_database()")
        row = await cur.fetchone()
        assert row is not None
        return str(row[0])


async def test_readonly_routes_round_robin_to_replicas(
    database_url: str, replica_urls: list[str]
) -> None:
    names = [psycopg.conninfo.conninfo_to_dict(u)["dbname"] for u in replica_urls]
    primary = psycopg.conninfo.conninfo_to_dict(database_url)["dbname"]
    async with DatabaseBlock(
        url=SecretStr(database_url), read_replica_urls=[SecretStr(u) for u in replica_urls]
    ) as db:
        seen = [await _current_db(db, readonly=True) for _ in range(4)]
        assert seen == [names[0], names[1], names[0], names[1]]
        assert await _current_db(db, readonly=False) == primary


async def test_readonly_falls_back_to_primary_when_replicas_are_down(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    dead = [f"postgresql://ro:replica-pw@127.0.0.1:{_closed_port()}/replica" for _ in range(2)]
    primary = psycopg.conninfo.conninfo_to_dict(database_url)["dbname"]
    async with DatabaseBlock(
        url=SecretStr(database_url),
        read_replica_urls=[SecretStr(u) for u in dead],
        replica_timeout=0.5,
    ) as db:
        assert await _current_db(db, readonly=True) == primary
        # the dead replicas are now skipped without waiting
        assert await _current_db(db, readonly=True) == primary
    assert any("read replica" in r.getMessage() for r in caplog.records)
    assert all("replica-pw" not in r.getMessage() for r in caplog.records)


async def test_readonly_on_the_primary_refuses_writes(db: DatabaseBlock) -> None:
    await db.aexecute("CREATE TABLE ro (v int)")
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        async with db.connection(readonly=True) as conn:
            await conn.execute("INSERT INTO ro VALUES (1)")
    # and the connection went back to the pool writable
    await db.aexecute("INSERT INTO ro VALUES (2)")
    assert await db.afetch_all("SELECT v FROM ro") == [(2,)]


@pytest.mark.parametrize("bypass", [0.0, 60.0])
async def test_a_read_only_checkout_leaves_the_connection_writable(
    database_url: str, bypass: float
) -> None:
    async with DatabaseBlock(
        url=SecretStr(database_url), max_size=1, check_bypass_seconds=bypass
    ) as db:
        await db.aexecute("CREATE TABLE ro_one (v int)")
        async with db.connection(readonly=True) as conn:
            first = conn
            assert conn.read_only is True
            assert await (await conn.execute("SHOW transaction_read_only")).fetchone() == ("on",)
        async with db.connection() as conn:
            assert conn is first  # the pool's only connection
            assert not conn.read_only
            await conn.execute("INSERT INTO ro_one VALUES (1)")
        assert await db.afetch_all("SELECT v FROM ro_one") == [(1,)]


async def test_unknown_database_or_role_is_a_configuration_error_not_retried(
    pg_admin_url: str,
) -> None:
    from prefect_atlas import DatabaseConfigurationError
    from prefect_atlas.resilience import is_transient

    missing_db = psycopg.conninfo.make_conninfo(pg_admin_url, dbname="atlas_no_such_database")
    db = DatabaseBlock(url=SecretStr(missing_db), timeout=5)
    with pytest.raises(
        DatabaseConfigurationError, match=r"dbname=atlas_no_such_database.*create the database"
    ) as info:
        await db.afetch_one("SELECT 1")
    assert not is_transient(info.value)
    missing_role = psycopg.conninfo.make_conninfo(pg_admin_url, user="atlas_no_such_role")
    with pytest.raises(DatabaseConfigurationError, match="role does not exist"):
        await DatabaseBlock(url=SecretStr(missing_role), timeout=5).afetch_one("SELECT 1")
    # an outage stays transient
    outage = DatabaseConnectionError("refused", target="x")
    assert is_transient(outage)


async def _terminate_backend_after_use(db: DatabaseBlock, admin_url: str) -> None:
    row = await db.afetch_one("SELECT pg_backend_pid()")
    assert row is not None
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [row[0]])


async def test_liveness_check_replaces_a_dead_idle_connection(
    database_url: str, pg_admin_url: str
) -> None:
    async with DatabaseBlock(url=SecretStr(database_url), check_bypass_seconds=0) as db:
        await _terminate_backend_after_use(db, pg_admin_url)
        assert await db.afetch_one("SELECT 1") == (1,)  # checked, found dead, replaced


async def test_check_is_bypassed_only_for_just_returned_connections(
    database_url: str, pg_admin_url: str
) -> None:
    async with DatabaseBlock(url=SecretStr(database_url), check_bypass_seconds=60) as db:
        await _terminate_backend_after_use(db, pg_admin_url)
        # inside the window the connection is handed out unchecked: the query meets the death
        with pytest.raises(psycopg.OperationalError):
            await db.afetch_one("SELECT 1")
        # ...and the pool discarded it: the next query gets a fresh connection
        assert await db.afetch_one("SELECT 2") == (2,)


def test_tcp_keepalives_and_user_timeout_bound_a_silent_partition_at_the_socket() -> None:
    from psycopg.conninfo import conninfo_to_dict

    db = DatabaseBlock(url=SecretStr("postgresql://u:p@db.example:5432/atlas"))
    params = conninfo_to_dict(db._conninfo("postgresql://u:p@db.example:5432/atlas"))
    assert params["keepalives"] == "1" and params["tcp_user_timeout"] == "60000"
    assert params["keepalives_idle"] == "30" and params["keepalives_count"] == "3"
    # a URL that sets them wins
    own = conninfo_to_dict(db._conninfo("postgresql://u:p@db.example/atlas?tcp_user_timeout=5000"))
    assert own["tcp_user_timeout"] == "5000"
