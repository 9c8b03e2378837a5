"""``vault`` and ``db``: 0.2.1's sync vault and async database manager on the blocks."""

from __future__ import annotations

import orjson
import pytest

from prefect_atlas import DatabaseBlock, VaultBlock, VaultIntegrityError
from prefect_atlas.compat import db, vault
from prefect_atlas.compat.vault import legacy_transcript_path
from prefect_atlas.vault import layout
from tests.compat.conftest import CompatEnv

VIDEO = "dQw4w9WgXcQ"


async def test_vault_is_sync_even_inside_a_running_loop(compat_env: CompatEnv) -> None:
    path = vault.store_json("notes/a.json", {"n": 1})  # no await, as in 0.2.1
    assert path == "notes/a.json"
    assert vault.fetch_json("notes/a.json") == {"n": 1}
    assert vault.fetch_json("notes/missing.json") is None
    assert vault.list_files("notes/") == ["notes/a.json"]
    assert vault.list_files("nothing/") == []


def test_vault_works_from_sync_code(compat_env: CompatEnv) -> None:
    vault.store_metadata(VIDEO, {"title": "x"}, "2026-01-09")
    assert vault.fetch_metadata(VIDEO, "2026-01-09") == {"title": "x"}
    assert vault.fetch_metadata(VIDEO, "2026-01-10") is None
    stored = compat_env.vault_root / "metadata" / "2026-01-09" / f"{VIDEO}.json"
    assert orjson.loads(stored.read_bytes()) == {"title": "x"}


def test_transcripts_written_by_0_2_1_are_still_found(compat_env: CompatEnv) -> None:
    old = VaultBlock(provider="local", root=str(compat_env.vault_root))
    old.store_json(legacy_transcript_path(VIDEO), {"text": "old layout"})
    assert vault.fetch_transcript(VIDEO) == {"text": "old layout"}
    vault.store_transcript(VIDEO, {"text": "new layout", "segments": []})
    assert vault.fetch_transcript(VIDEO) == {"text": "new layout", "segments": []}
    assert old.fetch_json(layout.transcript_path(VIDEO)) == {"text": "new layout", "segments": []}


def test_visual_evidence_refuses_what_is_not_frame_pairs(compat_env: CompatEnv) -> None:
    with pytest.raises(TypeError, match=r"frames\[1\]"):
        vault.store_visual_evidence(VIDEO, [(0, b"ok"), (1, "not bytes")])  # type: ignore[list-item]
    assert vault.list_files() == []


def test_a_failed_read_raises_instead_of_looking_absent(compat_env: CompatEnv) -> None:
    vault.store_json("evidence/a.json", {"n": 12345})
    target = compat_env.vault_root / "evidence" / "a.json"
    with open(target, "r+b") as fh:  # bit rot: one byte flipped in place
        fh.seek(5)
        old = fh.read(1)
        fh.seek(5)
        fh.write(bytes([old[0] ^ 0xFF]))
    with pytest.raises(VaultIntegrityError, match="corrupt"):
        vault.fetch_json("evidence/a.json")


async def test_db_manager_connection_health_and_close(compat_env: CompatEnv) -> None:
    await db.initialize()
    async with db.get_connection() as conn:
        await conn.execute("CREATE TABLE t (n int)")
        await conn.execute("INSERT INTO t VALUES (1), (2)")

    async def insert_then_fail() -> None:
        async with db.get_connection() as conn:
            await conn.execute("INSERT INTO t VALUES (3)")
            raise ZeroDivisionError  # rolled back

    with pytest.raises(ZeroDivisionError):
        await insert_then_fail()
    async with db.get_connection() as conn:
        cur = await conn.execute("SELECT n FROM t ORDER BY n")
        assert await cur.fetchall() == [(1,), (2,)]
    assert await db.health_check() is True
    await db.close()
    assert await db.health_check() is True  # a later call opens the pool again


async def test_db_health_check_is_false_when_the_server_is_away(compat_env: CompatEnv) -> None:
    compat_env.set("DATABASE_URL", "postgresql://atlas@127.0.0.1:9/atlas?connect_timeout=2")
    assert await db.health_check() is False
    block = await db.block()
    assert isinstance(block, DatabaseBlock) and "port=9" in block.describe()
