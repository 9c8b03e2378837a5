"""AtlasSettings: Atlas 0.2's environment variables, validated with errors that name them."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from prefect_atlas.settings import AtlasSettings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "DATABASE_URL",
        "YOUTUBE_API_KEY_POOL_JSON",
        "VAULT_PROVIDER",
        "HF_DATASET_ID",
        "HF_TOKEN",
        "GCS_BUCKET_NAME",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "COMPLIANCE_MODE",
        "ENV",
        "DISCORD_WEBHOOK_ALERTS",
        "DISCORD_WEBHOOK_HUNT",
        "DISCORD_WEBHOOK_SURVEILLANCE",
        "DISCORD_WEBHOOK_OPS",
    ):
        monkeypatch.delenv(name, raising=False)


def test_defaults() -> None:
    s = AtlasSettings()
    assert s.database_url is None and s.vault_provider == "local" and s.env == "dev"
    assert s.retention_days is None and s.discord_webhooks() == {}


def test_reads_the_seed_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:pw-123@h/db")
    monkeypatch.setenv("YOUTUBE_API_KEY_POOL_JSON", '["k-one", "k-two"]')
    monkeypatch.setenv("VAULT_PROVIDER", "huggingface")
    monkeypatch.setenv("HF_DATASET_ID", "org/vault")
    monkeypatch.setenv("HF_TOKEN", "hf_secret_token")
    monkeypatch.setenv("COMPLIANCE_MODE", "true")
    monkeypatch.setenv("ENV", "prod")
    monkeypatch.setenv("DISCORD_WEBHOOK_ALERTS", "https://discord.com/api/webhooks/1/wh-T0KEN-xyz")
    s = AtlasSettings()
    assert s.database_url is not None and s.database_url.get_secret_value().endswith("/db")
    assert [k.get_secret_value() for k in s.youtube_api_key_pool_json] == ["k-one", "k-two"]
    assert s.retention_days == 30
    pool = s.api_key_pool()
    assert len(pool) == 1 and pool.get() == "k-one"  # compliance: first key only
    assert list(s.discord_webhooks()) == ["alerts"]
    for secret in ("pw-123", "hf_secret_token", "k-one", "wh-T0KEN-xyz"):
        assert secret not in repr(s) and secret not in s.model_dump_json()


def test_huggingface_without_dataset_and_token_names_both(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAULT_PROVIDER", "huggingface")
    with pytest.raises(
        ValidationError, match="VAULT_PROVIDER=huggingface needs HF_DATASET_ID and HF_TOKEN"
    ):
        AtlasSettings()


def test_gcs_without_bucket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAULT_PROVIDER", "gcs")
    with pytest.raises(ValidationError, match="GCS_BUCKET_NAME"):
        AtlasSettings()


def test_bad_values_name_the_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VAULT_PROVIDER", "s3")
    with pytest.raises(ValidationError, match="vault_provider"):
        AtlasSettings()
    monkeypatch.setenv("VAULT_PROVIDER", "gcs")
    monkeypatch.setenv("GCS_BUCKET_NAME", "b")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    with pytest.raises(ValidationError, match="not a file"):
        AtlasSettings()
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS")
    monkeypatch.setenv("YOUTUBE_API_KEY_POOL_JSON", "not json")
    with pytest.raises(Exception, match=r"YOUTUBE_API_KEY_POOL_JSON|youtube_api_key_pool_json"):
        AtlasSettings()


def test_env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("ENV=staging\nVAULT_PROVIDER=gcs\nGCS_BUCKET_NAME=from-file\n")
    monkeypatch.setenv("ENV", "prod")  # the environment wins over the file
    s = AtlasSettings.from_env_file(env_file)
    assert s.env == "prod" and s.gcs_bucket_name == "from-file"


def test_env_example_is_complete() -> None:
    example = (Path(__file__).resolve().parents[2] / "ENV.example").read_text()
    for name in AtlasSettings.model_fields:
        assert name.upper() in example, f"{name.upper()} missing from ENV.example"


def test_read_one_setting_without_validating_the_others(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from pydantic import ValidationError

    from prefect_atlas.settings import read

    monkeypatch.setenv("VAULT_PROVIDER", "gcs")  # no GCS_BUCKET_NAME: the whole model is invalid
    monkeypatch.delenv("GCS_BUCKET_NAME", raising=False)
    monkeypatch.setenv("ATLAS_HOME", f"  {tmp_path}  ")  # values are stripped
    with pytest.raises(ValidationError):
        AtlasSettings()
    assert read("atlas_home") == str(tmp_path)
    monkeypatch.delenv("ATLAS_SPOOL_VAULT", raising=False)
    monkeypatch.setenv("atlas_spool_vault", "prod")  # names are case-insensitive
    assert read("atlas_spool_vault") == "prod"
    monkeypatch.setenv("atlas_spool_vault", "   ")
    assert read("atlas_spool_vault") is None  # empty is unset, as in the model
    with pytest.raises(KeyError, match="not an Atlas setting"):
        read("atlas_hom")
