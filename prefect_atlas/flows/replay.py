"""Rebuild a projection from the event log: videos ingested per channel.

The event log is the truth; projections are disposable read models. This flow replays every
``video.ingested`` event in commit-safe order and replaces ``atlas.channel_video_counts`` in
one transaction, so readers see either the old projection or the new one, never a half.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_table_artifact

from prefect_atlas import DatabaseBlock, EventStore
from prefect_atlas._blocks import resolve_block

INGESTED = "video.ingested"


@flow(name="replay-projection", log_prints=True)
async def replay_projection(database: str = "default") -> dict[str, int]:
    """Replay ``video.ingested`` events into per-channel video counts; returns the counts."""
    logger = get_run_logger()
    db = await resolve_block(DatabaseBlock, database)
    async with db:
        await db.asetup()
        store = EventStore(db)
        videos: dict[str, set[str]] = {}
        last_position = 0
        replayed = 0
        async for event in store.replay(event_types=[INGESTED]):
            channel = (
                str(event.payload.get("channel_id", "")) if isinstance(event.payload, dict) else ""
            )
            if channel:
                videos.setdefault(channel, set()).add(event.entity_id)
            last_position = (
                event.position
            )  # replay order is (xid, position): keep the last one seen
            replayed += 1
        counts = {channel: len(ids) for channel, ids in sorted(videos.items())}
        async with db.connection() as conn, conn.transaction():
            await conn.execute("DELETE FROM atlas.channel_video_counts")
            cur = conn.cursor()
            await cur.executemany(
                "INSERT INTO atlas.channel_video_counts (channel_id, "
                "videos, last_position) VALUES (%s, %s, %s)",
                [(channel, n, last_position) for channel, n in counts.items()],
            )
    logger.info("replayed %d %s event(s) into %d channel count(s)", replayed, INGESTED, len(counts))
    await acreate_table_artifact(
        key="atlas-channel-video-counts",
        table=[{"channel_id": c, "videos": n} for c, n in counts.items()],
        description=f"Videos per channel rebuilt from {replayed} `{INGESTED}` events.",
    )
    return counts
