"""Provider-specific guarantees: atomic local writes, retries, refusals, secrets, validation."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from prefect_atlas import MissingExtraError, VaultAccessError, VaultBlock
from tests.vault.conftest import HF_TOKEN, GcsEnv, HubEnv, make_vault

# ---------------------------------------------------------------------- local

_WRITER = """
import sys
from prefect_atlas import VaultBlock
vault = VaultBlock(root=sys.argv[1])
vault.store_bytes("big/evidence.bin", b"\\xab" * (256 * 1024 * 1024))
print("finished")
"""


def test_interrupted_local_write_leaves_no_partial_file(tmp_path: Path) -> None:
    root = tmp_path / "vault"
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PREFECT_API_URL": ""},
    )
    folder = root / "big"
    deadline = time.monotonic() + 120
    killed = False
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if folder.is_dir() and any(
                p.name.endswith(".tmp") and p.stat().st_size > 0 for p in folder.iterdir()
            ):
                proc.send_signal(signal.SIGKILL)
                killed = True
                break
            time.sleep(0.001)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    assert killed, (
        f"the writer finished before it could be interrupted: {proc.stderr.read()[-2000:]!r}"  # type: ignore[union-attr]
    )
    target = folder / "evidence.bin"
    assert not target.exists(), "a partially written file is visible under its final name"
    vault = VaultBlock(root=str(root))
    assert vault.list_objects() == []
    assert vault.fetch_bytes("big/evidence.bin") is None


def test_local_root_defaults_to_atlas_home() -> None:
    assert VaultBlock().local_root() == Path(os.environ["ATLAS_HOME"]).resolve() / "vault"


# ---------------------------------------------------------------------- huggingface


async def test_hf_commit_rate_limited_then_retried(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    hub: HubEnv = request.getfixturevalue("hub_env")
    vault = make_vault("huggingface", request, tmp_path)
    hub.server.rate_limit_next_commits = 1
    before_rejected, before_requests = hub.server.rejected_commits, hub.server.commit_requests
    items = [(f"rl/{i}.json", {"i": i}) for i in range(3)]
    assert await asyncio.wait_for(vault.astore_batch(items), 60) == [p for p, _ in items]
    assert hub.server.rejected_commits - before_rejected == 1
    assert hub.server.commit_requests - before_requests == 2
    assert await vault.alist_objects("rl") == ["rl/0.json", "rl/1.json", "rl/2.json"]


async def test_hf_batches_commit_at_most_100_files(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    hub: HubEnv = request.getfixturevalue("hub_env")
    vault = make_vault("huggingface", request, tmp_path)
    start = len(hub.server.commit_sizes)
    await vault.astore_batch([(f"many/{i:03d}.json", {"i": i}) for i in range(250)])
    assert hub.server.commit_sizes[start:] == [100, 100, 50]


async def test_hf_bad_token_fails_at_once_without_leaking(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    hub: HubEnv = request.getfixturevalue("hub_env")
    good = make_vault("huggingface", request, tmp_path)
    wrong = "hf_wrong_secret_token_778899"
    vault = good.model_copy(update={"token": SecretStr(wrong)})
    before = hub.server.commit_requests
    with pytest.raises(VaultAccessError, match="401") as info:
        await vault.astore_json("x.json", {"a": 1})
    assert hub.server.commit_requests == before  # refused at preupload, never retried into a commit
    text = (
        f"{info.value!s} {info.value!r} {vault!r} {vault.model_dump_json()} "
        f"{vault.model_dump(mode='json')}"
    )
    for secret in (wrong, HF_TOKEN):
        assert secret not in text
    assert "`token`" in str(info.value)


async def test_hf_unknown_dataset_is_permanent(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    hub: HubEnv = request.getfixturevalue("hub_env")
    vault = VaultBlock(
        provider="huggingface",
        dataset_id="atlas/never-created",
        token=SecretStr(HF_TOKEN),
        endpoint=hub.server.endpoint,
    )
    with pytest.raises(VaultAccessError, match="dataset_id"):
        await asyncio.wait_for(vault.astore_json("x.json", {"a": 1}), 30)


# ---------------------------------------------------------------------- gcs


async def test_gcs_uses_the_saved_gcp_credentials_block(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    env: GcsEnv = request.getfixturevalue("gcs_env")
    before = env.token_server.requests
    vault = make_vault("gcs", request, tmp_path)
    await vault.astore_json("creds.json", {"ok": True})
    assert env.token_server.requests > before  # the service account's token came from our endpoint
    assert await vault.afetch_json("creds.json") == {"ok": True}
    await vault.aclose()


async def test_gcs_missing_bucket_is_permanent(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    env: GcsEnv = request.getfixturevalue("gcs_env")
    vault = VaultBlock(
        provider="gcs", bucket="no-such-bucket", gcp_credentials=env.credentials_block
    )
    with pytest.raises(VaultAccessError, match="bucket"):
        await asyncio.wait_for(vault.astore_json("x.json", {"a": 1}), 30)


async def test_gcs_service_account_info_field(request: pytest.FixtureRequest) -> None:
    from tests.vault._servers import service_account_info

    env: GcsEnv = request.getfixturevalue("gcs_env")
    info = service_account_info(env.token_server.url)
    vault = VaultBlock(
        provider="gcs", bucket="atlas-vault-test", prefix="sa-info", service_account_info=info
    )
    assert "PRIVATE KEY" not in vault.model_dump_json() + repr(vault)
    await vault.astore_json("k.json", {"k": 1})
    assert await vault.afetch_json("k.json") == {"k": 1}


async def test_gcs_batch_above_the_default_connection_pool(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """More than 10 uploads in flight: the client's pool and our thread pool hold them all."""
    vault = make_vault("gcs", request, tmp_path, max_concurrency=11)
    items = [(f"wide/{i:02d}.json", {"i": i}) for i in range(22)]
    try:
        assert await asyncio.wait_for(vault.astore_batch(items), 120) == [p for p, _ in items]
        provider = vault._provider
        assert provider is not None
        client = provider._client  # type: ignore[attr-defined]
        adapter = client._http.get_adapter("https://storage.googleapis.com/")
        assert adapter._pool_maxsize == 11
        assert provider._pool._max_workers == 11  # type: ignore[attr-defined]
        assert [await vault.afetch_json(p) for p, _ in items] == [o for _, o in items]
    finally:
        await vault.aclose()


# ---------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"provider": "gcs"}, "`bucket`"),
        ({"provider": "gcs", "bucket": "Bad Bucket!"}, "`bucket`"),
        ({"provider": "huggingface"}, "`dataset_id`"),
        ({"provider": "huggingface", "dataset_id": "no-owner"}, "`dataset_id`"),
        ({"provider": "s3"}, "provider"),
        ({"prefix": "../up"}, "prefix"),
        ({"endpoint": "huggingface.co"}, "endpoint"),
    ],
)
def test_missing_or_bad_fields_are_named(kwargs: dict[str, str], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        VaultBlock(**kwargs)


def test_prefix_is_normalised() -> None:
    assert VaultBlock(provider="gcs", bucket="atlas-b", prefix="/runs//a/").prefix == "runs/a"


def test_missing_extra_names_it(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['huggingface_hub'] = None\n"
        "from prefect_atlas import VaultBlock, MissingExtraError\n"
        "v = VaultBlock(provider='huggingface', dataset_id='a/b')\n"
        "try:\n    v.store_json('a.json', {})\nexcept MissingExtraError as exc:\n    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PREFECT_API_URL": ""},
        check=False,
    )
    assert "prefect-atlas[hf]" in out.stdout, out.stderr[-2000:]
    assert issubclass(MissingExtraError, ImportError)
