"""A typo'd bucket or dataset is reported, never read as "absent": ``ahealth`` and read errors."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pydantic import SecretStr

from prefect_atlas import DatabaseBlock, VaultAccessError, VaultBlock
from prefect_atlas.health import acheck_system
from tests.vault.conftest import BUCKET, HF_TOKEN, GcsEnv, HubEnv, make_vault


async def test_health_ok_on_every_provider(vault: VaultBlock) -> None:
    report = await asyncio.wait_for(vault.ahealth(), 60)
    assert report.ok, report.detail
    assert vault.provider in report.detail or "local" in report.detail
    # The sync face returns the same kind of report from sync code.
    again = await asyncio.to_thread(vault.health)
    assert again.ok and again.detail == report.detail


def test_local_health(tmp_path: Path) -> None:
    assert (
        VaultBlock(root=str(tmp_path / "not-yet" / "vault")).health().ok
    )  # created on first write
    existing = tmp_path / "v"
    existing.mkdir()
    report = VaultBlock(root=str(existing)).health()
    assert report.ok and str(existing) in report.detail
    assert list(existing.iterdir()) == [], "the writability probe leaves nothing behind"
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for root in (a_file, a_file / "under"):
        report = VaultBlock(root=str(root)).health()
        assert not report.ok
        assert "`root`" in report.detail


async def test_gcs_missing_bucket_is_unhealthy_and_reads_refuse(
    request: pytest.FixtureRequest,
) -> None:
    env: GcsEnv = request.getfixturevalue("gcs_env")
    vault = VaultBlock(
        provider="gcs", bucket="atlas-typo-bucket", gcp_credentials=env.credentials_block
    )
    try:
        report = await asyncio.wait_for(vault.ahealth(), 60)
        assert not report.ok
        assert "`bucket`" in report.detail and "atlas-typo-bucket" in report.detail
        for call in (
            lambda: vault.afetch_json("a.json"),
            lambda: vault.aexists("a.json"),
            lambda: vault.alist_objects(""),
            lambda: vault.adelete_object("a.json"),
        ):
            with pytest.raises(VaultAccessError, match="`bucket`"):
                await asyncio.wait_for(call(), 60)
        # The real bucket still answers "absent" for a missing object, without raising.
        good = VaultBlock(
            provider="gcs", bucket=BUCKET, prefix="health", gcp_credentials=env.credentials_block
        )
        assert await good.afetch_json("missing.json") is None
        assert await good.aexists("missing.json") is False
        assert await good.adelete_object("missing.json") is False
        await good.aclose()
    finally:
        await vault.aclose()


async def test_hf_missing_dataset_or_revision_is_unhealthy_and_reads_refuse(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    hub: HubEnv = request.getfixturevalue("hub_env")
    missing = VaultBlock(
        provider="huggingface",
        dataset_id="atlas/typo-dataset",
        token=SecretStr(HF_TOKEN),
        endpoint=hub.server.endpoint,
    )
    report = await asyncio.wait_for(missing.ahealth(), 60)
    assert not report.ok
    assert "`dataset_id`" in report.detail and "atlas/typo-dataset" in report.detail
    assert HF_TOKEN not in report.detail
    for call in (
        lambda: missing.afetch_json("a.json"),
        lambda: missing.aexists("a.json"),
        lambda: missing.alist_objects(""),
        lambda: missing.adelete_object("a.json"),
    ):
        with pytest.raises(VaultAccessError, match="`dataset_id`"):
            await asyncio.wait_for(call(), 60)
    good = make_vault("huggingface", request, tmp_path)
    bad_revision = good.model_copy(update={"revision": "no-such-branch"})
    report = await asyncio.wait_for(bad_revision.ahealth(), 60)
    assert not report.ok and "`revision`" in report.detail
    with pytest.raises(VaultAccessError, match="`revision`"):
        await asyncio.wait_for(bad_revision.aexists("a.json"), 60)
    assert await good.aexists("a.json") is False  # an existing dataset: absent is absent


async def test_system_health_reports_a_typo_bucket(request: pytest.FixtureRequest) -> None:
    env: GcsEnv = request.getfixturevalue("gcs_env")
    vault = VaultBlock(
        provider="gcs", bucket="atlas-typo-bucket", gcp_credentials=env.credentials_block
    )
    try:
        # The database is unreachable on purpose (port 1): only the vault's line matters here.
        report = await acheck_system(
            DatabaseBlock(url=SecretStr("postgresql://u:pw@127.0.0.1:1/db"), timeout=2),
            vault,
            timeout=20,
        )
    finally:
        await vault.aclose()
    component = next(c for c in report.components if c.component == "vault")
    assert not component.ok, component.detail
    assert "atlas-typo-bucket" in component.detail and "`bucket`" in component.detail
