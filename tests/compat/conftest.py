"""Fixtures of the compat tests: Atlas 0.2.1's environment variables on real local servers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from prefect_atlas import compat

# Variables that would leak the developer's own configuration into a test.
SEED_VARIABLES = [
    "DATABASE_URL",
    "VAULT_PROVIDER",
    "VAULT_ROOT",
    "HF_DATASET_ID",
    "HF_TOKEN",
    "HF_ENDPOINT",
    "GCS_BUCKET_NAME",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "DISCORD_WEBHOOK_ALERTS",
    "DISCORD_WEBHOOK_HUNT",
    "DISCORD_WEBHOOK_SURVEILLANCE",
    "DISCORD_WEBHOOK_OPS",
    "ATLAS_BLOCK",
    "ATLAS_DISCORD_ALLOWED_HOSTS",
    "ATLAS_DISCORD_BLOCK",
    "ATLAS_SPOOL_VAULT",
    "ENV",
]


@dataclass
class CompatEnv:
    database_url: str
    vault_root: Path
    monkeypatch: pytest.MonkeyPatch

    def set(self, name: str, value: str) -> None:
        self.monkeypatch.setenv(name, value)
        compat.reset()


@pytest.fixture
async def compat_env(
    monkeypatch: pytest.MonkeyPatch, database_url: str, tmp_path: Path
) -> AsyncIterator[CompatEnv]:
    """0.2.1's variables pointing at this test's database and a local vault folder."""
    for name in SEED_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("VAULT_PROVIDER", "local")
    monkeypatch.setenv("VAULT_ROOT", str(tmp_path / "vault"))
    compat.reset()
    try:
        yield CompatEnv(database_url, tmp_path / "vault", monkeypatch)
    finally:
        await compat.db.close()
        await compat.notifier.close()
        compat.reset()
