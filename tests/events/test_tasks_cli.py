"""The Prefect tasks (emit_event, emit_events, upsert_rows) and the `events` CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import psycopg
import pytest
from prefect import flow

from prefect_atlas import DatabaseBlock, EventStore
from prefect_atlas.tasks import emit_event, emit_events, upsert_rows


async def test_emit_tasks_in_a_flow_with_a_saved_block(
    store: EventStore, db: DatabaseBlock
) -> None:
    await db.asave("events-test", overwrite=True)

    @flow
    async def pipeline() -> list[str]:
        first = await emit_event("video.ingested", "v1", {"n": 1}, database="events-test")
        rest = await emit_events(
            [{"event_type": "video.tagged", "entity_id": "v1", "payload": {"n": 2}}], database=db
        )
        return [str(first), *map(str, rest)]

    ids = await pipeline()
    rows = await db.afetch_all("SELECT event_id::text, version FROM atlas.events ORDER BY version")
    assert rows == [(ids[0], 1), (ids[1], 2)]


async def test_upsert_rows_inserts_updates_and_quotes(db: DatabaseBlock) -> None:
    await db.aexecute(
        'CREATE TABLE public."Weird Table" ("key col" TEXT PRIMARY KEY, "select" INT)'
    )
    rows = [{"key col": f"k{i}", "select": i} for i in range(2500)]
    assert (
        await upsert_rows.fn("public.Weird Table", rows, key_columns=["key col"], database=db)
        == 2500
    )
    changed = [{"key col": "k1", "select": -1}, {"key col": "new", "select": 7}]
    assert (
        await upsert_rows.fn("public.Weird Table", changed, key_columns=["key col"], database=db)
        == 2
    )
    assert await db.afetch_one('SELECT count(*), sum("select") FROM public."Weird Table"') == (
        2501,
        sum(range(2500)) - 2 + 7,
    )
    with pytest.raises(ValueError, match=r"key_columns \['nope'\]"):
        await upsert_rows.fn("public.Weird Table", changed, key_columns=["nope"], database=db)


async def test_upsert_rows_retries_transient_errors_only(db: DatabaseBlock) -> None:
    # A sequence counts attempts (nextval survives rollbacks); the trigger fails the first two
    # with a serialization failure, and a CHECK rejects negative values every time.
    await db.aexecute("CREATE SEQUENCE attempts")
    await db.aexecute("CREATE TABLE t (k INT PRIMARY KEY, v INT CHECK (v >= 0))")
    await db.aexecute(
        """
        CREATE FUNCTION flaky() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF nextval('attempts') < 3 THEN
                RAISE EXCEPTION 'simulated conflict' USING ERRCODE = '40001';
            END IF;
            RETURN NEW;
        END $$
        """
    )
    await db.aexecute(
        "CREATE TRIGGER flaky BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION flaky()"
    )
    assert await upsert_rows.fn("t", [{"k": 1, "v": 1}], key_columns=["k"], database=db) == 1
    assert await db.afetch_all("SELECT last_value FROM attempts") == [(3,)]
    with pytest.raises(psycopg.errors.CheckViolation):
        await upsert_rows.fn("t", [{"k": 2, "v": -1}], key_columns=["k"], database=db)
    assert await db.afetch_all("SELECT last_value FROM attempts") == [(4,)]  # tried once


async def test_cli_replay_and_drain(store: EventStore, database_url: str, tmp_path: Path) -> None:
    await store.aemit("cli.first", "e1", {"text": "héllo"})
    await store.aemit("cli.second", "e2", {})
    env = {**os.environ, "DATABASE_URL": database_url, "ATLAS_HOME": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-m", "prefect_atlas", "events", "replay", "--type", "cli.first"],
        capture_output=True,
        env=env,
        check=True,
        timeout=120,
    ).stdout
    lines = [orjson.loads(line) for line in out.splitlines()]
    assert [(e["event_type"], e["entity_id"], e["version"], e["payload"]) for e in lines] == [
        ("cli.first", "e1", 1, {"text": "héllo"})
    ]
    drained = subprocess.run(
        [sys.executable, "-m", "prefect_atlas", "events", "drain"],
        capture_output=True,
        env=env,
        check=True,
        text=True,
        timeout=120,
    ).stdout
    assert drained.startswith("drained 0 event(s)")
    bad = subprocess.run(
        [sys.executable, "-m", "prefect_atlas", "events", "replay", "--since", "2024-01-01"],
        capture_output=True,
        env=env,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 1 and "--since must include a timezone" in bad.stderr


async def test_upsert_rows_refuses_identifiers_that_would_hit_another_column(
    db: DatabaseBlock,
) -> None:
    await db.aexecute("CREATE TABLE u (k int PRIMARY KEY, a int, b int)")
    await db.aexecute("INSERT INTO u VALUES (1, 10, 20)")
    with pytest.raises(ValueError, match=r"column 'a\\x00zzz' contains a NUL"):
        await upsert_rows.fn("u", [{"k": 1, "a\x00zzz": 99}], key_columns=["k"], database=db)
    with pytest.raises(ValueError, match=r"column 'a%sb' contains '%'"):
        await upsert_rows.fn("u", [{"k": 1, "a%sb": 99}], key_columns=["k"], database=db)
    with pytest.raises(TypeError, match=r"not a string: write key_columns=\['k'\]"):
        await upsert_rows.fn("u", [{"k": 1, "a": 2}], key_columns="k", database=db)
    with pytest.raises(ValueError, match="contains a NUL"):
        await upsert_rows.fn("u\x00x", [{"k": 1, "a": 2}], key_columns=["k"], database=db)
    assert await db.afetch_all("SELECT k, a, b FROM u") == [(1, 10, 20)]  # nothing was written
