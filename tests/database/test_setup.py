"""Schema migrations: once each, in order, concurrency-safe, checksummed."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from pydantic import SecretStr

from prefect_atlas import DatabaseBlock, MigrationError
from prefect_atlas.database import shipped_migrations


async def test_setup_applies_schema_then_is_a_noop(db: DatabaseBlock) -> None:
    applied = await db.asetup()
    assert [m.version for m in applied] == [m.version for m in shipped_migrations()]
    assert await db.asetup() == []
    tables = await db.afetch_all(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'atlas' ORDER BY 1"
    )
    assert {"channels", "videos", "transcripts", "schema_migrations"} <= {t[0] for t in tables}
    indexes = {
        row[0]
        for row in await db.afetch_all("SELECT indexdef FROM pg_indexes WHERE tablename = 'videos'")
    }
    assert any("USING gin (tags)" in i for i in indexes)
    assert any("published_at DESC" in i for i in indexes)
    assert any("(category_id)" in i for i in indexes)
    report = await db.ahealth()
    assert report.schema_version == shipped_migrations()[-1].version


async def test_concurrent_setup_applies_each_migration_once(database_url: str) -> None:
    blocks = [DatabaseBlock(url=SecretStr(database_url)) for _ in range(6)]
    try:
        results = await asyncio.gather(*(b.asetup() for b in blocks))
    finally:
        await asyncio.gather(*(b.aclose() for b in blocks))
    non_empty = [r for r in results if r]
    assert len(non_empty) == 1
    async with DatabaseBlock(url=SecretStr(database_url)) as db:
        rows = await db.afetch_all("SELECT version FROM atlas.schema_migrations ORDER BY version")
    assert [r[0] for r in rows] == [m.version for m in shipped_migrations()]


async def test_edited_migration_is_refused(db: DatabaseBlock) -> None:
    await db.asetup()
    await db.aexecute("UPDATE atlas.schema_migrations SET checksum = 'edited' WHERE version = 1")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        await db.asetup()


async def test_schema_from_a_newer_release_is_refused(db: DatabaseBlock) -> None:
    await db.asetup()
    await db.aexecute(
        "INSERT INTO atlas.schema_migrations (version, name, checksum) VALUES (9999, 'future', 'x')"
    )
    with pytest.raises(MigrationError, match="newer release"):
        await db.asetup()


async def test_schema_constraints(db: DatabaseBlock) -> None:
    await db.asetup()
    channel = "UC" + "a" * 22
    await db.aexecute("INSERT INTO atlas.channels (channel_id, title) VALUES (%s, 'c')", [channel])
    await db.aexecute(
        "INSERT INTO atlas.videos (video_id, channel_id, "
        "tags, category_id) VALUES (%s, %s, %s, 10)",
        ["dQw4w9WgXcQ", channel, ["music", "classic"]],
    )
    assert await db.afetch_one(
        "SELECT video_id FROM atlas.videos WHERE tags @> %s", [["music"]]
    ) == ("dQw4w9WgXcQ",)
    with pytest.raises(psycopg.errors.CheckViolation):
        await db.aexecute("INSERT INTO atlas.channels (channel_id) VALUES ('not-a-channel')")
    with pytest.raises(psycopg.errors.CheckViolation):
        # a last character YouTube never issues
        await db.aexecute(
            "INSERT INTO atlas.videos (video_id, channel_id) VALUES ('dQw4w9WgXcB', %s)", [channel]
        )


async def test_a_skipped_older_migration_is_refused_not_applied_out_of_order(
    db: DatabaseBlock,
) -> None:
    await db.asetup()
    first = shipped_migrations()[0]
    await db.aexecute("DELETE FROM atlas.schema_migrations WHERE version = %s", [first.version])
    with pytest.raises(
        MigrationError, match=f"{first.version:04d}_{first.name} are older than the newest"
    ):
        await db.asetup()
