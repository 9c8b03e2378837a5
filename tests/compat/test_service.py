"""A small service written the way Atlas 0.2.1's docs show, run unchanged but for its imports.

It runs in its own process, configured only by 0.2.1's environment variables: PostgreSQL
(``DATABASE_URL``), a Hugging Face vault (``VAULT_PROVIDER=huggingface``, ``HF_DATASET_ID``,
``HF_TOKEN``, and the Hub client's own ``HF_ENDPOINT`` pointing at the local Hub-compatible
server), Discord (``DISCORD_WEBHOOK_OPS``, ``ENV``) and the YouTube keys. Beside them only
the process's homes and ``ATLAS_DISCORD_ALLOWED_HOSTS`` (the local Discord-like server is
plain http on 127.0.0.1, which a webhook URL may only be when its host is listed).
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from prefect_atlas import DatabaseBlock, VaultBlock
from prefect_atlas.testing.discord import DiscordServer
from prefect_atlas.vault import layout
from tests.vault._servers import LoopThread
from tests.vault.hf_server import HubServer

REPO_ROOT = Path(__file__).resolve().parents[2]
HF_TOKEN = "hf_compat_service_token_7d1e"
DATASET = "pleiades/atlas-vault"
VIDEO = "dQw4w9WgXcQ"

# The service as a 0.2.1 user wrote it. Only the two import lines change when it is ported.
SERVICE_0_2_1 = '''\
"""tracker: records a discovered video in the hot index, the vault and the event log."""

import asyncio
import datetime
import json
import sys

from atlas import db, vault, events, notifier, settings, AlertLevel, AlertChannel
from atlas.utils import validate_youtube_id, retry_async, health_check_all


@retry_async(max_attempts=3, delay=0.1)
async def index_video(video_id: str, metadata: dict) -> None:
    async with db.get_connection() as conn:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS tracked (id TEXT PRIMARY KEY, title TEXT NOT NULL)"
        )
        await conn.execute(
            "INSERT INTO tracked (id, title) VALUES (%s, %s) ON CONFLICT (id) DO NOTHING",
            (video_id, metadata["title"]),
        )


async def track(video_id: str) -> dict:
    if not validate_youtube_id(video_id):
        raise ValueError(f"not a video id: {video_id}")
    metadata = {"id": video_id, "title": "Never Gonna Give You Up", "tags": ["music"]}
    vault.store_metadata(video_id, metadata)
    vault.store_transcript(video_id, {"text": "We're no strangers to love", "segments": []})
    vault.store_visual_evidence(video_id, [(0, b"frame-0"), (1, b"frame-1")])
    await index_video(video_id, metadata)
    await events.emit("video.discovered", video_id, {"title": metadata["title"]})
    await notifier.send(
        "Video tracked",
        f"{metadata['title']} ({video_id})",
        channel=AlertChannel.OPS,
        level=AlertLevel.SUCCESS,
        fields={"video_id": video_id},
    )
    today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    report = {
        "metadata": vault.fetch_metadata(video_id, today),
        "transcript": vault.fetch_transcript(video_id),
        "files": vault.list_files("metadata/"),
        "keys": settings.api_keys,
        "env": settings.ENV,
        "health": await health_check_all(),
    }
    await db.close()
    return report


if __name__ == "__main__":
    print(json.dumps(asyncio.run(track(sys.argv[1]))))
'''

PORTED_IMPORTS = {
    "from atlas import": "from prefect_atlas.compat import",
    "from atlas.utils import": "from prefect_atlas.compat.utils import",
}


def ported_service() -> str:
    ported = SERVICE_0_2_1
    for old, new in PORTED_IMPORTS.items():
        ported = ported.replace(old, new)
    changed = [
        line[1:]
        for line in difflib.unified_diff(SERVICE_0_2_1.splitlines(), ported.splitlines(), n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    assert len(changed) == 4 and all(line.startswith("from ") for line in changed), changed
    return ported


@pytest.fixture
def hub() -> Iterator[HubServer]:
    loop = LoopThread()
    server = HubServer(token=HF_TOKEN)
    loop.run(server.start())
    server.create_repo(DATASET)
    try:
        yield server
    finally:
        loop.run(server.stop())
        loop.close()


@pytest.fixture
async def hub_vault(hub: HubServer) -> AsyncIterator[VaultBlock]:
    block = VaultBlock(
        provider="huggingface",
        dataset_id=DATASET,
        token=SecretStr(HF_TOKEN),
        endpoint=hub.endpoint,
    )
    try:
        yield block
    finally:
        await block.aclose()


def seed_environment(
    database_url: str, hub: HubServer, webhook: str, tmp_path: Path
) -> dict[str, str]:
    env = {
        # the process itself
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(REPO_ROOT),
        "ATLAS_HOME": str(tmp_path / "atlas-home"),
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "HF_HOME": str(tmp_path / "hf-home"),  # the Hub client's cache, not the user's
        # Atlas 0.2.1's variables
        "DATABASE_URL": database_url,
        "YOUTUBE_API_KEY_POOL_JSON": '["key-one", "key-two"]',
        "COMPLIANCE_MODE": "true",
        "ENV": "test",
        "VAULT_PROVIDER": "huggingface",
        "HF_DATASET_ID": DATASET,
        "HF_TOKEN": HF_TOKEN,
        "HF_ENDPOINT": hub.endpoint,
        "DISCORD_WEBHOOK_OPS": webhook,
        "ATLAS_DISCORD_ALLOWED_HOSTS": "127.0.0.1",
    }
    return env


async def test_a_0_2_1_service_runs_on_the_compat_layer(
    database_url: str,
    db: DatabaseBlock,
    hub: HubServer,
    hub_vault: VaultBlock,
    discord_server: DiscordServer,
    tmp_path: Path,
) -> None:
    hook = discord_server.add_webhook()
    script = tmp_path / "tracker.py"
    script.write_text(ported_service())
    env = seed_environment(database_url, hub, discord_server.url(hook), tmp_path)

    done = subprocess.run(
        [sys.executable, str(script), VIDEO],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])

    # What the service read back through the compat layer.
    metadata = {"id": VIDEO, "title": "Never Gonna Give You Up", "tags": ["music"]}
    assert report["metadata"] == metadata
    assert report["transcript"] == {"text": "We're no strangers to love", "segments": []}
    today = dt.datetime.now(dt.UTC).date().isoformat()
    assert report["files"] == [f"metadata/{today}/{VIDEO}.json"]
    assert report["keys"] == ["key-one"]  # compliance mode: the first key only
    assert report["env"] == "test"
    assert report["health"] == {
        "database": True,
        "event spool": True,
        "vault": True,
        "discord": True,
    }

    # The objects in the Hugging Face dataset.
    assert await hub_vault.afetch_json(layout.metadata_path(VIDEO, today)) == metadata
    assert await hub_vault.afetch_json(layout.transcript_path(VIDEO)) == report["transcript"]
    assert await hub_vault.afetch_visuals(VIDEO) == [
        {"frame_index": 0, "image": b"frame-0"},
        {"frame_index": 1, "image": b"frame-1"},
    ]

    # The rows in PostgreSQL: the service's own table and the event log.
    assert await db.afetch_all("SELECT id, title FROM tracked") == [(VIDEO, metadata["title"])]
    assert await db.afetch_all(
        "SELECT event_type, entity_id, payload, version FROM atlas.events"
    ) == [("video.discovered", VIDEO, {"title": metadata["title"]}, 1)]

    # The alert as the Discord-like server received it.
    assert len(hook.received) == 1
    embed = hook.received[0]["embeds"][0]
    assert embed["title"] == "[test] Video tracked"
    assert embed["description"] == f"Never Gonna Give You Up ({VIDEO})"
    assert [(f["name"], f["value"]) for f in embed["fields"]] == [("video_id", VIDEO)]
