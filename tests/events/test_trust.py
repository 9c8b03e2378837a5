"""The event log's promises under real faults: poison events, outages with no further emit,
silent partitions, and a breaker shared by every store of the process.

Faults are injected for real: a loopback TCP proxy (tests/_proxy.py) in front of PostgreSQL
refuses connections or black-holes traffic; a child process spools and exits.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from prefect import flow
from pydantic import SecretStr

from prefect_atlas import DatabaseBlock, EventStore
from prefect_atlas.events.spool import Spool
from prefect_atlas.events.validation import PreparedEvent
from prefect_atlas.tasks import emit_event
from tests._proxy import TcpProxy
from tests.discord._server import DiscordServer


@pytest.fixture
def proxy(database_url: str) -> Iterator[TcpProxy]:
    server = TcpProxy(database_url)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
async def proxied(proxy: TcpProxy, database_url: str) -> AsyncIterator[DatabaseBlock]:
    direct = DatabaseBlock(url=SecretStr(database_url))
    await direct.asetup()
    await direct.aclose()
    block = DatabaseBlock(url=SecretStr(proxy.url), timeout=3)
    try:
        yield block
    finally:
        await block.aclose()


def _count(database_url: str, sql: str = "SELECT count(*) FROM atlas.events") -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(sql).fetchone()
    return int(row[0]) if row else 0


async def _wait_for(database_url: str, expected: int, seconds: float) -> float:
    """Seconds until the log holds ``expected`` events (read directly, not through the proxy)."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if await asyncio.to_thread(_count, database_url) >= expected:
            return time.monotonic() - started
        await asyncio.sleep(0.2)
    raise AssertionError(
        f"{await asyncio.to_thread(_count, database_url)} events stored, expected {expected}"
    )


def _poison(
    event_type: str = "video.ingested\n", occurred_at: datetime | None = None
) -> PreparedEvent:
    """An event as an older version let it into the spool: the server refuses it."""
    return PreparedEvent(
        uuid.uuid4(), event_type, "poisoned", b'{"bad": true}', occurred_at or datetime.now(UTC)
    )


async def test_poison_event_among_20_good_ones_is_dead_lettered(
    proxy: TcpProxy, proxied: DatabaseBlock, database_url: str, tmp_path: Path
) -> None:
    spool_path = tmp_path / "spool.sqlite"
    store = EventStore(
        proxied, spool_path=str(spool_path), connect_timeout=1, background_drain=False
    )
    proxy.refuse()
    good = [await store.aemit("video.seen", f"v{i % 3}", {"i": i}) for i in range(10)]
    spool = Spool(spool_path)
    poison = _poison()
    naive = _poison("video.seen", datetime(2024, 1, 1))  # naive: the old no-offset bug
    spool.add([poison, naive])
    spool.close()
    good += [await store.aemit("video.seen", f"v{i % 3}", {"i": i}) for i in range(10, 20)]
    assert store.spool_size() == 22
    proxy.heal()
    assert await store.adrain() == 20
    assert store.spool_size() == 0
    assert _count(database_url) == 20
    letters = await store.adead_letters()
    assert {letter.event_id for letter in letters} == {poison.event_id, naive.event_id}
    by_id = {letter.event_id: letter for letter in letters}
    assert by_id[poison.event_id].sqlstate == "23514"  # the CHECK on event_type
    assert "events_event_type_check" in by_id[poison.event_id].reason
    assert by_id[poison.event_id].event_type == "video.ingested\n"
    assert by_id[naive.event_id].sqlstate == "client"
    # later emits are unaffected, and the versions of the good events are 1..n per entity
    await store.aemit("video.seen", "v0", {"after": True})
    rows = await proxied.afetch_all("SELECT event_id, entity_id, version FROM atlas.events")
    assert {r[0] for r in rows} >= set(good)
    for entity in ("v0", "v1", "v2"):
        versions = sorted(r[2] for r in rows if r[1] == entity)
        assert versions == list(range(1, len(versions) + 1))
    health = await store.ahealth(timeout=3)
    assert health.dead_letters == 2
    # a dead letter can be discarded; one refused again stays with its attempts counted
    assert await store.adiscard_dead_letter(naive.event_id) is True
    assert await store.adiscard_dead_letter(naive.event_id) is False
    from prefect_atlas.events.store import DeadLetterError

    with pytest.raises(DeadLetterError, match=r"refused event .* again"):
        await store.aretry_dead_letter(poison.event_id)
    [again] = await store.adead_letters()
    assert again.attempts == 2


async def test_retrying_a_fixed_dead_letter_stores_it_once(
    proxied: DatabaseBlock, tmp_path: Path
) -> None:
    store = EventStore(proxied, spool_path=str(tmp_path / "spool.sqlite"), background_drain=False)
    # refused because the entity's table constraint is stricter than the event (a later fix
    # relaxes it): a drain parks it, a retry after the fix stores it
    await proxied.aexecute(
        "ALTER TABLE atlas.events ADD CONSTRAINT no_tmp CHECK (entity_id <> 'tmp')"
    )
    spool = Spool(Path(store.spool_path))
    event = PreparedEvent(uuid.uuid4(), "video.seen", "tmp", b"{}", datetime.now(UTC))
    spool.add([event])
    spool.close()
    assert await store.adrain() == 0
    assert [d.event_id for d in await store.adead_letters()] == [event.event_id]
    await proxied.aexecute("ALTER TABLE atlas.events DROP CONSTRAINT no_tmp")
    assert await store.aretry_dead_letter(event.event_id) == event.event_id
    assert await store.adead_letters() == []
    assert await proxied.afetch_all("SELECT event_id FROM atlas.events") == [(event.event_id,)]


CHILD_SPOOLS = """
import asyncio, sys, uuid
from datetime import UTC, datetime
from pydantic import SecretStr
from prefect_atlas import DatabaseBlock, EventStore
from prefect_atlas.events.validation import PreparedEvent

async def main():
    db = DatabaseBlock(url=SecretStr(sys.argv[1]), timeout=2)
    store = EventStore(db, spool_path=sys.argv[2], connect_timeout=1)
    for i in range(10):
        await store.aemit("video.seen", f"c{i % 2}", {"i": i})
    poison = PreparedEvent(uuid.uuid4(), "video.ingested\\n", "x", b"{}", datetime.now(UTC))
    store._rt().spool().add([poison])
    for i in range(10, 20):
        await store.aemit("video.seen", f"c{i % 2}", {"i": i})
    assert store.spool_size() == 21, store.spool_size()
    print("spooled", flush=True)

asyncio.run(main())
"""


async def test_poison_spooled_by_another_process_never_blocks_this_one(
    proxy: TcpProxy, proxied: DatabaseBlock, database_url: str, tmp_path: Path
) -> None:
    spool_path = tmp_path / "shared-spool.sqlite"
    proxy.refuse()
    child = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", CHILD_SPOOLS, proxy.url, str(spool_path)],
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 0, child.stderr[-2000:]
    proxy.heal()
    store = EventStore(proxied, spool_path=str(spool_path))
    # the next emit of this process goes behind the spooled ones; the drainer stores all
    await store.aemit("video.seen", "c0", {"here": True})
    await _wait_for(database_url, 21, 30)
    assert _count(database_url, "SELECT count(*) FROM atlas.dead_events") == 1
    assert store.spool_size() == 0


async def test_outage_then_recovery_drains_without_another_emit(
    proxy: TcpProxy, proxied: DatabaseBlock, database_url: str, tmp_path: Path
) -> None:
    store = EventStore(proxied, spool_path=str(tmp_path / "spool.sqlite"), connect_timeout=1)
    proxy.refuse()
    for i in range(30):
        await store.aemit("video.seen", f"v{i % 4}", {"i": i})
    assert store.spool_size() == 30
    await asyncio.sleep(3)  # the drainer keeps failing meanwhile
    assert _count(database_url) == 0
    proxy.heal()
    took = await _wait_for(database_url, 30, 15)
    assert took < 15
    assert store.spool_size() == 0
    assert _count(database_url, "SELECT count(DISTINCT event_id) FROM atlas.events") == 30


async def test_blackholed_emit_returns_within_emit_timeout_and_arrives_after_healing(
    proxy: TcpProxy, proxied: DatabaseBlock, database_url: str, tmp_path: Path
) -> None:
    store = EventStore(proxied, spool_path=str(tmp_path / "spool.sqlite"), emit_timeout=2.0)
    strict = EventStore(
        proxied, spool_path=str(tmp_path / "strict.sqlite"), emit_timeout=2.0, mode="strict"
    )
    await store.aemit("video.seen", "v", {"warm": True})  # a pooled connection exists
    proxy.blackhole()
    started = time.monotonic()
    event_id = await store.aemit("video.seen", "v", {"during": "partition"})
    took = time.monotonic() - started
    assert took < 2.0 + 1.0, took
    assert store.spool_size() == 1
    from prefect_atlas import DatabaseConnectionError

    started = time.monotonic()
    with pytest.raises(DatabaseConnectionError, match="within 2 s"):
        await strict.aemit("video.seen", "v", {"strict": True})
    assert time.monotonic() - started < 2.0 + 1.0
    proxy.heal()
    await _wait_for(database_url, 2, 30)
    assert (
        _count(database_url, f"SELECT count(*) FROM atlas.events WHERE event_id = '{event_id}'")
        == 1
    )


async def test_breaker_is_shared_by_the_task_calls_of_a_process(
    proxy: TcpProxy, proxied: DatabaseBlock, database_url: str
) -> None:
    """20 ``emit_event`` task calls during a silent partition take about one emit_timeout (the
    breaker and the spool are the process's, not each call's), not 20 x emit_timeout."""

    @flow
    async def twenty() -> float:
        await emit_event("video.seen", "warm", {}, database=proxied)
        proxy.blackhole()
        started = time.monotonic()
        for i in range(20):
            await emit_event("video.seen", f"v{i}", {"i": i}, database=proxied)
        return time.monotonic() - started

    took = await twenty()
    # 3 (failure_threshold) x 5 s (emit_timeout) is the ceiling; 20 x 5 s = 100 s without it
    assert took < 3 * 5.0 + 10, took
    proxy.heal()
    await _wait_for(database_url, 21, 30)


CHILD_SPOOLS_TO_VAULT = """
import asyncio, sys
from pydantic import SecretStr
from prefect_atlas import DatabaseBlock, EventStore, VaultBlock

async def main():
    vault = VaultBlock(provider="local", root=sys.argv[2])
    db = DatabaseBlock(url=SecretStr(sys.argv[1]), timeout=2)
    # a store without the vault spools first (it starts the drainer): the vault still counts
    await EventStore(db, connect_timeout=1).aemit("video.seen", "k0", {"i": -1})
    store = EventStore(db, connect_timeout=1, spool_vault=vault)
    for start in range(0, 299, 23):
        await store.aemit_many(
            [
                {"event_type": "video.seen", "entity_id": f"k{i % 7}", "payload": {"i": i}}
                for i in range(start, min(start + 23, 299))
            ]
        )
    assert store.spool_size() == 300, store.spool_size()
    print(store.spool_path, flush=True)

asyncio.run(main())
"""


async def test_spool_survives_a_lost_worker_through_the_vault(
    proxy: TcpProxy, proxied: DatabaseBlock, database_url: str, tmp_path: Path
) -> None:
    """A worker spools 300 events with PostgreSQL down and exits; its ATLAS_HOME is deleted
    (the pod is gone); another process with the same vault stores exactly the 300."""
    import shutil

    from prefect_atlas import VaultBlock
    from prefect_atlas.events import segments

    child_home = tmp_path / "worker-home"
    vault_root = tmp_path / "vault"
    proxy.refuse()
    child = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", CHILD_SPOOLS_TO_VAULT, proxy.url, str(vault_root)],
        env={**os.environ, "ATLAS_HOME": str(child_home)},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    assert "shipped to the vault" in child.stderr
    spool_file = Path(child.stdout.strip())
    assert spool_file.is_relative_to(child_home)
    shutil.rmtree(child_home)  # the worker's disk is gone
    vault = VaultBlock(provider="local", root=str(vault_root))
    stored_segments = await vault.alist_objects(segments.PREFIX)
    assert stored_segments  # one segment (300 < 10,000 events per segment)
    proxy.heal()
    store = EventStore(proxied, spool_path=str(tmp_path / "other.sqlite"), spool_vault=vault)
    assert await store.adrain() == 300
    assert await store.adrain() == 0  # claimed once
    assert _count(database_url, "SELECT count(*) FROM atlas.events") == 300
    assert _count(database_url, "SELECT count(DISTINCT event_id) FROM atlas.events") == 300
    assert await vault.alist_objects(segments.PREFIX) == []
    gaps = _count(
        database_url,
        "SELECT count(*) FROM (SELECT entity_id FROM atlas.events GROUP BY 1 HAVING max(version) "
        "<> count(*)) g",
    )
    assert gaps == 0


async def test_a_corrupt_segment_is_never_stored_and_stays_for_inspection(
    proxied: DatabaseBlock, database_url: str, tmp_path: Path
) -> None:
    from prefect_atlas import VaultBlock
    from prefect_atlas.events import segments

    vault = VaultBlock(provider="local", root=str(tmp_path / "vault"))
    store = EventStore(proxied, spool_path=str(tmp_path / "s.sqlite"), spool_vault=vault)
    good = segments.encode(
        [PreparedEvent(uuid.uuid4(), "video.seen", "a", b"{}", datetime.now(UTC))]
    )
    bad = good.replace(b'"a"', b'"b"')  # changed after it was written
    await vault.astore_bytes(segments.new_path(store._target_digest()), bad)
    assert await store.adrain() == 0
    assert _count(database_url) == 0
    assert len(await vault.alist_objects(segments.PREFIX)) == 1


async def test_drain_flow_and_cli_bring_vault_segments_home(
    proxied: DatabaseBlock, database_url: str, tmp_path: Path
) -> None:
    """The scheduled ``drain-events`` flow and ``events drain --vault NAME`` store what a lost
    worker shipped; the flow fails while dead letters wait."""
    from prefect_atlas import VaultBlock
    from prefect_atlas.events import segments
    from prefect_atlas.flows import drain_events

    vault = VaultBlock(provider="local", root=str(tmp_path / "vault"))
    await vault.asave("drain-test", overwrite=True)
    direct = DatabaseBlock(url=SecretStr(database_url))
    await direct.asave("drain-test", overwrite=True)
    digest = EventStore(direct)._target_digest()
    events = [
        PreparedEvent(uuid.uuid4(), "video.seen", f"d{i % 3}", b'{"n": 1}', datetime.now(UTC))
        for i in range(25)
    ]
    await vault.astore_bytes(segments.new_path(digest), segments.encode(events[:20]))
    result = await drain_events(database="drain-test", vault="drain-test")
    assert result == {"stored": 20, "dead_letters": 0}
    await vault.astore_bytes(segments.new_path(digest), segments.encode([*events[20:], _poison()]))
    from prefect.settings import PREFECT_API_URL

    env = {
        **os.environ,
        "ATLAS_HOME": str(tmp_path / "cli-home"),
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
    }
    out = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "prefect_atlas",
            "events",
            "drain",
            "--block",
            "drain-test",
            "--vault",
            "drain-test",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.stdout.startswith("drained 5 event(s)"), out.stdout + out.stderr
    assert out.returncode == 1 and "1 dead letter(s)" in out.stderr
    assert _count(database_url) == 25
    state = await drain_events(database="drain-test", vault="drain-test", return_state=True)
    assert state.is_failed() and "dead letter" in str(state.message)
    await direct.aclose()


async def test_unusable_atlas_home_never_breaks_emits_that_reach_postgresql(
    proxy: TcpProxy,
    proxied: DatabaseBlock,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home = tmp_path / "home-is-a-file"
    home.write_text("not a folder")
    monkeypatch.setenv("ATLAS_HOME", str(home))
    store = EventStore(proxied, connect_timeout=1)
    await store.aemit("video.seen", "v", {"ok": True})
    assert store.spool_size() == 0
    assert _count(database_url) == 1
    proxy.refuse()
    from prefect_atlas import DatabaseConnectionError

    with pytest.raises(
        DatabaseConnectionError, match=r"local spool .* cannot be written .* ATLAS_HOME"
    ):
        await store.aemit("video.seen", "v", {"lost": "no: refused loudly"})


async def test_new_dead_letters_raise_one_ops_alert(
    proxied: DatabaseBlock, tmp_path: Path, discord_server: DiscordServer
) -> None:
    from prefect_atlas import DiscordBlock

    hook = discord_server.add_webhook()
    alerts = DiscordBlock(allowed_hosts=["127.0.0.1"], ops=SecretStr(discord_server.url(hook)))
    store = EventStore(
        proxied, spool_path=str(tmp_path / "s.sqlite"), background_drain=False, alerts=alerts
    )
    spool = Spool(Path(store.spool_path))
    spool.add(
        [
            _poison(),
            _poison(),
            PreparedEvent(uuid.uuid4(), "video.seen", "ok", b"{}", datetime.now(UTC)),
        ]
    )
    spool.close()
    assert await store.adrain() == 1
    assert len(hook.received) == 1  # one alert for the pass, not one per event
    embed = hook.received[0]["embeds"][0]
    assert "2 event(s) refused by PostgreSQL" in embed["title"]
    assert "dead-letters list" in str(embed)
    assert await store.adrain() == 0
    assert len(hook.received) == 1  # nothing new, no new alert
    await alerts.aclose()


async def test_a_drain_that_fails_with_postgresql_up_never_holds_back_later_emits(
    proxied: DatabaseBlock, database_url: str, tmp_path: Path
) -> None:
    """A poison event cannot be parked (the dead-letter table is missing: setup not re-run
    after an upgrade): emits must still reach PostgreSQL, and once the table is back the
    drainer parks the poison and stores what waited behind it."""
    from importlib import resources

    store = EventStore(proxied, spool_path=str(tmp_path / "s.sqlite"))
    spool = Spool(Path(store.spool_path))
    spool.add([_poison()])
    spool.close()
    await proxied.aexecute("DROP TABLE atlas.dead_events")
    first = await store.aemit(
        "video.seen", "v", {"n": 0}
    )  # queued behind the spool: not known stuck yet
    deadline = time.monotonic() + 20
    while store._rt().stuck is None and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    stuck = store._rt().stuck
    assert stuck is not None and "dead_events" in stuck
    later = [await store.aemit("video.seen", "v", {"n": n}) for n in range(1, 6)]
    stored = {r[0] for r in await proxied.afetch_all("SELECT event_id FROM atlas.events")}
    assert set(later) <= stored  # straight to PostgreSQL while the drain is stuck
    ddl = resources.files("prefect_atlas.database.sql").joinpath("0005_dead_events.sql").read_text()
    await proxied.aexecute(ddl.encode())
    await _wait_for(database_url, 6, 30)
    assert first in {r[0] for r in await proxied.afetch_all("SELECT event_id FROM atlas.events")}
    assert _count(database_url, "SELECT count(*) FROM atlas.dead_events") == 1
    assert store.spool_size() == 0


async def test_a_cancelled_half_open_probe_does_not_hold_the_shared_breaker(
    proxy: TcpProxy, proxied: DatabaseBlock, tmp_path: Path
) -> None:
    from prefect_atlas import DatabaseConnectionError

    strict = EventStore(
        proxied,
        spool_path=str(tmp_path / "s.sqlite"),
        mode="strict",
        failure_threshold=1,
        reset_timeout=0.5,
        emit_timeout=5.0,
    )
    await strict.aemit("video.seen", "v", {})
    proxy.blackhole()
    with pytest.raises(DatabaseConnectionError):
        await strict.aemit("video.seen", "v", {})  # times out: the breaker opens
    await asyncio.sleep(0.6)  # half-open: the next emit is the probe
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(strict.aemit("video.seen", "v", {}), 0.5)  # the caller gives up
    proxy.heal()
    await asyncio.sleep(0.6)
    fresh = EventStore(proxied, spool_path=str(tmp_path / "s.sqlite"), mode="strict")
    assert fresh.breaker is strict.breaker
    await fresh.aemit("video.seen", "v", {"after": True})  # the breaker lets a probe through again
