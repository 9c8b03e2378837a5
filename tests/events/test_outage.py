"""PostgreSQL stopped mid-flow: nothing lost, nothing stored twice, the flow completes."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prefect import flow
from pydantic import SecretStr

from prefect_atlas import DatabaseBlock, DatabaseConnectionError, EventStore
from prefect_atlas.metrics import REGISTRY
from tests._pg import PrivateServer, create_database, drop_database


@pytest.fixture
async def private_db(private_pg: PrivateServer) -> AsyncIterator[DatabaseBlock]:
    url = create_database(private_pg.admin_url)
    block = DatabaseBlock(url=SecretStr(url), timeout=10)
    await block.asetup()
    try:
        yield block
    finally:
        await block.aclose()
        private_pg.start()
        drop_database(private_pg.admin_url, url)


def _store(db: DatabaseBlock, tmp_path: Path, **kwargs: object) -> EventStore:
    return EventStore(
        db,
        spool_path=str(tmp_path / "spool.sqlite"),
        connect_timeout=1.0,
        failure_threshold=2,
        reset_timeout=0.5,
        **kwargs,  # type: ignore[arg-type]
    )


async def test_outage_spools_then_drains_exactly_once(
    private_pg: PrivateServer, private_db: DatabaseBlock, tmp_path: Path
) -> None:
    store = _store(private_db, tmp_path)
    strict = _store(private_db, tmp_path / "strict", mode="strict")
    ids = [await store.aemit("probe.ok", f"e{i % 2}", {"i": i}) for i in range(3)]
    private_pg.stop()
    try:
        async with asyncio.timeout(60):
            ids += [await store.aemit("probe.down", f"e{i % 2}", {"i": i}) for i in range(3, 23)]
        assert store.spool_size() == 20
        assert (await store.ahealth(timeout=1)).spool_size == 20
        with pytest.raises(DatabaseConnectionError, match="event not stored"):
            await strict.aemit("probe.down", "e0", {})
        assert strict.spool_size() == 0
        with pytest.raises(DatabaseConnectionError, match="expected_version"):
            await store.aemit("probe.down", "e0", {}, expected_version=5)
    finally:
        private_pg.start()
    await asyncio.sleep(0.6)  # the breaker's cool-down
    async with asyncio.timeout(60):
        while store.spool_size():
            ids.append(await store.aemit("probe.back", "e0", {"i": len(ids)}))
            await asyncio.sleep(0.2)
    rows = await private_db.afetch_all("SELECT event_id, entity_id, version FROM atlas.events")
    assert sorted(r[0] for r in rows) == sorted(ids)
    for entity in ("e0", "e1"):
        versions = sorted(r[2] for r in rows if r[1] == entity)
        assert versions == list(range(1, len(versions) + 1))
    store.close()
    strict.close()


def _spooled() -> float:
    return REGISTRY.get_sample_value("atlas_events_spooled_total") or 0.0


async def test_flow_with_10000_events_survives_a_5s_outage(
    private_pg: PrivateServer, private_db: DatabaseBlock, tmp_path: Path
) -> None:
    store = _store(private_db, tmp_path)
    reached = threading.Event()
    spooled_before = _spooled()

    def outage() -> None:
        reached.wait(120)
        private_pg.stop()
        time.sleep(5)
        private_pg.start()

    stopper = threading.Thread(target=outage)
    stopper.start()

    @flow(name="r1-outage")
    async def emit_all() -> list[str]:
        ids = []
        for i in range(10_000):
            if i == 1_000:
                reached.set()
            ids.append(str(await store.aemit("video.seen", f"v{i % 50}", {"i": i})))
            if i % 100 == 0:
                await asyncio.sleep(0.01)  # spread the run over the outage
        return ids

    try:
        state = await asyncio.wait_for(emit_all(return_state=True), 240)
    finally:
        reached.set()
        stopper.join()
    assert state.is_completed()
    ids = await state.aresult()
    assert _spooled() > spooled_before  # the outage really hit the flow
    async with asyncio.timeout(60):
        while True:
            try:
                await store.adrain()
                break
            except DatabaseConnectionError:
                await asyncio.sleep(0.5)
    assert store.spool_size() == 0
    count, distinct = await private_db.afetch_one(
        "SELECT count(*), count(DISTINCT event_id) FROM atlas.events"
    ) or (0, 0)
    assert (count, distinct) == (10_000, 10_000)
    stored = {str(r[0]) for r in await private_db.afetch_all("SELECT event_id FROM atlas.events")}
    assert stored == set(ids)
    store.close()
