"""Retries that must not turn our own success into an error, on real servers with injected
faults."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from prefect_atlas import VaultError, VaultObjectExistsError
from prefect_atlas.vault.integrity import sha256_hex
from tests.vault._servers import GcsPreconditionProxy
from tests.vault.conftest import GcsEnv, HubEnv, make_vault

# ---------------------------------------------------------------------- huggingface


async def test_hf_create_only_commit_applied_but_answer_lost(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The Hub applied our create-only commit, then answered 500: the retry finds *our* files."""
    hub: HubEnv = request.getfixturevalue("hub_env")
    vault = make_vault("huggingface", request, tmp_path)
    items = [("lost/a.json", {"a": 1}), ("lost/b.json", {"b": 2})]
    hub.server.lose_next_commit_answers = 1
    before = hub.server.commit_requests
    assert await asyncio.wait_for(vault.astore_batch(items, overwrite=False), 60) == [
        "lost/a.json",
        "lost/b.json",
    ]
    assert hub.server.commit_requests - before == 1, (
        "the retry must not commit the same files again"
    )
    assert [await vault.afetch_json(p) for p, _ in items] == [{"a": 1}, {"b": 2}]
    # Create-only still refuses different content, and a single write of it too.
    with pytest.raises(VaultObjectExistsError, match=r"lost/a\.json"):
        await vault.astore_json("lost/a.json", {"a": "other"}, overwrite=False)
    hub.server.lose_next_commit_answers = 1
    assert (
        await asyncio.wait_for(vault.astore_json("lost/c.json", [1, 2], overwrite=False), 60)
        == "lost/c.json"
    )
    assert await vault.afetch_json("lost/c.json") == [1, 2]


async def test_hf_create_only_identical_file_written_by_someone_else_still_refused(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Only a commit of ours whose answer was lost counts as ours: a first try still refuses."""
    vault = make_vault("huggingface", request, tmp_path)
    await vault.astore_json("same.json", {"s": 1})
    with pytest.raises(VaultObjectExistsError):
        await vault.astore_json("same.json", {"s": 1}, overwrite=False)


# ---------------------------------------------------------------------- gcs


@pytest.fixture
def gcs_proxy(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[GcsPreconditionProxy]:
    env: GcsEnv = request.getfixturevalue("gcs_env")
    proxy = GcsPreconditionProxy(env.emulator_url)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)  # clients made from now on go through it
    try:
        yield proxy
    finally:
        proxy.close()


async def test_gcs_pinned_download_retried_after_overwrite(
    request: pytest.FixtureRequest, tmp_path: Path, gcs_proxy: GcsPreconditionProxy
) -> None:
    env: GcsEnv = request.getfixturevalue("gcs_env")
    raw = env.raw_bucket()
    vault = make_vault("gcs", request, tmp_path)
    newer = orjson.dumps({"v": 2})
    overwrites = 0

    def overwrite() -> None:
        nonlocal overwrites
        overwrites += 1
        blob = raw.blob(f"{vault.prefix}/race.json")
        blob.metadata = {"atlas-sha256": sha256_hex(newer)}
        blob.upload_from_string(newer, content_type="application/json")

    try:
        await vault.astore_json("race.json", {"v": 1})
        gcs_proxy.before_next_download = overwrite
        assert await asyncio.wait_for(vault.afetch_json("race.json"), 60) == {"v": 2}
        assert overwrites == 1 and gcs_proxy.precondition_failures == 1
    finally:
        await vault.aclose()


async def test_gcs_object_deleted_between_metadata_and_download_is_absent(
    request: pytest.FixtureRequest, tmp_path: Path, gcs_proxy: GcsPreconditionProxy
) -> None:
    env: GcsEnv = request.getfixturevalue("gcs_env")
    raw = env.raw_bucket()
    vault = make_vault("gcs", request, tmp_path)
    try:
        await vault.astore_json("gone.json", {"v": 1})
        gcs_proxy.before_next_download = lambda: raw.blob(f"{vault.prefix}/gone.json").delete()
        assert await asyncio.wait_for(vault.afetch_json("gone.json"), 60) is None
    finally:
        await vault.aclose()


async def test_gcs_download_keeps_failing_precondition_gives_up(
    request: pytest.FixtureRequest, tmp_path: Path, gcs_proxy: GcsPreconditionProxy
) -> None:
    """An object rewritten before every download: bounded tries, then the 412 is raised."""
    env: GcsEnv = request.getfixturevalue("gcs_env")
    raw = env.raw_bucket()
    vault = make_vault("gcs", request, tmp_path)
    data = orjson.dumps({"v": 0})

    def overwrite_and_rearm() -> None:
        blob = raw.blob(f"{vault.prefix}/hot.json")
        blob.metadata = {"atlas-sha256": sha256_hex(data)}
        blob.upload_from_string(data, content_type="application/json")
        gcs_proxy.before_next_download = overwrite_and_rearm

    try:
        await vault.astore_json("hot.json", {"v": 0})
        gcs_proxy.before_next_download = overwrite_and_rearm
        with pytest.raises(VaultError, match="kept changing"):
            await asyncio.wait_for(vault.afetch_json("hot.json"), 60)
        assert 1 < gcs_proxy.precondition_failures <= 10
    finally:
        gcs_proxy.before_next_download = None
        await vault.aclose()
