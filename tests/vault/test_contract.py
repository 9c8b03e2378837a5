"""The contract every vault provider honours, run against local disk, GCS and Hugging Face."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import orjson
import pytest

from prefect_atlas import (
    VaultBlock,
    VaultIntegrityError,
    VaultObjectExistsError,
    VaultPathError,
)
from prefect_atlas.vault import layout
from prefect_atlas.vault.integrity import sha256_hex
from tests.vault.conftest import BUCKET, GcsEnv, HubEnv


async def test_json_round_trip_and_absent(vault: VaultBlock) -> None:
    obj = {"title": "Évènement", "tags": ["news", "live"], "n": 3, "nested": {"ok": True}}
    path = await vault.astore_json("notes/first.json", obj)
    assert path == "notes/first.json"
    assert await vault.afetch_json("notes/first.json") == obj
    assert await vault.afetch_json("notes/missing.json") is None
    assert await vault.aexists("notes/first.json") is True
    assert await vault.aexists("notes/missing.json") is False


async def test_bytes_round_trip(vault: VaultBlock) -> None:
    payload = bytes(range(256)) * 40
    await vault.astore_bytes("blobs/a.bin", payload)
    assert await vault.afetch_bytes("blobs/a.bin") == payload
    assert await vault.afetch_bytes("blobs/b.bin") is None


async def test_list_returns_paths_fetch_accepts(vault: VaultBlock) -> None:
    await vault.astore_batch(
        [("x/1.json", {"i": 1}), ("x/y/2.json", {"i": 2}), ("z/3.json", {"i": 3})]
    )
    assert await vault.alist_objects("x") == ["x/1.json", "x/y/2.json"]
    assert await vault.alist_objects("x/") == ["x/1.json", "x/y/2.json"]
    everything = await vault.alist_objects()
    assert everything == ["x/1.json", "x/y/2.json", "z/3.json"]
    assert await vault.alist_objects("nothing-here") == []
    # What list returns is what fetch takes: the block's prefix is never doubled.
    assert [await vault.afetch_json(p) for p in everything] == [{"i": 1}, {"i": 2}, {"i": 3}]


async def test_delete(vault: VaultBlock) -> None:
    await vault.astore_json("d/gone.json", {"a": 1})
    assert await vault.adelete_object("d/gone.json") is True
    assert await vault.afetch_json("d/gone.json") is None
    assert await vault.adelete_object("d/gone.json") is False
    assert await vault.alist_objects("d") == []


async def test_create_only_mode(vault: VaultBlock) -> None:
    await vault.astore_json("once.json", {"v": 1}, overwrite=False)
    with pytest.raises(VaultObjectExistsError, match="overwrite"):
        await vault.astore_json("once.json", {"v": 2}, overwrite=False)
    assert await vault.afetch_json("once.json") == {"v": 1}
    with pytest.raises(VaultObjectExistsError):
        await vault.astore_batch(
            [("fresh.json", {"v": 0}), ("once.json", {"v": 3})], overwrite=False
        )
    assert await vault.afetch_json("once.json") == {"v": 1}
    await vault.astore_json("once.json", {"v": 4})
    assert await vault.afetch_json("once.json") == {"v": 4}


async def test_batch_of_many(vault: VaultBlock) -> None:
    items = [(f"batch/{i:03d}.json", {"i": i, "pad": "x" * 100}) for i in range(230)]
    written = await vault.astore_batch(items)
    assert written == [p for p, _ in items]
    assert await vault.alist_objects("batch") == sorted(written)
    assert await vault.afetch_json("batch/229.json") == {"i": 229, "pad": "x" * 100}


async def test_atlas_layout(vault: VaultBlock) -> None:
    meta = await vault.astore_metadata("vid-1", {"title": "t"}, date=dt.date(2024, 3, 9))
    assert meta == "metadata/2024-03-09/vid-1.json"
    assert await vault.afetch_json(meta) == {"title": "t"}
    segments = [{"start": 0.0, "end": 1.5, "text": "hello"}]
    path = await vault.astore_transcript("vid-1", segments, language="fr")
    assert path == f"transcripts/{layout.shard('vid-1')}/vid-1.json"
    assert await vault.afetch_transcript("vid-1") == {
        "video_id": "vid-1",
        "language": "fr",
        "segments": segments,
    }
    frames = [{"t": i * 0.5, "label": f"frame{i}", "score": i / 10} for i in range(50)]
    vpath = await vault.astore_visuals("vid-1", frames)
    assert vpath.endswith("/vid-1.parquet") and vpath.startswith("visuals/")
    assert await vault.afetch_visuals("vid-1") == frames
    assert await vault.afetch_visuals("vid-2") is None


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        ("../escape.json", "'..'"),
        ("a/../../b.json", "'..'"),
        ("/etc/passwd", "absolute"),
        ("a\\b.json", "backslash"),
        ("a\x00b.json", "NUL"),
        ("", "empty"),
        ("./", "empty"),
    ],
)
async def test_bad_paths_rejected(vault: VaultBlock, bad: str, fragment: str) -> None:
    with pytest.raises(VaultPathError, match=fragment):
        await vault.astore_json(bad, {"x": 1})
    with pytest.raises(VaultPathError, match=fragment):
        await vault.afetch_json(bad)


async def test_paths_are_normalised_once(vault: VaultBlock) -> None:
    assert await vault.astore_json("a//b/./c.json", {"ok": 1}) == "a/b/c.json"
    assert await vault.afetch_json("a/b/c.json") == {"ok": 1}


async def test_sync_faces_from_sync_code(vault: VaultBlock) -> None:
    def sync_side() -> object:
        vault.store_json("sync/a.json", {"s": 1})
        vault.store_batch([("sync/b.json", {"s": 2})])
        assert vault.exists("sync/a.json")
        assert vault.list_objects("sync") == ["sync/a.json", "sync/b.json"]
        assert vault.delete_object("sync/b.json")
        return vault.fetch_json("sync/a.json")

    assert await asyncio.wait_for(asyncio.to_thread(sync_side), 60) == {"s": 1}


async def test_corruption_detected(vault: VaultBlock, request: pytest.FixtureRequest) -> None:
    original = orjson.dumps({"evidence": "x" * 500})
    await vault.astore_bytes("evidence/e.json", original)
    corrupted = original.replace(b"x", b"y", 1)
    if vault.provider == "local":
        (vault.local_root() / "evidence/e.json").write_bytes(corrupted)
    elif vault.provider == "gcs":
        env: GcsEnv = request.getfixturevalue("gcs_env")
        blob = env.raw_bucket().blob(f"{vault.prefix}/evidence/e.json")
        blob.metadata = {"atlas-sha256": sha256_hex(original)}  # what was recorded on write
        blob.upload_from_string(corrupted)
    else:
        hub: HubEnv = request.getfixturevalue("hub_env")
        assert vault.dataset_id is not None
        hub.server.corrupt(vault.dataset_id, f"{vault.prefix}/evidence/e.json")
    with pytest.raises(VaultIntegrityError, match="corrupt") as info:
        await vault.afetch_bytes("evidence/e.json")
    assert info.value.path == "evidence/e.json"


async def test_prefix_joined_once_in_provider(
    vault: VaultBlock, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The raw provider key is prefix + path, exactly once (prefect-gcp #20174)."""
    await vault.astore_json("p/q.json", {"k": 1})
    if vault.provider == "local":
        assert (vault.local_root() / "p/q.json").is_file()
    elif vault.provider == "gcs":
        env: GcsEnv = request.getfixturevalue("gcs_env")
        names = [
            b.name for b in env.raw_bucket().client.list_blobs(BUCKET, prefix=vault.prefix + "/")
        ]
        assert names == [f"{vault.prefix}/p/q.json"]
    else:
        hub: HubEnv = request.getfixturevalue("hub_env")
        assert vault.dataset_id is not None
        assert sorted(hub.server.repos[vault.dataset_id].files) == [f"{vault.prefix}/p/q.json"]
