"""Migration 0008 on a database that holds data of the unpartitioned log (schema 0006).

The database is brought to 0006 exactly as an earlier release left it (only migrations
0001..0006 applied) and filled through that schema's own functions: several entities and
versions over several days, a batch, a burnt position, dead letters. Then ``setup()``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg
import pytest
from pydantic import SecretStr

from prefect_atlas import DatabaseBlock
from prefect_atlas.database.migrations import apply_migrations
from prefect_atlas.events import ConcurrencyError, EventStore, NewEvent, dead_letters
from prefect_atlas.events.partitions import alist_partitions
from prefect_atlas.events.validation import PreparedEvent
from prefect_atlas.exceptions import DeadLetterError

_COLUMNS = (
    "position, event_id, event_type, entity_id, version, payload::text, occurred_at, "
    "recorded_at, xid::text"
)


@pytest.fixture
async def old(database_url: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A raw autocommit connection on a database at schema 0006."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        applied = await apply_migrations(conn, _up_to=6)
        assert [m.version for m in applied] == [1, 2, 3, 4, 5, 6]
        yield conn


async def _rows(conn: psycopg.AsyncConnection[Any], query: str, *args: Any) -> list[Any]:
    cur = await conn.execute(query, list(args))
    return await cur.fetchall()


async def _fill(conn: psycopg.AsyncConnection[Any]) -> dict[str, uuid.UUID]:
    """Events as the 0006 schema stores them; returns a few ids by name."""
    ids: dict[str, uuid.UUID] = {}
    now = datetime.now(UTC)
    # Older days: rows recorded 40 and 3 days ago (as the table's own default would have).
    for days, entity, version in [(40, "chan-a", 1), (40, "chan-a", 2), (3, "chan-b", 1)]:
        event_id = uuid.uuid4()
        ids[f"{entity}-{version}"] = event_id
        await conn.execute(
            "INSERT INTO atlas.events (event_id, event_type, entity_id, version, payload, "
            "occurred_at, recorded_at) VALUES (%s, 'video.ingested', %s, %s, %s, %s, %s)",
            [event_id, entity, version, '{"old": true}', now, now - timedelta(days=days)],
        )
    # Today, through the schema's append function, with and without expected versions.
    for entity, expected in [("chan-a", 2), ("chan-b", None), ("chan-c", 0), ("chan-c", None)]:
        event_id = uuid.uuid4()
        await conn.execute(
            "SELECT atlas.append_event(%s, 'video.tagged', %s, '{\"n\": 1}', now(), %s, true)",
            [event_id, entity, expected],
        )
        ids[f"{entity}-today-{event_id}"] = event_id
    # A batch, the way the release's writer did it: lock and read versions, then insert.
    async with conn.transaction():
        cur = await conn.execute(
            "SELECT entity_id, version FROM atlas.lock_entities(%s, true)", [["chan-d", "chan-a"]]
        )
        versions = dict(await cur.fetchall())
        assert versions == {"chan-d": 0, "chan-a": 3}
        for entity in ["chan-d", "chan-d", "chan-a"]:
            versions[entity] += 1
            await conn.execute(
                "INSERT INTO atlas.events (event_id, event_type, entity_id, version, payload, "
                "occurred_at) VALUES (%s, 'video.seen', %s, %s, '{}', now())",
                [uuid.uuid4(), entity, versions[entity]],
            )
    # A position burnt by a rolled-back insert: the sequence stands past max(position).
    with pytest.raises(psycopg.errors.UniqueViolation):
        await conn.execute(
            "INSERT INTO atlas.events (event_id, event_type, entity_id, version, payload, "
            "occurred_at) VALUES (%s, 'video.seen', 'chan-a', 1, '{}', now())",
            [uuid.uuid4()],
        )
    # Dead letters, parked by the drain's own function: one the server still refuses (its type
    # breaks the CHECK), one refused by a constraint that is gone by now.
    for name, event_type in [("dead-bad", "Not A Type"), ("dead-ok", "video.parked")]:
        event = PreparedEvent(uuid.uuid4(), event_type, "chan-b", orjson.dumps({"dead": name}), now)
        ids[name] = event.event_id
        async with conn.transaction():
            await dead_letters.park(conn, event, RuntimeError(f"refused {name}"), "23514")
    return ids


async def test_setup_keeps_every_event_id_position_xid_and_version(
    old: psycopg.AsyncConnection[Any], database_url: str, tmp_path: Any
) -> None:
    ids = await _fill(old)
    before = await _rows(old, f"SELECT {_COLUMNS} FROM atlas.events ORDER BY position")
    assert len(before) == 10
    [(sequence_at,)] = await _rows(
        old,
        "SELECT last_value FROM pg_sequences WHERE format('%%I.%%I', schemaname, sequencename)"
        "::regclass = pg_get_serial_sequence('atlas.events', 'position')::regclass",
    )
    assert sequence_at > before[-1][0]  # the burnt position
    dead_before = await _rows(
        old, "SELECT event_id, reason, event FROM atlas.dead_events ORDER BY event_id"
    )

    db = DatabaseBlock(url=SecretStr(database_url), timeout=10)
    store = EventStore(db, spool_path=str(tmp_path / "spool.sqlite"))
    try:
        applied = await db.asetup()
        assert 8 in [m.version for m in applied]

        # Every event, id, position, xid and version, as it was.
        after = await _rows(old, f"SELECT {_COLUMNS} FROM atlas.events ORDER BY position")
        assert after == before
        assert await _rows(old, "SELECT to_regclass('atlas.events_unpartitioned')") == [(None,)]
        assert await _rows(
            old, "SELECT count(*), count(DISTINCT event_id) FROM atlas.event_ids"
        ) == [(10, 10)]
        assert await _rows(
            old, "SELECT entity_id, version FROM atlas.entity_versions ORDER BY entity_id"
        ) == [("chan-a", 4), ("chan-b", 2), ("chan-c", 2), ("chan-d", 2)]
        # Each old row sits in the partition of its day; today and 7 days ahead exist.
        days = {
            str(name)
            for (name,) in await _rows(
                old, "SELECT DISTINCT tableoid::regclass::text FROM atlas.events"
            )
        }
        now = datetime.now(UTC)
        assert days == {
            f"atlas.events_p{now - timedelta(days=40):%Y%m%d}",
            f"atlas.events_p{now - timedelta(days=3):%Y%m%d}",
            f"atlas.events_p{now:%Y%m%d}",
        }
        names = [p.name for p in await alist_partitions(old)]
        assert names[:2] == [
            f"events_p{now - timedelta(days=40):%Y%m%d}",
            f"events_p{now - timedelta(days=3):%Y%m%d}",
        ]
        assert len(names) == 2 + 8
        assert (
            await _rows(
                old, "SELECT event_id, reason, event FROM atlas.dead_events ORDER BY event_id"
            )
            == dead_before
        )

        # Old ids store nothing, by either path; an old-id retry with a stale version too.
        assert await store.aemit("x.y", "chan-a", {}, event_id=ids["chan-a-1"]) == ids["chan-a-1"]
        assert await store.aemit_many([NewEvent("x.y", "chan-b", {}, event_id=ids["chan-b-1"])])
        assert await store.aemit("x.y", "chan-a", {}, event_id=ids["chan-a-2"], expected_version=1)
        assert await _rows(old, "SELECT count(*) FROM atlas.events") == [(10,)]

        # New events continue versions and positions.
        new_one = await store.aemit("x.y", "chan-a", {"new": 1}, expected_version=4)
        new_batch = await store.aemit_many(
            [NewEvent("x.y", "chan-d", {}), NewEvent("x.y", "chan-e", {})]
        )
        with pytest.raises(ConcurrencyError):
            await store.aemit("x.y", "chan-c", {}, expected_version=1)
        # The dead letter that the server takes now is stored with the entity's next version;
        # the one it still refuses stays parked.
        assert await store.aretry_dead_letter(ids["dead-ok"]) == ids["dead-ok"]
        with pytest.raises(DeadLetterError, match="refused event"):
            await store.aretry_dead_letter(ids["dead-bad"])
        assert [d.event_id for d in await store.adead_letters()] == [ids["dead-bad"]]

        rows = await _rows(
            old,
            "SELECT event_id, entity_id, version, position FROM atlas.events WHERE position > %s "
            "ORDER BY position",
            before[-1][0],
        )
        assert [(r[0], r[1], r[2]) for r in rows] == [
            (new_one, "chan-a", 5),
            (new_batch[0], "chan-d", 3),
            (new_batch[1], "chan-e", 1),
            (ids["dead-ok"], "chan-b", 3),
        ]
        assert all(r[3] > sequence_at for r in rows)
        # Replay: the old events first, in their (xid, position) order, then the new ones.
        replayed = [e async for e in store.replay()]
        assert [e.position for e in replayed[:10]] == [
            r[0] for r in sorted(before, key=lambda r: (int(r[8]), r[0]))
        ]
        assert [e.event_id for e in replayed[10:]] == [r[0] for r in rows]
    finally:
        store.close()
        await db.aclose()
