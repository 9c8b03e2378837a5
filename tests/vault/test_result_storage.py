"""``VaultBlock`` as Prefect result storage, on the three providers and real servers.

A cached flow runs here (async faces) and in a second process (sync faces) against the same
Prefect test server; task bodies are counted in a file. Requests are counted on the GCS
emulator (through a proxy) and on the local Hub server; Hub commits are counted per dataset.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from prefect.results import ResultStore
from prefect.settings import PREFECT_API_URL
from pydantic import SecretStr

from prefect_atlas import VaultAccessError, VaultBlock, VaultObjectExistsError, VaultPathError
from prefect_atlas.vault import _hf_buffer
from prefect_atlas.vault._results import RESULTS_PREFIX
from tests.vault._result_flow import arun
from tests.vault._servers import GcsPreconditionProxy
from tests.vault.conftest import HF_TOKEN, PROVIDERS, GcsEnv, HubEnv, make_vault

ROOT = Path(__file__).resolve().parents[2]
SUBPROCESS_TIMEOUT = 300


def _env() -> dict[str, str]:
    """The environment of a second process: this session's Prefect server and emulators."""
    return {
        **os.environ,
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "PYTHONPATH": str(ROOT),
    }


def second_process(block_name: str, counter: Path, xs: list[int]) -> list[int]:
    """Run the cached sync flow in a new interpreter; its printed results."""
    proc = subprocess.run(
        [sys.executable, "-m", "tests.vault._result_flow", block_name, str(counter)]
        + [str(x) for x in xs],
        env=_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result: list[int] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def executions(counter: Path) -> list[int]:
    """The inputs the task body ran with, in order (one line per execution)."""
    return [int(line) for line in counter.read_text().split()] if counter.exists() else []


def hub_commits(hub: HubEnv, block: VaultBlock) -> int:
    assert block.dataset_id is not None
    return len(hub.server.repos[block.dataset_id].commits) - 1


@pytest.fixture(params=PROVIDERS)
async def saved_vault(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[VaultBlock, str]]:
    """A vault on a fresh location, saved on the Prefect server (results record its id)."""
    block = make_vault(request.param, request, tmp_path)
    name = f"results-{request.param}-{uuid.uuid4().hex[:8]}"
    await block.asave(name)
    try:
        yield block, name
    finally:
        await block.aclose()


@pytest.fixture
def short_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Buffers made from now on wait 0.3 s before committing (default 2 s)."""
    monkeypatch.setattr(_hf_buffer, "DELAY", 0.3)


@pytest.fixture
def no_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Buffers made from now on commit only when full or flushed (the timer waits 10 min)."""
    monkeypatch.setattr(_hf_buffer, "DELAY", 600.0)


# ---------------------------------------------------------------------- caching across processes


async def test_second_process_gets_cached_results(
    saved_vault: tuple[VaultBlock, str], tmp_path: Path
) -> None:
    block, name = saved_vault
    counter = tmp_path / "executions.txt"

    assert await asyncio.wait_for(arun(name, str(counter), [1, 2, 3]), 120) == [1, 4, 9]
    assert executions(counter) == [1, 2, 3]
    await block.aflush_results()  # Hugging Face: commit the buffer now (elsewhere nothing)
    stored = await block.alist_objects(RESULTS_PREFIX)
    assert len(stored) == 4, f"three task results and the flow's own: {stored}"

    # Another interpreter, the sync faces: 1, 2, 3 come from the vault, only 4 runs.
    assert second_process(name, counter, [1, 2, 3, 4]) == [1, 4, 9, 16]
    assert executions(counter) == [1, 2, 3, 4]

    # What the second process wrote is here too (on Hugging Face: committed at its exit).
    assert await asyncio.wait_for(arun(name, str(counter), [4, 1]), 120) == [16, 1]
    assert executions(counter) == [1, 2, 3, 4]
    await block.aflush_results()  # listings show committed objects only
    assert len(await block.alist_objects(RESULTS_PREFIX)) == 4 + 2 + 1, (
        "one task result and one flow result from the second process, one flow result now"
    )


async def test_results_stay_in_their_folder_and_paths_are_checked(
    saved_vault: tuple[VaultBlock, str],
) -> None:
    block, _ = saved_vault
    await block.astore_json("notes/a.json", {"atlas": True})
    assert await block.awrite_path("cache/k1", b"result bytes") == f"{RESULTS_PREFIX}/cache/k1"
    assert await block.aread_path("cache/k1") == b"result bytes"
    await block.aflush_results()
    assert await block.alist_objects() == ["notes/a.json", f"{RESULTS_PREFIX}/cache/k1"]
    assert await block.afetch_bytes(f"{RESULTS_PREFIX}/cache/k1") == b"result bytes"
    for bad in ("../escape", "/abs/key", "a\\b", "nul\x00key"):
        with pytest.raises(VaultPathError, match="Prefect result path"):
            await block.awrite_path(bad, b"x")
        with pytest.raises(VaultPathError, match="Prefect result path"):
            await block.aread_path(bad)
    with pytest.raises(TypeError, match="must be bytes"):
        await block.awrite_path("cache/k2", "text")  # type: ignore[arg-type]


async def test_missing_key_raises_file_not_found_and_prefect_sees_no_entry(
    saved_vault: tuple[VaultBlock, str],
) -> None:
    block, _ = saved_vault
    with pytest.raises(FileNotFoundError, match="no Prefect result 'never-written'"):
        await block.aread_path("never-written")
    store = ResultStore(result_storage=block)
    assert await store.aexists("never-written") is False
    await store.awrite(obj={"n": 1}, key="written")
    await block.aflush_results()
    assert await store.aexists("written") is True
    assert (await ResultStore(result_storage=block).aread("written")).result == {"n": 1}


def test_sync_faces_as_prefect_calls_them(tmp_path: Path) -> None:
    block = VaultBlock(provider="local", root=str(tmp_path / "vault"))
    assert block.write_path("k", content=b"v", _sync=True) == f"{RESULTS_PREFIX}/k"
    assert block.read_path("k", _sync=True) == b"v"
    with pytest.raises(FileNotFoundError):
        block.read_path("absent", _sync=True)
    assert block.read_path("k") == b"v", "no loop running: the sync face runs to completion"


async def test_an_unsaved_block_works_within_the_process(tmp_path: Path) -> None:
    """Prefect asks unsaved storage for ``_resolve_path``; the key stays the vault's."""
    block = VaultBlock(provider="local", root=str(tmp_path / "vault"))
    store = ResultStore(result_storage=block)
    await store.awrite(obj=[1, 2], key="unsaved/k")
    assert await block.alist_objects() == [f"{RESULTS_PREFIX}/unsaved/k"]
    assert (await ResultStore(result_storage=block).aread("unsaved/k")).result == [1, 2]


# ---------------------------------------------------------------------- missing keys are cheap


@pytest.fixture
def gcs_proxy(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[GcsPreconditionProxy]:
    env: GcsEnv = request.getfixturevalue("gcs_env")
    proxy = GcsPreconditionProxy(env.emulator_url)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)  # clients made from now on use it
    try:
        yield proxy
    finally:
        proxy.close()


def _downloads(proxy: GcsPreconditionProxy) -> list[str]:
    return [path for method, path in proxy.requests if method == "GET" and "alt=media" in path]


async def test_gcs_missing_key_is_one_metadata_lookup(
    request: pytest.FixtureRequest, tmp_path: Path, gcs_proxy: GcsPreconditionProxy
) -> None:
    block = make_vault("gcs", request, tmp_path)
    await block.awrite_path("present", b"here")
    assert await block.aread_path("present") == b"here"
    assert len(_downloads(gcs_proxy)) == 1
    gcs_proxy.requests.clear()

    store = ResultStore(result_storage=block)
    for _ in range(3):
        with pytest.raises(FileNotFoundError):
            await block.aread_path("absent")
        assert await store.aexists("absent") is False
    assert _downloads(gcs_proxy) == [], "a missing key is never downloaded"
    assert len(gcs_proxy.requests) == 6, "one metadata GET per lookup, nothing else"
    assert all(method == "GET" and "/o/" in path for method, path in gcs_proxy.requests)
    await block.aclose()


async def test_hf_missing_key_is_one_head_request(
    request: pytest.FixtureRequest, tmp_path: Path, hub_env: HubEnv
) -> None:
    block = make_vault("huggingface", request, tmp_path)
    await block.awrite_path("present", b"here")
    await block.aflush_results()
    hub_env.server.requests.clear()
    assert await block.aread_path("present") == b"here"
    resolves = [(m, p) for m, p in hub_env.server.requests if "/resolve/" in p]
    assert [m for m, _ in resolves] == ["HEAD", "GET"], "a hit: HEAD, then a GET at its commit"
    head_commit = hub_env.server.repos[str(block.dataset_id)].head
    assert f"/resolve/{head_commit}/" in resolves[1][1], "the GET is pinned to the HEAD's commit"

    hub_env.server.requests.clear()
    store = ResultStore(result_storage=block)
    for _ in range(3):
        with pytest.raises(FileNotFoundError):
            await block.aread_path("absent")
        assert await store.aexists("absent") is False
    assert [m for m, _ in hub_env.server.requests] == ["HEAD"] * 6, "no GET of a missing key"
    await block.aclose()


# ---------------------------------------------------------------------- Hugging Face commits


async def test_hf_results_of_a_run_share_one_commit(
    request: pytest.FixtureRequest, tmp_path: Path, hub_env: HubEnv, no_timer: None
) -> None:
    block = make_vault("huggingface", request, tmp_path)
    name = f"results-hf-{uuid.uuid4().hex[:8]}"
    await block.asave(name)
    counter = tmp_path / "executions.txt"
    xs = list(range(30))

    assert await asyncio.wait_for(arun(name, str(counter), xs), 180) == [x * x for x in xs]
    assert executions(counter) == xs
    assert hub_commits(hub_env, block) == 0, "nothing committed before the flush"
    # Read-after-write in this process: every result is served from the buffer (all cached).
    assert await asyncio.wait_for(arun(name, str(counter), xs), 180) == [x * x for x in xs]
    assert executions(counter) == xs

    await block.aflush_results()
    assert hub_commits(hub_env, block) == 1, "32 result writes (30 tasks, 2 flow runs), one commit"
    assert hub_env.server.commit_sizes[-1] == 32
    await block.aclose()


async def test_hf_buffer_commits_at_its_size_bound(
    request: pytest.FixtureRequest, tmp_path: Path, hub_env: HubEnv, no_timer: None
) -> None:
    block = make_vault("huggingface", request, tmp_path)
    for i in range(250):
        await block.awrite_path(f"bulk/{i:03d}", b"%d" % i)
    assert hub_commits(hub_env, block) == 2, "two full buffers of 100 were committed by writers"
    await block.aflush_results()
    assert hub_commits(hub_env, block) == 3
    assert hub_env.server.commit_sizes[-3:] == [100, 100, 50]
    assert len(await block.alist_objects(f"{RESULTS_PREFIX}/bulk")) == 250
    await block.aclose()


async def test_hf_buffer_commits_on_its_timer(
    request: pytest.FixtureRequest, tmp_path: Path, hub_env: HubEnv, short_timer: None
) -> None:
    block = make_vault("huggingface", request, tmp_path)
    await block.awrite_path("timed/a", b"a")
    await block.awrite_path("timed/b", b"b")
    deadline = time.monotonic() + 30
    while hub_commits(hub_env, block) == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert hub_commits(hub_env, block) == 1, "the timer committed both without a flush"
    assert hub_env.server.commit_sizes[-1] == 2
    await block.aclose()


EXIT_SCRIPT = """
import asyncio, os, sys
from prefect_atlas import VaultBlock

async def main(name: str, how: str) -> None:
    block = await VaultBlock.aload(name)
    await block.awrite_path("exit/" + how, how.encode())
    assert await block.aread_path("exit/" + how) == how.encode()
    if how == "killed":
        os._exit(0)  # no exit hooks: as if the process were killed

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_hf_buffer_is_committed_at_exit_and_a_kill_loses_only_it(
    request: pytest.FixtureRequest, tmp_path: Path, hub_env: HubEnv
) -> None:
    block = make_vault("huggingface", request, tmp_path)
    name = f"results-hf-{uuid.uuid4().hex[:8]}"
    await block.asave(name)
    script = tmp_path / "exit_script.py"
    script.write_text(EXIT_SCRIPT)
    for how in ("exited", "killed"):
        proc = subprocess.run(
            [sys.executable, str(script), name, how],
            env=_env(),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=SUBPROCESS_TIMEOUT,
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
    assert await block.aread_path("exit/exited") == b"exited"
    with pytest.raises(FileNotFoundError):
        await block.aread_path("exit/killed")  # a lost cache entry: the task would run again
    assert hub_commits(hub_env, block) == 1
    await block.aclose()


async def _established(block: VaultBlock) -> None:
    """One committed result, so the buffer knows the branch head it commits on."""
    await block.awrite_path("first", b"1")
    await block.aflush_results()


async def test_hf_branch_moved_by_another_writer_is_retried_on_the_new_head(
    request: pytest.FixtureRequest, tmp_path: Path, hub_env: HubEnv, no_timer: None
) -> None:
    block = make_vault("huggingface", request, tmp_path)
    await _established(block)
    repo = hub_env.server.repos[str(block.dataset_id)]
    hub_env.server.before_next_commit = lambda repo_id, _: hub_env.server.commit_directly(
        repo_id, {"data/notes/other.json": b"{}"}
    )
    stale = hub_env.server.stale_parent_commits
    await block.awrite_path("second", b"2")
    await block.aflush_results()
    assert hub_env.server.stale_parent_commits - stale == 1, "the stale parent was refused (412)"
    assert repo.files["data/notes/other.json"] == b"{}", "the other writer's file is kept"
    assert repo.files[f"data/{RESULTS_PREFIX}/second"] == b"2"
    assert hub_commits(hub_env, block) == 3, "ours, theirs, ours again on their head"
    await block.aclose()


async def test_hf_result_changed_by_another_writer_is_never_overwritten(
    request: pytest.FixtureRequest, tmp_path: Path, hub_env: HubEnv, no_timer: None
) -> None:
    block = make_vault("huggingface", request, tmp_path)
    repo = hub_env.server.repos[str(block.dataset_id)]
    theirs = f"data/{RESULTS_PREFIX}/contested"
    hub_env.server.before_next_commit = lambda repo_id, _: hub_env.server.commit_directly(
        repo_id, {theirs: b"their result"}
    )
    await block.awrite_path("contested", b"our result")
    await block.awrite_path("untouched", b"ours alone")
    # The buffer's first flush: its parent is the head read before the first write.
    with pytest.raises(VaultObjectExistsError, match="another writer committed 'data/prefect"):
        await block.aflush_results()
    assert hub_commits(hub_env, block) == 2, "theirs, then ours with the untouched result"
    assert repo.files[theirs] == b"their result"
    assert repo.files[f"data/{RESULTS_PREFIX}/untouched"] == b"ours alone"
    assert await block.aread_path("contested") == b"their result"

    # The same bytes from another writer (the same task result) count as written.
    same = f"data/{RESULTS_PREFIX}/same"
    hub_env.server.before_next_commit = lambda repo_id, _: hub_env.server.commit_directly(
        repo_id, {same: b"identical"}
    )
    commits = hub_commits(hub_env, block)
    await block.awrite_path("same", b"identical")
    await block.aflush_results()
    assert hub_commits(hub_env, block) == commits + 1, "only theirs: nothing left for us"
    await block.aclose()


async def test_hf_lost_commit_answer_is_not_committed_twice(
    request: pytest.FixtureRequest, tmp_path: Path, hub_env: HubEnv, no_timer: None
) -> None:
    block = make_vault("huggingface", request, tmp_path)
    await _established(block)
    hub_env.server.lose_next_commit_answers = 1
    requests, stale = hub_env.server.commit_requests, hub_env.server.stale_parent_commits
    await block.awrite_path("lost-answer", b"landed")
    await block.aflush_results()
    assert hub_env.server.commit_requests - requests == 2, "applied (answer lost), then 412"
    assert hub_env.server.stale_parent_commits - stale == 1
    assert hub_commits(hub_env, block) == 2
    assert await block.aread_path("lost-answer") == b"landed"
    await block.aclose()


async def test_hf_result_write_to_a_missing_dataset_fails_at_once(hub_env: HubEnv) -> None:
    block = VaultBlock(
        provider="huggingface",
        dataset_id=f"atlas/never-created-{uuid.uuid4().hex[:8]}",
        endpoint=hub_env.server.endpoint,
        token=SecretStr(HF_TOKEN),
    )
    with pytest.raises(VaultAccessError, match="dataset_id"):
        await block.awrite_path("k", b"v")
    with pytest.raises(VaultAccessError, match="dataset_id"):
        await block.aread_path("k")
    await block.aclose()
