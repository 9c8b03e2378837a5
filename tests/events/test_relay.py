"""The relay into Prefect's events, against the session's real Prefect server.

Every assertion reads Prefect's own event store back through its API (``/events/filter``):
the events are there with the Atlas ids, once each, trimmed when too large; a refused event
is parked as the consumer's dead letter; an outage (a real proxy refusing connections) makes
the relay wait, never park.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import PrefectClient, get_client
from prefect.events.filters import EventFilter, EventIDFilter, EventOccurredFilter
from prefect.events.schemas.events import ReceivedEvent
from prefect.settings import PREFECT_API_URL

from prefect_atlas import DatabaseBlock, EventStore, NewEvent
from prefect_atlas.events.relay import (
    CONSUMER,
    SIZE_MARGIN,
    TRIMMED,
    PrefectRelay,
    prefect_event_json,
    to_prefect_event,
)
from prefect_atlas.events.store import StoredEvent
from prefect_atlas.metrics import REGISTRY
from tests._proxy import TcpProxy

FLOW_RUN = uuid.UUID("5d9f4c1e-8a63-4f0b-9e1d-2b7a6c3f8e10")
DEPLOYMENT = uuid.UUID("0c1d2e3f-4a5b-4c6d-8e7f-901a2b3c4d5e")
FLOW_RUN_RESOURCE = {
    "prefect.resource.id": f"prefect.flow-run.{FLOW_RUN}",
    "prefect.resource.role": "flow-run",
}


def _ingest_like(count: int) -> list[NewEvent]:
    """``video.ingested`` events of one flow run (as the ingest flow writes them)."""
    return [
        NewEvent(
            "video.ingested",
            f"vid{i:08d}",
            {
                "channel_id": f"UC{i % 3:022d}",
                "title": f"video {i}",
                "flow_run_id": str(FLOW_RUN),
                "deployment_id": str(DEPLOYMENT),
            },
        )
        for i in range(count)
    ]


async def _read(ids: Sequence[uuid.UUID]) -> list[ReceivedEvent]:
    """Prefect's stored events with these ids (every page), read through its API."""
    found: list[ReceivedEvent] = []
    window = EventOccurredFilter(
        since=datetime.now(UTC) - timedelta(days=30), until=datetime.now(UTC) + timedelta(days=1)
    )
    async with get_client() as api:
        for start in range(0, len(ids), 50):
            chunk = list(ids[start : start + 50])
            page = await api.read_events(
                EventFilter(id=EventIDFilter(id=chunk), occurred=window), limit=50
            )
            found += page.events
    return found


async def _until_stored(ids: Sequence[uuid.UUID]) -> list[ReceivedEvent]:
    async with asyncio.timeout(120):  # a hang guard, not a timing assertion
        while True:
            found = await _read(ids)
            if len(found) == len(ids):
                return found
            await asyncio.sleep(0.2)


async def test_every_event_reaches_prefect_with_its_id_resource_and_related(
    store: EventStore,
) -> None:
    ids = await store.aemit_many(_ingest_like(120))
    completed = await store.aemit(
        "ingest.completed", f"flow-run:{FLOW_RUN}", {"videos": 120, "rejects": 0}
    )
    stats = await PrefectRelay(store, batch_size=50).arun()
    assert (stats.relayed, stats.batches, stats.dead_lettered, stats.caught_up) == (
        121,
        3,
        0,
        True,
    )
    found = {event.id: event for event in await _read([*ids, completed])}
    assert set(found) == {*ids, completed}  # the Prefect id is the Atlas id

    stored = [event async for event in store.replay()]
    first = found[ids[0]]
    assert first.event == "atlas.video.ingested"
    assert dict(first.resource) == {
        "prefect.resource.id": "atlas.entity.vid00000000",
        "prefect.resource.name": "vid00000000",
        "atlas.event-type": "video.ingested",
        "atlas.version": "1",
        "atlas.position": str(stored[0].position),
    }
    assert [dict(r) for r in first.related] == [
        FLOW_RUN_RESOURCE,
        {
            "prefect.resource.id": f"prefect.deployment.{DEPLOYMENT}",
            "prefect.resource.role": "deployment",
        },
        {"prefect.resource.id": f"atlas.channel.UC{0:022d}", "prefect.resource.role": "channel"},
    ]
    assert first.payload == stored[0].payload
    assert first.occurred == stored[0].occurred_at
    last = found[completed]
    assert last.event == "atlas.ingest.completed"
    assert [dict(r) for r in last.related] == [FLOW_RUN_RESOURCE]
    (lag,) = await store.aconsumer_lag(CONSUMER)
    assert (lag.events_behind, lag.processed, lag.position) == (0, 121, stored[-1].position)


async def test_a_second_run_sends_nothing_and_a_resend_stores_nothing_twice(
    store: EventStore,
) -> None:
    ids = await store.aemit_many(_ingest_like(60))
    assert (await PrefectRelay(store, batch_size=20).arun()).relayed == 60
    before = {event.id: event.received for event in await _read(ids)}

    again = await PrefectRelay(store, batch_size=20).arun()
    assert (again.relayed, again.batches, again.requests) == (0, 0, 0)

    # What a crash before the checkpoint's commit does: the same events sent again.
    assert await store.areset_consumer(CONSUMER) == 1
    resent = await PrefectRelay(store, batch_size=20).arun()
    assert (resent.relayed, resent.batches) == (60, 3)
    after = await _read(ids)
    assert len(after) == 60
    # Prefect kept the first copy of each id: the same receive time, nothing stored twice.
    assert {event.id: event.received for event in after} == before


async def test_a_payload_over_prefects_limit_is_trimmed_with_a_marker(db: DatabaseBlock) -> None:
    await db.asetup()
    big_store = EventStore(db, mode="strict", max_payload_bytes=3_000_000)
    blob = "x" * 2_000_000
    big = await big_store.aemit("video.transcribed", "vbig", {"transcript": blob, "lang": "en"})
    fits = await big_store.aemit("video.transcribed", "vfit", {"transcript": "y" * 1_400_000})
    stats = await PrefectRelay(big_store, batch_size=10).arun()
    assert (stats.relayed, stats.dead_lettered) == (2, 0)
    found = {event.id: event for event in await _read([big, fits])}

    trimmed = found[big]
    assert trimmed.payload["lang"] == "en" and "transcript" not in trimmed.payload
    marker = trimmed.payload[TRIMMED]
    assert marker["dropped_keys"] == ["transcript"] and marker["dropped_count"] == 1
    assert marker["original_bytes"] > 2_000_000
    assert trimmed.resource[TRIMMED] == "true"
    assert trimmed.size_bytes <= 1_500_000 - SIZE_MARGIN

    whole = found[fits]  # under the limit: sent as it is
    assert whole.payload == {"transcript": "y" * 1_400_000}
    assert TRIMMED not in whole.resource


def test_trimming_drops_the_largest_values_first_and_caps_related() -> None:
    event = StoredEvent(
        position=7,
        event_id=uuid.uuid4(),
        event_type="video.tagged",
        entity_id="v1",
        version=3,
        payload={"a": "1" * 40_000, "b": "2" * 30_000, "c": "3" * 100, "flow_run_id": "nope"},
        occurred_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        recorded_at=datetime(2026, 1, 2, 3, 4, 6, tzinfo=UTC),
        xid=99,
    )
    body = prefect_event_json(event, max_bytes=SIZE_MARGIN + 35_000, max_related=100)
    assert set(body["payload"]) == {"b", "c", "flow_run_id", TRIMMED}
    assert body["payload"][TRIMMED]["dropped_keys"] == ["a"]
    assert body["related"] == []  # "nope" is no flow run id
    tight = prefect_event_json(event, max_bytes=SIZE_MARGIN + 2_000, max_related=0)
    assert set(tight["payload"]) == {"c", "flow_run_id", TRIMMED}
    assert tight["payload"][TRIMMED]["dropped_keys"] == ["a", "b"]
    model = to_prefect_event(event)  # Prefect's own model accepts the mapping
    assert model.id == event.event_id and model.event == "atlas.video.tagged"
    assert model.occurred == event.occurred_at and model.resource["atlas.version"] == "3"


async def test_an_event_prefect_refuses_is_parked_and_the_others_go_on(store: EventStore) -> None:
    # Atlas accepts a 1,100-character type; Prefect refuses event names over 1,024 with 422.
    good = await store.aemit_many(_ingest_like(10))
    refused = await store.aemit("a" * 1100, "vbad", {"n": 1})
    later = await store.aemit_many(_ingest_like(10))
    stats = await PrefectRelay(store, batch_size=50, max_attempts=2).arun()
    assert (stats.relayed, stats.dead_lettered, stats.caught_up) == (20, 1, True)
    assert {event.id for event in await _read([*good, *later, refused])} == {*good, *later}
    (letter,) = await store.aconsumer_dead_letters(CONSUMER)
    assert letter.event_id == refused and "RelayRefusedError" in letter.error
    assert "422" in letter.error
    (lag,) = await store.aconsumer_lag(CONSUMER)
    assert (lag.events_behind, lag.dead_letters) == (0, 1)
    assert (await PrefectRelay(store).arun()).relayed == 0


async def test_a_prefect_outage_holds_the_relay_and_parks_nothing(store: EventStore) -> None:
    api = str(PREFECT_API_URL.value())
    port = int(api.rsplit(":", 1)[1].split("/", 1)[0])
    proxy = TcpProxy(f"host=127.0.0.1 port={port} dbname=prefect")
    ids = await store.aemit_many(_ingest_like(40))
    retried = REGISTRY.get_sample_value("atlas_relay_retries_total") or 0.0
    try:
        async with PrefectClient(api=f"http://127.0.0.1:{proxy.port}/api") as client:
            proxy.refuse()
            running = asyncio.create_task(PrefectRelay(store, batch_size=15).arun(client=client))
            async with asyncio.timeout(120):  # hang guard: until the relay has retried twice
                while (REGISTRY.get_sample_value("atlas_relay_retries_total") or 0.0) < retried + 2:
                    await asyncio.sleep(0.05)
            assert not running.done()
            (lag,) = await store.aconsumer_lag(CONSUMER)
            assert (lag.events_behind, lag.dead_letters) == (40, 0)  # waiting, nothing parked
            # The relay waits outside its consumer's transaction: the log's commit-safe readers
            # still see what commits meanwhile.
            late = await store.aemit("video.ingested", "vlate", {"n": 41})
            assert late in [event.event_id async for event in store.replay()]
            ids.append(late)
            proxy.heal()
            async with asyncio.timeout(180):
                stats = await running
    finally:
        proxy.close()
    assert (stats.relayed, stats.dead_lettered, stats.batches) == (41, 0, 3)
    assert stats.retries >= 2
    assert len(await _read(ids)) == 41


async def test_a_following_relay_waits_out_a_postgresql_outage(
    store: EventStore, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = TcpProxy(database_url)
    proxied = DatabaseBlock.model_validate({"url": proxy.url, "timeout": 5})
    relay = PrefectRelay(EventStore(proxied, mode="strict"), batch_size=10, poll_interval=0.2)
    stop = asyncio.Event()
    try:
        running = asyncio.create_task(relay.arun(follow=True, stop=stop))
        first = await store.aemit_many(_ingest_like(15))
        await _until_stored(first)
        proxy.refuse()
        during = await store.aemit_many(_ingest_like(12))  # straight to PostgreSQL
        async with asyncio.timeout(120):  # hang guard: until the relay has met the outage
            while "PostgreSQL unavailable" not in caplog.text:
                assert not running.done()
                await asyncio.sleep(0.05)
        proxy.heal()
        await _until_stored(during)
        stop.set()
        async with asyncio.timeout(60):
            stats = await running
    finally:
        stop.set()
        proxy.close()
        await proxied.aclose()
    assert (stats.relayed, stats.dead_lettered) == (27, 0)
    (lag,) = await store.aconsumer_lag(CONSUMER)
    assert (lag.events_behind, lag.processed, lag.dead_letters) == (0, 27, 0)


async def test_follow_relays_events_as_they_commit_until_stopped(store: EventStore) -> None:
    stop = asyncio.Event()
    running = asyncio.create_task(
        PrefectRelay(store, batch_size=25, poll_interval=3600).arun(follow=True, stop=stop)
    )
    first = await store.aemit_many(_ingest_like(30))
    await _until_stored(first)  # woken by NOTIFY: the poll interval is an hour
    second = await store.aemit_many(_ingest_like(5))
    await _until_stored(second)
    stop.set()
    async with asyncio.timeout(60):
        stats = await running
    assert (stats.relayed, stats.dead_lettered, stats.caught_up) == (35, 0, True)


async def test_the_relay_flow_catches_up_and_reports(store: EventStore, db: DatabaseBlock) -> None:
    from prefect_atlas.flows.relay import relay_events

    await db.asave("relay-flow-test", overwrite=True)
    ids = await store.aemit_many(_ingest_like(12))
    result = await relay_events(database="relay-flow-test", batch_size=5)
    assert result == {"relayed": 12, "batches": 3, "dead_lettered": 0}
    assert len(await _read(ids)) == 12


def _cli_env() -> dict[str, str]:
    return {
        **os.environ,
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH")) if p
        ),
    }


async def test_cli_once_catches_up_and_exits(store: EventStore, database_url: str) -> None:
    ids = await store.aemit_many(_ingest_like(45))
    command = [sys.executable, "-m", "prefect_atlas", "events", "relay", "--once"]
    done = await asyncio.to_thread(
        subprocess.run,
        [*command, "--batch-size", "20", "--url", database_url],
        capture_output=True,
        text=True,
        timeout=180,
        env=_cli_env(),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "relayed 45 event(s) in 3 batch(es)" in done.stdout
    assert len(await _read(ids)) == 45


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_cli_follows_until_a_signal_and_stops_gracefully(
    store: EventStore, database_url: str, tmp_path: Path, signum: signal.Signals
) -> None:
    log = tmp_path / "relay.log"
    with log.open("wb") as out:
        child = subprocess.Popen(
            [sys.executable, "-m", "prefect_atlas", "events", "relay", "--url", database_url],
            env=_cli_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        async with asyncio.timeout(120):
            while "relaying to Prefect" not in log.read_text():
                assert child.poll() is None, log.read_text()
                await asyncio.sleep(0.1)
        ids = await store.aemit_many(_ingest_like(6))
        await _until_stored(ids)
        child.send_signal(signum)
        code = await asyncio.to_thread(child.wait, 60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    output: Any = log.read_text()
    assert code == 0, output
    assert "relayed 6 event(s) in 1 batch(es)" in output
    (lag,) = await store.aconsumer_lag(CONSUMER)
    assert (lag.events_behind, lag.processed) == (0, 6)


def test_the_sync_face_relays_from_sync_code(database_url: str) -> None:
    db = DatabaseBlock.model_validate({"url": database_url})
    db.setup()
    store = EventStore(db, mode="strict")
    try:
        ids = store.emit_many(_ingest_like(3))
        stats = PrefectRelay(store).run()
        assert (stats.relayed, stats.batches, stats.caught_up) == (3, 1, True)
        assert len(asyncio.run(_read(ids))) == 3
    finally:
        db.close()
        store.close()
