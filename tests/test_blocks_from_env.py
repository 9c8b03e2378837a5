"""`prefect-atlas blocks from-env`: the three blocks (and GCS credentials) from env variables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prefect_atlas import DatabaseBlock, DiscordBlock, VaultBlock
from prefect_atlas._blocks import resolve_block
from prefect_atlas.cli.blocks import save_from_env
from prefect_atlas.settings import AtlasSettings
from tests.vault._servers import service_account_info

ENV_NAMES = (
    "DATABASE_URL",
    "VAULT_PROVIDER",
    "VAULT_ROOT",
    "HF_DATASET_ID",
    "HF_TOKEN",
    "HF_ENDPOINT",
    "GCS_BUCKET_NAME",
    "GCS_PREFIX",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "ENV",
    "DISCORD_WEBHOOK_ALERTS",
    "DISCORD_WEBHOOK_HUNT",
    "DISCORD_WEBHOOK_SURVEILLANCE",
    "DISCORD_WEBHOOK_OPS",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)


async def test_gcs_settings_make_credentials_and_vault_blocks(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    key_file = tmp_path / "sa.json"
    key_file.write_text(json.dumps(service_account_info("http://127.0.0.1:9/token")))
    monkeypatch.setenv("DATABASE_URL", "postgresql://atlas:pw-env@db.internal:5432/atlas")
    monkeypatch.setenv("VAULT_PROVIDER", "gcs")
    monkeypatch.setenv("GCS_BUCKET_NAME", "atlas-vault")
    monkeypatch.setenv("GCS_PREFIX", "prod/")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    monkeypatch.setenv("ENV", "prod")
    monkeypatch.setenv("DISCORD_WEBHOOK_OPS", "https://discord.com/api/webhooks/123/tok-env-secret")
    lines = await save_from_env(AtlasSettings(), "fromenv-gcs", overwrite=False)
    assert len(lines) == 4 and any("GCP Credentials" in line or "Gcp" in line for line in lines)

    db = await resolve_block(DatabaseBlock, "fromenv-gcs")
    assert db.url is not None and "db.internal" in db.url.get_secret_value()
    vault = await resolve_block(VaultBlock, "fromenv-gcs")
    assert (vault.provider, vault.bucket, vault.prefix, vault.gcp_credentials) == (
        "gcs",
        "atlas-vault",
        "prod",
        "fromenv-gcs",
    )
    discord = await resolve_block(DiscordBlock, "fromenv-gcs")
    assert discord.env_tag == "[prod]" and [c.value for c in discord.configured_channels] == ["ops"]

    with pytest.raises(FileExistsError, match="--overwrite"):
        await save_from_env(AtlasSettings(), "fromenv-gcs", overwrite=False)
    monkeypatch.setenv("ENV", "staging")
    await save_from_env(AtlasSettings(), "fromenv-gcs", overwrite=True)
    assert (await resolve_block(DiscordBlock, "fromenv-gcs")).env_tag == "[staging]"


async def test_huggingface_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAULT_PROVIDER", "huggingface")
    monkeypatch.setenv("HF_DATASET_ID", "atlas/vault")
    monkeypatch.setenv("HF_TOKEN", "hf_from_env_secret")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    await save_from_env(AtlasSettings(), "fromenv-hf", overwrite=True)
    vault = await resolve_block(VaultBlock, "fromenv-hf")
    assert vault.provider == "huggingface" and vault.dataset_id == "atlas/vault"
    assert vault.token is not None and vault.token.get_secret_value() == "hf_from_env_secret"
    assert vault.endpoint == "http://127.0.0.1:9"
    assert (await resolve_block(DatabaseBlock, "fromenv-hf")).embedded


def test_nothing_is_saved_when_settings_are_invalid(monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess
    import sys

    monkeypatch.setenv("VAULT_PROVIDER", "huggingface")
    out = subprocess.run(
        [sys.executable, "-m", "prefect_atlas", "blocks", "from-env", "--name", "never"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 1
    assert "HF_DATASET_ID and HF_TOKEN" in out.stderr
