"""EventStore against a real PostgreSQL: ids, versions, idempotency, batches, replay."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from prefect_atlas import DatabaseBlock
from prefect_atlas.events import ConcurrencyError, EventStore, NewEvent, StoredEvent


async def _all(store: EventStore, **filters: object) -> list[StoredEvent]:
    return [e async for e in store.replay(**filters)]  # type: ignore[arg-type]


async def test_emit_returns_id_and_assigns_versions(store: EventStore, db: DatabaseBlock) -> None:
    first = await store.aemit("video.ingested", "vid-1", {"n": 1})
    second = await store.aemit("video.transcribed", "vid-1", {"n": 2})
    other = await store.aemit("video.ingested", "vid-2", {})
    assert len({first, second, other}) == 3
    rows = await db.afetch_all(
        "SELECT event_id, entity_id, version, payload FROM atlas.events ORDER BY position"
    )
    assert rows == [
        (first, "vid-1", 1, {"n": 1}),
        (second, "vid-1", 2, {"n": 2}),
        (other, "vid-2", 1, {}),
    ]


async def test_same_id_twice_stores_once(store: EventStore, db: DatabaseBlock) -> None:
    event_id = uuid.uuid4()
    assert await store.aemit("a.b", "e", {"x": 1}, event_id=event_id) == event_id
    assert await store.aemit("a.b", "e", {"x": 1}, event_id=str(event_id)) == event_id
    assert await db.afetch_all("SELECT event_id, version FROM atlas.events") == [(event_id, 1)]
    # The retry did not burn a version either: the next event is version 2.
    await store.aemit("a.b", "e", {})
    assert await db.afetch_all("SELECT version FROM atlas.events ORDER BY version") == [(1,), (2,)]


async def test_expected_version(store: EventStore, db: DatabaseBlock) -> None:
    first = await store.aemit("a.created", "acct", {}, expected_version=0)
    await store.aemit("a.updated", "acct", {}, expected_version=1)
    with pytest.raises(ConcurrencyError, match="version 2, not the expected 1") as info:
        await store.aemit("a.updated", "acct", {}, expected_version=1)
    assert (info.value.expected, info.value.actual, info.value.entity_id) == (1, 2, "acct")
    # Retrying an emit that succeeded returns its id rather than a conflict.
    assert await store.aemit("a.created", "acct", {}, event_id=first, expected_version=0) == first
    assert await db.afetch_one("SELECT count(*), max(version) FROM atlas.events") == (2, 2)
    await store.aemit(
        "a.updated", "acct", {}, expected_version=2
    )  # the failed emits burnt no version


async def test_emit_many_assigns_versions_after_existing(
    store: EventStore, db: DatabaseBlock
) -> None:
    await store.aemit("x.y", "a", {"i": -1})
    ids = await store.aemit_many(
        [NewEvent("x.y", "a" if i % 2 else "b", {"i": i}) for i in range(10)]
        + [{"event_type": "x.z", "entity_id": "c", "payload": {"i": 10}}]
    )
    assert len(ids) == 11 and len(set(ids)) == 11
    rows = await db.afetch_all(
        "SELECT entity_id, version, payload->>'i' FROM atlas.events ORDER BY entity_id, version"
    )
    assert [r for r in rows if r[0] == "a"] == [("a", 1, "-1")] + [
        ("a", v + 2, str(i)) for v, i in enumerate([1, 3, 5, 7, 9])
    ]
    assert [r for r in rows if r[0] == "b"] == [
        ("b", v + 1, str(i)) for v, i in enumerate([0, 2, 4, 6, 8])
    ]
    assert [r for r in rows if r[0] == "c"] == [("c", 1, "10")]


async def test_emit_many_skips_stored_and_repeated_ids(
    store: EventStore, db: DatabaseBlock
) -> None:
    known = await store.aemit("x.y", "a", {"i": 0})
    again = uuid.uuid4()
    ids = await store.aemit_many(
        [
            NewEvent("x.y", "a", {"i": 0}, event_id=known),
            NewEvent("x.y", "a", {"i": 1}, event_id=again),
            NewEvent("x.y", "a", {"i": 1}, event_id=again),
            NewEvent("x.y", "a", {"i": 2}),
        ]
    )
    assert ids[:3] == [known, again, again]
    rows = await db.afetch_all("SELECT version, payload->>'i' FROM atlas.events ORDER BY version")
    assert rows == [(1, "0"), (2, "1"), (3, "2")]


async def test_sql_looking_text_and_unicode_stored_verbatim(store: EventStore) -> None:
    tricky = "'); DROP TABLE atlas.events; -- \\ \t\n 🎥 مرحبا \u200b ß"
    await store.aemit("x.y", tricky[:200], {tricky: tricky, "list": [tricky]})
    await store.aemit_many([NewEvent("x.y", "copy" + tricky[:100], {"k": tricky})])
    events = await _all(store)
    assert events[0].entity_id == tricky[:200]
    assert events[0].payload == {tricky: tricky, "list": [tricky]}
    assert events[1].entity_id == "copy" + tricky[:100]
    assert events[1].payload == {"k": tricky}


async def test_replay_filters_and_resume(store: EventStore) -> None:
    base = datetime(2024, 1, 1, tzinfo=UTC)
    for i in range(25):
        await store.aemit(
            "video.ingested" if i % 2 else "video.removed",
            f"v{i % 3}",
            {"i": i},
            occurred_at=base + timedelta(hours=i),
        )
    everything = await _all(store, batch_size=4)
    assert [e.payload["i"] for e in everything] == list(range(25))
    removed = await _all(store, event_types=["video.removed"])
    assert [e.payload["i"] for e in removed] == list(range(0, 25, 2))
    v1 = await _all(store, entity_id="v1")
    assert [e.version for e in v1] == list(range(1, len(v1) + 1))
    window = await _all(store, since=base + timedelta(hours=5), until=base + timedelta(hours=8))
    assert [e.payload["i"] for e in window] == [5, 6, 7]
    resumed = await _all(store, after_position=everything[9].position, batch_size=7)
    assert [e.event_id for e in resumed] == [e.event_id for e in everything[10:]]
    with pytest.raises(ValueError, match="after_position 999999"):
        await _all(store, after_position=999999)


def test_sync_faces(database_url: str, tmp_path: object) -> None:
    from pydantic import SecretStr

    db = DatabaseBlock(url=SecretStr(database_url))
    db.setup()
    store = EventStore(db, spool_path=str(tmp_path) + "/spool.sqlite")
    event_id = store.emit("sync.emit", "s", {"a": 1})
    ids = store.emit_many([NewEvent("sync.emit", "s", {"a": 2})])
    assert db.fetch_all("SELECT event_id, version FROM atlas.events ORDER BY version") == [
        (event_id, 1),
        (ids[0], 2),
    ]
    assert store.health().spool_size == 0
    assert store.drain() == 0
    store.close()
    db.close()


async def test_emit_many_keeps_input_order_when_an_id_repeats_around_another(
    store: EventStore, db: DatabaseBlock
) -> None:
    repeated = uuid.uuid4()
    ids = await store.aemit_many(
        [
            NewEvent("x.first", "e", {"n": 1}, event_id=repeated),
            NewEvent("x.second", "e", {"n": 2}),
            NewEvent("x.first", "e", {"n": 1}, event_id=repeated),
        ]
    )
    assert ids[0] == ids[2] == repeated
    rows = await db.afetch_all(
        "SELECT version, event_type FROM atlas.events WHERE entity_id = 'e' ORDER BY version"
    )
    assert rows == [(1, "x.first"), (2, "x.second")]


async def test_emit_many_takes_a_generator_like_a_list(store: EventStore) -> None:
    fixed = uuid.uuid4()
    given = [NewEvent("gen.a", f"g{i % 3}", {"i": i}) for i in range(7)]
    given.insert(3, NewEvent("gen.a", "g0", {"fixed": 1}, event_id=fixed))
    given.append(
        NewEvent("gen.a", "g0", {"fixed": 2}, event_id=fixed)
    )  # the same id again: stored once
    ids = await store.aemit_many(e for e in given)
    assert len(ids) == 9 and ids[3] == fixed and ids[8] == fixed  # as a list would return them
    rows = await store.db.afetch_all(
        "SELECT event_id, entity_id, version, payload FROM atlas.events ORDER BY position"
    )
    assert [r[0] for r in rows] == ids[:8]
    assert [r[3] for r in rows] == [dict(e.payload or {}) for e in given[:8]]
    assert [(r[1], r[2]) for r in rows if r[1] == "g0"] == [
        ("g0", 1),
        ("g0", 2),
        ("g0", 3),
        ("g0", 4),
    ]
    listed = await store.aemit_many(list(given))  # a list returns the same shape
    assert len(listed) == 9 and listed[3] == listed[8] == fixed
    with pytest.raises(ValueError, match=r"events\[2\]: payload\['x'\] is nan"):
        await store.aemit_many(
            NewEvent("gen.b", "e", {"x": float("nan") if i == 2 else 1}) for i in range(4)
        )
    assert await store.db.afetch_one(
        "SELECT count(*) FROM atlas.events WHERE event_type = 'gen.b'"
    ) == (0,)
