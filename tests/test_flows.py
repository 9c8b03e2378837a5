"""The reference flows end to end on real parts (the e2e test runs ingest through a worker)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from pydantic import SecretStr

from prefect_atlas import DatabaseBlock, DiscordBlock, EventStore, NewEvent, VaultBlock
from prefect_atlas.flows import ingest, replay_projection, sample_records, system_health
from prefect_atlas.hooks import BLOCK_ENV
from tests.discord._server import DiscordServer, Webhook


@pytest.fixture
async def blocks(
    database_url: str,
    tmp_path: Path,
    discord_server: DiscordServer,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[str, Webhook]:
    """Database, vault and Discord blocks saved under one fresh name; hooks pointed at them."""
    name = f"flows-{uuid.uuid4().hex[:8]}"
    hook = discord_server.add_webhook()
    await DatabaseBlock(url=SecretStr(database_url)).asave(name)
    await VaultBlock(root=str(tmp_path / "vault")).asave(name)
    await DiscordBlock(
        allowed_hosts=["127.0.0.1"], alerts=SecretStr(discord_server.url(hook))
    ).asave(name)
    monkeypatch.setenv(BLOCK_ENV, name)
    return name, hook


async def test_ingest_then_replay(
    blocks: tuple[str, Webhook], database_url: str, tmp_path: Path
) -> None:
    name, hook = blocks
    summary = await ingest(database=name, vault=name)
    assert (summary.videos, summary.channels, summary.transcripts, len(summary.rejects)) == (
        12,
        3,
        12,
        3,
    )
    assert {r.video_id for r in summary.rejects} == {
        "dQw4w9WgXcB",
        "short",
        sample_records()["videos"][-1]["video_id"],
    }
    assert summary.events_emitted == 13
    async with DatabaseBlock(url=SecretStr(database_url)) as db:
        assert await db.afetch_one(
            "SELECT count(*) FROM atlas.videos WHERE status = 'ingested'"
        ) == (12,)
        assert await db.afetch_one("SELECT count(*) FROM atlas.transcripts") == (12,)
        assert await db.afetch_one(
            "SELECT count(*) FROM atlas.events WHERE event_type = 'video.ingested'"
        ) == (12,)
    vault = VaultBlock(root=str(tmp_path / "vault"))
    video = sample_records()["videos"][0]
    transcript = await vault.afetch_transcript(video["video_id"])
    assert transcript["segments"] == video["transcript"]
    frames = await vault.afetch_visuals(video["video_id"])
    assert frames is not None and len(frames) == len(video["frames"])
    async with get_client() as client:
        artifact = await client.read_latest_artifacts()
    assert any(a.key == "atlas-ingest-summary" for a in artifact)

    # a second run re-ingests the same videos: upserts, not duplicates; new events (new run)
    await ingest(database=name, vault=name)
    counts = await replay_projection(database=name)
    assert sorted(counts.values()) == [4, 4, 4]
    assert hook.received == []  # nothing failed: no alert


async def _counts_description() -> str:
    async with get_client() as client:
        latest = await client.read_latest_artifacts()
    [artifact] = [a for a in latest if a.key == "atlas-channel-video-counts"]
    return str(artifact.description)


async def test_replay_adds_only_new_events_and_rebuild_recounts(
    blocks: tuple[str, Webhook], database_url: str
) -> None:
    name, hook = blocks
    async with DatabaseBlock(url=SecretStr(database_url)) as db:
        await db.asetup()
        store = EventStore(db, mode="strict")
        await store.aemit_many(
            [NewEvent("video.ingested", f"v{i}", {"channel_id": f"c{i % 2}"}) for i in range(6)]
            + [NewEvent("video.tagged", "v0", {"channel_id": "c0"})]
        )
        assert await replay_projection(database=name) == {"c0": 3, "c1": 3}
        assert "after 6 new `video.ingested` event(s)." in await _counts_description()
        # a re-ingest (same channel: not counted again), a new video, a video in a 2nd channel
        await store.aemit_many(
            [
                NewEvent("video.ingested", "v0", {"channel_id": "c0"}),
                NewEvent("video.ingested", "v9", {"channel_id": "c1"}),
                NewEvent("video.ingested", "v4", {"channel_id": "c1"}),
            ]
        )
        assert await replay_projection(database=name) == {"c0": 3, "c1": 5}
        assert "after 3 new" in await _counts_description()  # only the new events were read
        assert await replay_projection(database=name) == {"c0": 3, "c1": 5}
        assert "after 0 new" in await _counts_description()
        # a projection row lost by hand stays lost for the increments, a rebuild restores it
        await db.aexecute("DELETE FROM atlas.channel_video_counts WHERE channel_id = 'c1'")
        assert await replay_projection(database=name) == {"c0": 3}
        assert await replay_projection(database=name, rebuild=True) == {"c0": 3, "c1": 5}
        assert "after 9 new" in await _counts_description()
        assert "rebuilt from the first event" in await _counts_description()
        [lag] = await store.aconsumer_lag("replay-projection")
        assert (lag.processed, lag.events_behind, lag.event_types) == (9, 0, ("video.ingested",))
    assert hook.received == []


async def test_failing_ingest_alerts_once_with_the_root_cause(blocks: tuple[str, Webhook]) -> None:
    name, hook = blocks
    state = await ingest(
        database=name, vault=name, simulate_failure="transcript service down", return_state=True
    )
    assert state.is_failed()
    assert len(hook.received) == 1
    embed = hook.received[0]["embeds"][0]
    assert "RuntimeError" in embed["title"] and "transcript service down" in embed["description"]


async def test_health_flow_passes_then_fails_and_alerts_when_the_database_is_down(
    blocks: tuple[str, Webhook],
) -> None:
    name, hook = blocks
    report = await system_health(database=name, vault=name, discord=name)
    assert report.ok
    await DatabaseBlock(url=SecretStr("postgresql://u:flow-secret@127.0.0.1:1/x"), timeout=2).asave(
        name, overwrite=True
    )
    state = await system_health(
        database=name, vault=name, discord=name, timeout=3, return_state=True
    )
    assert state.is_failed()
    assert len(hook.received) == 1
    text = str(hook.received[0])
    assert "database down" in text and "flow-secret" not in text
