"""Atlas settings from the environment (the variables Atlas 0.2 used), validated once.

``AtlasSettings()`` reads the process environment; ``AtlasSettings.from_env_file(".env")``
also reads a dotenv file (``ENV.example`` in the repository lists every variable). Secrets are
``SecretStr``. Provider-specific requirements are checked together, so one error names every
variable that is missing for the chosen vault provider.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from prefect_atlas.youtube.keys import ApiKeyPool

VaultProvider = Literal["local", "gcs", "huggingface"]
"""The vault providers a ``VAULT_PROVIDER`` variable may name."""

# Compliance mode tells consumers to keep raw data no longer than this.
COMPLIANCE_RETENTION_DAYS = 30
"""Days consumers may keep raw data when ``COMPLIANCE_MODE`` is on."""


class AtlasSettings(BaseSettings):
    """Every environment variable prefect-atlas reads (names are case-insensitive)."""

    model_config = SettingsConfigDict(
        env_prefix="",
        case_sensitive=False,
        extra="ignore",
        hide_input_in_errors=True,
        env_ignore_empty=True,
    )

    database_url: SecretStr | None = Field(
        default=None, description="PostgreSQL URL; unset means the embedded PostgreSQL."
    )
    youtube_api_key_pool_json: list[SecretStr] = Field(
        default_factory=list, description='YouTube Data API keys as a JSON list: ["key1", "key2"].'
    )
    vault_provider: VaultProvider = Field(
        default="local", description="Where the vault stores objects."
    )
    vault_root: Path | None = Field(
        default=None, description="Folder of the local vault (default ATLAS_HOME/vault)."
    )
    hf_dataset_id: str | None = Field(
        default=None, description="Hugging Face dataset, e.g. user/atlas-vault."
    )
    hf_token: SecretStr | None = Field(
        default=None, description="Hugging Face token with write access."
    )
    hf_endpoint: str | None = Field(
        default=None, description="Hugging Face Hub endpoint (default huggingface.co)."
    )
    gcs_bucket_name: str | None = Field(
        default=None, description="Google Cloud Storage bucket of the vault."
    )
    gcs_prefix: str = Field(default="", description="Folder inside the bucket.")
    google_application_credentials: Path | None = Field(
        default=None, description="Path to a service-account JSON key file."
    )
    compliance_mode: bool = Field(
        default=False, description="Use only the first API key; signal 30-day retention."
    )
    env: str = Field(default="dev", description="Environment tag shown in alert titles, e.g. prod.")
    discord_webhook_alerts: SecretStr | None = Field(
        default=None, description="Webhook of the ALERTS channel."
    )
    discord_webhook_hunt: SecretStr | None = Field(
        default=None, description="Webhook of the HUNT channel."
    )
    discord_webhook_surveillance: SecretStr | None = Field(
        default=None, description="Webhook of the SURVEILLANCE channel."
    )
    discord_webhook_ops: SecretStr | None = Field(
        default=None, description="Webhook of the OPS channel."
    )

    atlas_home: Path | None = Field(
        default=None, description="Folder of Atlas's local state (default ~/.prefect-atlas)."
    )
    atlas_alert_memory_database: str | None = Field(
        default=None,
        description=(
            "Name of a saved Atlas Database block that keeps the failure hooks' alert memory "
            "(and the shared Discord budget) for every worker host; unset: SQLite under ATLAS_HOME."
        ),
    )
    storage_emulator_host: str | None = Field(
        default=None,
        description="GCS emulator URL (google-cloud-storage's own variable), for tests.",
    )
    atlas_discord_block: str | None = Field(
        default=None,
        description=(
            "Name of the saved Atlas Discord block that failure hooks and the event store alert "
            "through (hooks fall back to 'default')."
        ),
    )
    atlas_spool_vault: str | None = Field(
        default=None,
        description=(
            "Name of a saved Atlas Vault block that keeps spooled events when PostgreSQL is "
            "unreachable as a worker exits (set it on Docker/Kubernetes work pools)."
        ),
    )

    atlas_event_retention_days: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Days the event log keeps a partition in PostgreSQL; older whole partitions are "
            "archived to the vault as Parquet and dropped by the maintenance flow. Unset: 30 "
            "in compliance mode, else no retention."
        ),
    )

    atlas_block: str | None = Field(
        default=None,
        description=(
            "Name under which prefect_atlas.compat loads the saved Atlas Database, Vault and "
            "Discord blocks (e.g. prod); unset: the compat objects are built from these settings."
        ),
    )
    atlas_discord_allowed_hosts: str = Field(
        default="",
        description=(
            "Comma-separated hosts other than Discord's that the DISCORD_WEBHOOK_* URLs may point "
            "at (an egress proxy, a test server on 127.0.0.1); used by prefect_atlas.compat."
        ),
    )

    @classmethod
    def from_env_file(cls, path: str | Path) -> AtlasSettings:
        """Settings from the environment, completed by a dotenv file (environment wins)."""
        return cls(_env_file=str(path))

    @field_validator("env")
    @classmethod
    def _env_tag(cls, value: str) -> str:
        value = value.strip()
        if not value or len(value) > 20 or not value.replace("-", "").replace("_", "").isalnum():
            raise ValueError(
                "ENV must be a short tag of letters, digits, '-' or '_' (e.g. dev, staging, prod)"
            )
        return value

    @field_validator("google_application_credentials")
    @classmethod
    def _credentials_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(
                f"GOOGLE_APPLICATION_CREDENTIALS points at {value}, which is not a file: "
                "give the path of a service-account JSON key"
            )
        return value

    @model_validator(mode="after")
    def _provider_requirements(self) -> AtlasSettings:
        missing: list[str] = []
        if self.vault_provider == "huggingface":
            if not self.hf_dataset_id:
                missing.append("HF_DATASET_ID")
            if self.hf_token is None:
                missing.append("HF_TOKEN")
        elif self.vault_provider == "gcs" and not self.gcs_bucket_name:
            missing.append("GCS_BUCKET_NAME")
        if missing:
            raise ValueError(
                f"VAULT_PROVIDER={self.vault_provider} needs {' and '.join(missing)}: "
                "set them, or choose another VAULT_PROVIDER (local, gcs, huggingface)"
            )
        return self

    @model_validator(mode="after")
    def _retention_within_compliance(self) -> AtlasSettings:
        days = self.atlas_event_retention_days
        if self.compliance_mode and days is not None and days > COMPLIANCE_RETENTION_DAYS:
            raise ValueError(
                f"ATLAS_EVENT_RETENTION_DAYS={days} keeps events longer than COMPLIANCE_MODE "
                f"allows ({COMPLIANCE_RETENTION_DAYS} days): lower it or unset it"
            )
        return self

    @property
    def retention_days(self) -> int | None:
        """How long raw data is kept, in days: ``ATLAS_EVENT_RETENTION_DAYS`` when set, else 30
        in compliance mode, else None (no limit). The event log's maintenance flow enforces it."""
        if self.atlas_event_retention_days is not None:
            return self.atlas_event_retention_days
        return COMPLIANCE_RETENTION_DAYS if self.compliance_mode else None

    def api_key_pool(self) -> ApiKeyPool:
        """The YouTube key pool (only the first key in compliance mode)."""
        return ApiKeyPool(self.youtube_api_key_pool_json, compliance_mode=self.compliance_mode)

    def discord_webhooks(self) -> dict[str, SecretStr]:
        """The configured webhooks by channel name (alerts, hunt, surveillance, ops)."""
        hooks = {
            "alerts": self.discord_webhook_alerts,
            "hunt": self.discord_webhook_hunt,
            "surveillance": self.discord_webhook_surveillance,
            "ops": self.discord_webhook_ops,
        }
        return {name: url for name, url in hooks.items() if url is not None}


def read(name: str) -> str | None:
    """One variable by its :class:`AtlasSettings` field name, without validating the others.

    Why beside the model: some variables are read on every call by code that must keep
    working when an unrelated one is wrong (``ATLAS_HOME`` while ``VAULT_PROVIDER=gcs`` lacks
    its bucket). The names and the case-insensitive, empty-is-unset rules are the model's.
    """
    if name not in AtlasSettings.model_fields:
        raise KeyError(
            f"{name!r} is not an Atlas setting; see prefect_atlas.settings.AtlasSettings"
        )
    wanted = name.upper()
    for key, value in os.environ.items():
        if key.upper() == wanted and value.strip():
            return value.strip()
    return None
