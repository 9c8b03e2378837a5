"""Importing the compat layer costs nothing; configuration comes from 0.2.1's variables or
from saved blocks (``ATLAS_BLOCK``); the small converters and utilities keep 0.2.1's meaning."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from prefect_atlas import DatabaseBlock, DiscordBlock, VaultBlock, compat
from prefect_atlas.compat import (
    AlertChannel,
    AlertLevel,
    Channel,
    health_check_all,
    notifier,
    retry_async,
    settings,
    validate_channel_id,
    validate_youtube_id,
    vault,
)
from prefect_atlas.compat.notifications import as_channel, as_level
from prefect_atlas.testing.discord import DiscordServer
from tests.compat.conftest import CompatEnv

REPO_ROOT = Path(__file__).resolve().parents[2]
HEAVY = ["aiohttp", "pyarrow", "huggingface_hub", "google.cloud.storage", "pgserver", "prefect_gcp"]

PROBE = """
import json, sys
import prefect_atlas
before = set(sys.modules)
import prefect_atlas.compat
from prefect_atlas import _runtime
from prefect_atlas.compat import _config
print(json.dumps({
    "new": sorted(set(sys.modules) - before),
    "heavy": [m for m in %r if m in sys.modules],
    "runtime": len(_runtime._owned),
    "blocks": len(_config._blocks),
    "settings_read": _config._settings is not None,
}))
"""


def test_importing_compat_connects_to_nothing_and_loads_no_block(tmp_path: Path) -> None:
    # Every variable points at nothing, and the vault settings are even invalid: none of it
    # may matter until an object is used.
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(REPO_ROOT),
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "ATLAS_HOME": str(tmp_path / "atlas"),
        "PREFECT_API_URL": "http://127.0.0.1:9/api",
        "ATLAS_BLOCK": "prod",
        "DATABASE_URL": "postgresql://atlas@127.0.0.1:9/atlas",
        "VAULT_PROVIDER": "gcs",
    }
    done = subprocess.run(
        [sys.executable, "-c", PROBE % (HEAVY,)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["heavy"] == []
    assert found["runtime"] == 0 and found["blocks"] == 0 and found["settings_read"] is False
    allowed = ("prefect_atlas.compat", "prefect_atlas.settings", "prefect_atlas.youtube")
    assert [m for m in found["new"] if not m.startswith(allowed)] == []
    assert not (tmp_path / "atlas").exists()  # no spool, no embedded database, no vault folder


def test_a_bad_setting_is_reported_at_first_use_with_the_fix(compat_env: CompatEnv) -> None:
    compat_env.set("VAULT_PROVIDER", "gcs")
    with pytest.raises(ValueError, match="GCS_BUCKET_NAME"):
        vault.store_json("a.json", {})


async def test_atlas_block_loads_the_saved_blocks(
    compat_env: CompatEnv, discord_server: DiscordServer, tmp_path: Path
) -> None:
    hook = discord_server.add_webhook()
    name = f"compat-{tmp_path.name[-20:].lower().replace('_', '-')}"
    await DatabaseBlock(url=SecretStr(compat_env.database_url)).asave(name, overwrite=True)
    await VaultBlock(provider="local", root=str(tmp_path / "saved-vault")).asave(
        name, overwrite=True
    )
    await DiscordBlock(
        ops=SecretStr(discord_server.url(hook)), allowed_hosts=["127.0.0.1"], env_tag="[saved]"
    ).asave(name, overwrite=True)
    compat_env.set("ATLAS_BLOCK", name)
    compat_env.set("DATABASE_URL", "postgresql://atlas@127.0.0.1:9/ignored")

    vault.store_json("from-saved.json", {"ok": True})
    assert (tmp_path / "saved-vault" / "from-saved.json").is_file()
    assert not (compat_env.vault_root / "from-saved.json").exists()
    delivery = await notifier.send("Saved", "block", channel=Channel.OPS)
    assert delivery.delivered
    assert hook.received[0]["embeds"][0]["title"] == "[saved] Saved"
    health = await health_check_all()
    assert health["database"] is True


async def test_atlas_block_naming_a_missing_block_says_how_to_save_it(
    compat_env: CompatEnv,
) -> None:
    compat_env.set("ATLAS_BLOCK", "no-such-compat-block")
    with pytest.raises(ValueError, match="blocks from-env --name no-such-compat-block"):
        await compat.db.health_check()


def test_settings_answer_to_0_2_1_names(compat_env: CompatEnv) -> None:
    compat_env.set("YOUTUBE_API_KEY_POOL_JSON", '["k1", "k2", "k1"]')
    compat_env.set("ENV", "prod")
    assert settings.ENV == "prod" and settings.env == "prod"
    assert settings.VAULT_PROVIDER == "local"
    assert settings.DATABASE_URL.get_secret_value() == compat_env.database_url
    assert settings.COMPLIANCE_MODE is False
    assert settings.api_keys == ["k1", "k2"]
    compat_env.set("COMPLIANCE_MODE", "true")
    assert settings.api_keys == ["k1"]
    with pytest.raises(AttributeError, match="DATABASE_URL"):
        _ = settings.NO_SUCH_SETTING


def test_channels_and_levels_accept_0_2_1_values() -> None:
    assert AlertChannel is Channel
    assert as_channel("watch") is Channel.SURVEILLANCE  # 0.2.1's value of SURVEILLANCE
    assert as_channel("ops") is Channel.OPS
    assert as_level(0xE74C3C) is AlertLevel.CRITICAL  # 0.2.1's members were colours
    assert as_level("warning") is AlertLevel.WARNING
    with pytest.raises(ValueError, match="ALERTS, HUNT, SURVEILLANCE, OPS"):
        as_channel("general")
    with pytest.raises(ValueError, match="INFO, SUCCESS, WARNING, CRITICAL"):
        as_level(0x123456)


def test_id_validators_answer_true_or_false() -> None:
    assert validate_youtube_id("dQw4w9WgXcQ") is True
    assert validate_youtube_id("dQw4w9WgXc") is False
    assert validate_youtube_id(None) is False  # type: ignore[arg-type]
    assert validate_channel_id("UCuAXFkgsw1L7xaCfnd5JJOw") is True
    assert validate_channel_id("@handle") is False


async def test_retry_async_retries_the_listed_exceptions_only() -> None:
    calls: list[str] = []

    @retry_async(max_attempts=3, delay=0.01, exceptions=(ConnectionError,))
    async def flaky() -> str:
        calls.append("try")
        if len(calls) < 3:
            raise ConnectionError("blip")
        return "done"

    @retry_async(max_attempts=5, delay=0.01, exceptions=(ConnectionError,))
    async def broken() -> None:
        calls.append("broken")
        raise KeyError("permanent")

    assert await flaky() == "done"
    assert calls == ["try", "try", "try"]
    with pytest.raises(KeyError):
        await broken()
    assert calls.count("broken") == 1

    @retry_async(max_attempts=2, delay=0.01)
    def sync_always_failing() -> None:
        calls.append("sync")
        raise RuntimeError("still down")

    with pytest.raises(RuntimeError, match="still down"):
        sync_always_failing()
    assert calls.count("sync") == 2


# Atlas 0.2.1's public names, module by module (its README, quickstart and API reference).
NAMES_0_2_1 = {
    "": ["db", "vault", "events", "notifier", "settings", "AlertLevel", "AlertChannel"],
    "db": ["db", "DatabaseManager"],
    "vault": ["vault"],
    "events": ["events", "EventBus"],
    "notifications": ["notifier", "DiscordNotifier", "AlertLevel", "AlertChannel"],
    "config": ["settings", "Settings"],
    "utils": ["retry_async", "validate_youtube_id", "validate_channel_id", "health_check_all"],
}


@pytest.mark.parametrize("module", sorted(NAMES_0_2_1))
def test_every_0_2_1_name_is_there(module: str) -> None:
    import importlib

    found = importlib.import_module("prefect_atlas.compat" + (f".{module}" if module else ""))
    missing = [name for name in NAMES_0_2_1[module] if not hasattr(found, name)]
    assert missing == []


def test_sync_and_async_are_as_in_0_2_1() -> None:
    import inspect

    from prefect_atlas.compat import db, events

    for method in (db.initialize, db.health_check, db.close, events.emit, notifier.send):
        assert inspect.iscoroutinefunction(method), method
    assert inspect.iscoroutinefunction(health_check_all)
    assert hasattr(db.get_connection(), "__aenter__")  # an async context manager
    for name in (
        "store_json",
        "fetch_json",
        "list_files",
        "store_metadata",
        "fetch_metadata",
        "store_transcript",
        "fetch_transcript",
        "store_visual_evidence",
    ):
        method = getattr(vault, name)
        assert callable(method) and not inspect.iscoroutinefunction(method), name
