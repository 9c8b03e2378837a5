"""Keep a projection current from the event log: videos ingested per channel.

The event log is the truth; projections are disposable read models. This flow is an
incremental projection: a checkpointed consumer (``replay-projection``) hands it the
``video.ingested`` events committed since its last run, and the handler adds them to
``atlas.channel_video_counts`` in the transaction that moves the consumer's checkpoint, so
each event is counted exactly once across crashes and restarts and a run costs what is new,
not the whole log. ``rebuild=True`` truncates the table and resets the consumer in one
transaction, then counts from the first event.

A channel's count is its distinct videos: an event counts only when no earlier
``video.ingested`` event of the same video names the same channel (a re-ingest does not count
twice). That test reads the log itself, so it gives the same answer on every run and rebuild.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_table_artifact
from psycopg import AsyncConnection

from prefect_atlas import DatabaseBlock
from prefect_atlas._blocks import resolve_block
from prefect_atlas.events.models import StoredEvent
from prefect_atlas.tasks.events import consume_events

INGESTED = "video.ingested"
CONSUMER = "replay-projection"

# The events of the batch that are the first of their video to name their channel.
_FIRST_IN_CHANNEL = """
SELECT n.channel, n.position
FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::bigint[], %s::integer[])
    AS n(channel, entity, version, position, ord)
WHERE NOT EXISTS (
    SELECT 1 FROM atlas.events AS e
    WHERE e.entity_id = n.entity AND e.version < n.version AND e.event_type = %s
      AND e.payload ->> 'channel_id' = n.channel
)
ORDER BY n.ord
"""


def _channel(event: StoredEvent) -> str:
    return str(event.payload.get("channel_id", "")) if isinstance(event.payload, dict) else ""


async def count_videos(events: Sequence[StoredEvent], conn: AsyncConnection[Any]) -> None:
    """The consumer's handler: add a batch of ``video.ingested`` events to the counts, on the
    batch's transaction."""
    batch = [(i, e) for i, e in enumerate(events) if _channel(e)]
    if not batch:
        return
    cur = await conn.execute(
        _FIRST_IN_CHANNEL,
        [
            [_channel(e) for _, e in batch],
            [e.entity_id for _, e in batch],
            [e.version for _, e in batch],
            [e.position for _, e in batch],
            [i for i, _ in batch],
            INGESTED,
        ],
    )
    added: dict[str, int] = {}
    last: dict[str, int] = {}
    for channel, position in await cur.fetchall():
        added[channel] = added.get(channel, 0) + 1
        last[channel] = position  # in replay order: the last one counted
    await conn.cursor().executemany(
        "INSERT INTO atlas.channel_video_counts (channel_id, videos, last_position) "
        "VALUES (%s, %s, %s) ON CONFLICT (channel_id) DO UPDATE SET "
        "videos = channel_video_counts.videos + EXCLUDED.videos, "
        "last_position = EXCLUDED.last_position, rebuilt_at = now()",
        [(channel, n, last[channel]) for channel, n in sorted(added.items())],
    )


async def truncate_counts(conn: AsyncConnection[Any]) -> None:
    """The rebuild's first step, in the transaction that resets the consumer."""
    await conn.execute("TRUNCATE atlas.channel_video_counts")


@flow(name="replay-projection", log_prints=True)
async def replay_projection(database: str = "default", rebuild: bool = False) -> dict[str, int]:
    """Add the ``video.ingested`` events committed since the last run to the per-channel video
    counts (``rebuild=True``: recount from the first event); returns the counts."""
    logger = get_run_logger()
    db = await resolve_block(DatabaseBlock, database)
    async with db:
        await db.asetup()
        result = await consume_events(
            CONSUMER,
            count_videos,
            database=db,
            event_types=[INGESTED],
            rebuild=rebuild,
            on_rebuild=truncate_counts if rebuild else None,
        )
        rows = await db.afetch_all(
            "SELECT channel_id, videos FROM atlas.channel_video_counts ORDER BY channel_id"
        )
    counts = {str(channel): int(n) for channel, n in rows}
    logger.info(
        "%s %d new %s event(s); %d channel count(s)%s",
        "recounted" if rebuild else "added",
        result.processed,
        INGESTED,
        len(counts),
        f", {result.dead_lettered} event(s) parked as dead letters" if result.dead_lettered else "",
    )
    await acreate_table_artifact(
        key="atlas-channel-video-counts",
        table=[{"channel_id": c, "videos": n} for c, n in counts.items()],
        description=(
            f"Videos per channel after {result.processed} new `{INGESTED}` event(s)"
            f"{' (rebuilt from the first event)' if rebuild else ''}."
        ),
    )
    return counts
