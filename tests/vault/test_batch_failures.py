"""``store_batch`` failing part-way, on every provider: the error says exactly what was
written, and the storage holds exactly that (never a silent partial).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from prefect_atlas import VaultBlock, VaultObjectExistsError, VaultPathError
from prefect_atlas.vault.errors import (
    VaultBatchError,
    VaultBatchExistsError,
    VaultBatchPathError,
)
from tests.vault._servers import GcsPreconditionProxy
from tests.vault.conftest import PROVIDERS, GcsEnv, HubEnv, make_vault


async def _clash_batch(vault: VaultBlock, n: int, clash: int) -> tuple[list[str], VaultBatchError]:
    paths = [f"m/{i:03d}.json" for i in range(n)]
    await vault.astore_json(paths[clash], {"owner": "someone else"})
    with pytest.raises(VaultObjectExistsError) as info:
        await vault.astore_batch([(p, {"i": i}) for i, p in enumerate(paths)], overwrite=False)
    error = info.value
    assert isinstance(error, VaultBatchExistsError)
    return paths, error


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_create_only_clash_mid_batch_reports_exactly_what_was_written(
    provider: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """One upload at a time, so the outcome is exact: what precedes the clash, on each provider."""
    vault = make_vault(provider, request, tmp_path, max_concurrency=1)
    try:
        paths, error = await _clash_batch(vault, 5, clash=2)
        # Local and GCS write one by one; a Hugging Face chunk is one atomic commit.
        expected = [] if provider == "huggingface" else paths[:2]
        assert error.written == expected
        assert error.not_written == [p for p in paths if p not in expected]
        assert error.unknown == []
        assert list(error.errors) == (
            paths if provider == "huggingface" else [paths[2]]
        )  # the commit failed
        assert f"stored {len(expected)} of 5 objects" in str(error)
        assert isinstance(error.__cause__, VaultObjectExistsError)
        assert await vault.alist_objects("m") == sorted([paths[2], *expected])
        assert await vault.afetch_json(paths[2]) == {"owner": "someone else"}
        for i in range(len(expected)):
            assert await vault.afetch_json(paths[i]) == {"i": i}
    finally:
        await vault.aclose()


async def test_gcs_concurrent_batch_report_matches_the_bucket(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Four uploads in flight: uploads already running finish, none start after the failure."""
    vault = make_vault("gcs", request, tmp_path, max_concurrency=4)
    try:
        paths, error = await _clash_batch(vault, 12, clash=5)
        assert paths[5] in error.not_written and error.unknown == []
        assert sorted(error.written + error.not_written) == paths
        assert 1 <= len(error.written) < 11, "no upload may start once one has failed"
        assert await vault.alist_objects("m") == sorted([paths[5], *error.written])
    finally:
        await vault.aclose()


async def test_hf_failure_in_a_later_commit_keeps_the_earlier_ones(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    vault = make_vault("huggingface", request, tmp_path)
    paths, error = await _clash_batch(vault, 150, clash=120)
    assert error.written == paths[:100], "the first commit of 100 landed"
    assert error.not_written == paths[100:]
    assert await vault.alist_objects("m") == sorted([*paths[:100], paths[120]])


async def test_hf_commit_refused_by_the_server_is_checked_not_guessed(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """A 429 that outlives the retries is no refusal of ours: the branch is checked, nothing
    landed."""
    hub: HubEnv = request.getfixturevalue("hub_env")
    vault = make_vault("huggingface", request, tmp_path, retry_attempts=1)
    hub.server.rate_limit_next_commits = 1
    with pytest.raises(VaultBatchError) as info:
        await asyncio.wait_for(
            vault.astore_batch([("r/a.json", {"a": 1}), ("r/b.json", {"b": 2})]), 60
        )
    assert type(info.value) is VaultBatchError
    assert (info.value.written, info.value.not_written, info.value.unknown) == (
        [],
        ["r/a.json", "r/b.json"],
        [],
    )
    assert "429" in str(info.value)
    assert await vault.alist_objects("r") == []


async def test_local_batch_stops_at_a_path_the_filesystem_refuses(tmp_path: Path) -> None:
    vault = VaultBlock(root=str(tmp_path / "vault"))
    await vault.astore_bytes("blocker", b"a file")
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, vault.local_root() / "link")
    for bad, fragment in (
        ("blocker/x.json", "is a file, not a folder"),
        ("link/x.json", "is a symbolic link"),
    ):
        items = [
            ("k/a.json", {"a": 1}),
            ("k/b.json", {"b": 2}),
            (bad, {"x": 1}),
            ("k/c.json", {"c": 3}),
        ]
        with pytest.raises(VaultPathError, match=fragment) as info:
            await vault.astore_batch(items)
        error = info.value
        assert isinstance(error, VaultBatchPathError)
        assert (error.written, error.not_written, error.unknown) == (
            ["k/a.json", "k/b.json"],
            [bad, "k/c.json"],
            [],
        )
        assert list(error.errors) == [bad]
        assert await vault.alist_objects() == ["blocker", "k/a.json", "k/b.json"]
    assert list(outside.iterdir()) == []


async def test_bad_input_anywhere_in_a_batch_writes_nothing(vault: VaultBlock) -> None:
    items = [("z/a.json", {"a": 1}), ("z/b.json", {"score": float("nan")})]
    with pytest.raises(
        ValueError, match=r"items\[1\] object for 'z/b.json' cannot be stored as JSON: nan"
    ):
        await vault.astore_batch(items)
    with pytest.raises(VaultPathError, match=r"items\[1\] path"):
        await vault.astore_batch([("z/a.json", {"a": 1}), ("../b.json", {})])
    assert await vault.alist_objects("z") == []


async def test_hf_lost_commit_answer_is_checked_and_the_batch_goes_on(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """No retries left after a commit whose answer was lost: the branch shows it landed, so the
    batch carries on with the next commit instead of reporting (or repeating) it."""
    hub: HubEnv = request.getfixturevalue("hub_env")
    vault = make_vault("huggingface", request, tmp_path, retry_attempts=1)
    items = [(f"lost/{i:03d}.json", {"i": i}) for i in range(150)]
    hub.server.lose_next_commit_answers = 1
    before = hub.server.commit_requests
    assert await asyncio.wait_for(vault.astore_batch(items), 60) == [p for p, _ in items]
    assert hub.server.commit_requests - before == 2, "each chunk committed once"
    assert await vault.alist_objects("lost") == [p for p, _ in items]


@pytest.fixture
def gcs_faults(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[GcsPreconditionProxy]:
    """A proxy in front of the emulator that loses or refuses uploads on demand."""
    env: GcsEnv = request.getfixturevalue("gcs_env")
    proxy = GcsPreconditionProxy(env.emulator_url)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)  # clients made from now on go through it
    try:
        yield proxy
    finally:
        proxy.close()


def _items(tag: str) -> list[tuple[str, dict[str, int]]]:
    return [(f"{tag}/{i}.json", {"i": i}) for i in range(3)]


async def _gcs_batch(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    proxy: GcsPreconditionProxy,
    tag: str,
    **faults: object,
) -> tuple[VaultBlock, VaultBatchError | list[str]]:
    """Store three objects one at a time, no retries, ``faults`` armed once the client is warm."""
    vault = make_vault("gcs", request, tmp_path, max_concurrency=1, retry_attempts=1)
    items = _items(tag)
    await vault.astore_json("warm.json", {"client": "made, bucket seen"})
    for name, value in faults.items():
        setattr(proxy, name, value)
    try:
        return vault, await asyncio.wait_for(vault.astore_batch(items), 60)
    except VaultBatchError as exc:
        return vault, exc
    finally:
        proxy.fail_object_lookups = False


async def test_gcs_upload_whose_answer_was_lost_is_found_and_counts(
    request: pytest.FixtureRequest, tmp_path: Path, gcs_faults: GcsPreconditionProxy
) -> None:
    vault, outcome = await _gcs_batch(
        request, tmp_path, gcs_faults, "lost", lose_next_upload_answers=1
    )
    assert outcome == [p for p, _ in _items("lost")], (
        "the sha256 recorded with the object proves it landed"
    )
    assert await vault.alist_objects("lost") == [p for p, _ in _items("lost")]
    await vault.aclose()


async def test_gcs_refused_upload_is_reported_not_written(
    request: pytest.FixtureRequest, tmp_path: Path, gcs_faults: GcsPreconditionProxy
) -> None:
    vault, outcome = await _gcs_batch(request, tmp_path, gcs_faults, "ref", refuse_next_uploads=1)
    assert isinstance(outcome, VaultBatchError) and type(outcome) is VaultBatchError
    assert (outcome.written, outcome.not_written, outcome.unknown) == (
        [],
        ["ref/0.json", "ref/1.json", "ref/2.json"],
        [],
    )
    assert "503" in str(outcome)
    assert await vault.alist_objects("ref") == []
    await vault.aclose()


async def test_gcs_outcome_that_cannot_be_checked_is_unknown(
    request: pytest.FixtureRequest, tmp_path: Path, gcs_faults: GcsPreconditionProxy
) -> None:
    vault, outcome = await _gcs_batch(
        request, tmp_path, gcs_faults, "unk", lose_next_upload_answers=1, fail_object_lookups=True
    )
    assert isinstance(outcome, VaultBatchError)
    assert (outcome.written, outcome.not_written, outcome.unknown) == (
        [],
        ["unk/1.json", "unk/2.json"],
        ["unk/0.json"],
    )
    assert "Outcome unknown (check them): 'unk/0.json'" in str(outcome)
    assert await vault.alist_objects("unk") == [
        "unk/0.json"
    ]  # it did land: "unknown" was the honest answer
    await vault.aclose()
