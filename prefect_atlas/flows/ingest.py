"""Ingest a batch of YouTube video records into Atlas.

The reference pipeline a team copies: validate ids, upsert channels and videos into the hot
index with the retrying write task, store metadata, transcripts and visual evidence in the
vault, record transcript pointers, emit one event per video, publish a markdown summary
artifact, and alert on failure through the Discord hooks.

Block names are parameters (default ``"default"``); with no ``records`` the flow ingests the
small sample data set shipped in the package, so it runs without network access.

Retries are safe end to end: upserts are keyed, vault writes are whole-object, and event ids
are derived from the flow run and the video, so a retried task stores nothing twice.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime
from importlib import resources
from typing import Any, cast

from prefect import flow, get_run_logger, task, unmapped
from prefect.artifacts import acreate_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from pydantic import BaseModel, Field

from prefect_atlas import DatabaseBlock, VaultBlock
from prefect_atlas._blocks import resolve_block
from prefect_atlas.hooks import alert_on_completion, alert_on_crashed, alert_on_failure
from prefect_atlas.tasks import emit_events, upsert_rows
from prefect_atlas.tasks.vault import retry_unless_permanent
from prefect_atlas.youtube import InvalidYouTubeIdError, validate_channel_id, validate_video_id

EVENT_NAMESPACE = uuid.UUID("6b0f5a2e-3c1d-4f8e-9a47-2d7c1e5b9f30")


class Reject(BaseModel):
    """A record the flow refused, and why."""

    index: int
    video_id: str | None
    reason: str


class IngestSummary(BaseModel):
    """What one ingest run did (also published as a markdown artifact)."""

    flow_run_id: str
    """The ingest flow run's id."""
    received: int
    """Records in the batch."""
    channels: int
    """Channels upserted into the hot index."""
    videos: int
    """Videos upserted into the hot index."""
    transcripts: int
    """Transcripts stored in the vault."""
    objects_stored: int
    """Vault objects written (metadata, transcripts, visuals)."""
    events_emitted: int
    """Events appended to the event log."""
    rejects: list[Reject] = Field(default_factory=list)
    """The records refused, each with its reason."""
    timings_s: dict[str, float] = Field(default_factory=dict)
    """Seconds spent in each step."""

    def markdown(self) -> str:
        """The summary as the Markdown of the run's ``atlas-ingest-summary`` artifact."""
        lines = [
            "# Atlas ingest summary",
            "",
            "| | |",
            "|---|---|",
            f"| records received | {self.received} |",
            f"| channels upserted | {self.channels} |",
            f"| videos upserted | {self.videos} |",
            f"| transcripts stored | {self.transcripts} |",
            f"| vault objects written | {self.objects_stored} |",
            f"| events emitted | {self.events_emitted} |",
            f"| rejected | {len(self.rejects)} |",
            "",
            "## Timings",
            "",
            *[f"- {step}: {seconds:.3f} s" for step, seconds in self.timings_s.items()],
        ]
        if self.rejects:
            lines += ["", "## Rejected records", "", "| # | video_id | reason |", "|---|---|---|"]
            lines += [f"| {r.index} | `{r.video_id}` | {r.reason} |" for r in self.rejects]
        return "\n".join(lines) + "\n"


def sample_records() -> dict[str, Any]:
    """The sample batch shipped in the package (3 channels, 12 videos, 3 bad records)."""
    text = resources.files("prefect_atlas.data").joinpath("sample_videos.json").read_text("utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


@task(name="atlas-validate-records", cache_policy=NO_CACHE)
def validate_records(
    videos: list[dict[str, Any]], channels: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[Reject]]:
    """Split the batch into valid channels, valid videos and rejects with their reasons."""
    good_channels: dict[str, dict[str, Any]] = {}
    rejects: list[Reject] = []
    for channel in channels:
        try:
            validate_channel_id(channel.get("channel_id"))
        except InvalidYouTubeIdError as exc:
            rejects.append(Reject(index=-1, video_id=None, reason=f"channel: {exc}"))
            continue
        good_channels[channel["channel_id"]] = channel
    good_videos: list[dict[str, Any]] = []
    for index, video in enumerate(videos):
        try:
            validate_video_id(video.get("video_id"))
            validate_channel_id(video.get("channel_id"))
        except InvalidYouTubeIdError as exc:
            rejects.append(
                Reject(index=index, video_id=str(video.get("video_id")), reason=str(exc))
            )
            continue
        if video["channel_id"] not in good_channels:
            good_channels[video["channel_id"]] = {"channel_id": video["channel_id"], "title": ""}
        good_videos.append(video)
    return list(good_channels.values()), good_videos, rejects


@task(
    name="atlas-store-video-objects",
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_unless_permanent,
    cache_policy=NO_CACHE,
)
async def store_video_objects(
    vault: VaultBlock, videos: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Metadata, transcript and visual evidence of each video in the vault; returns transcript
    pointers."""
    pointers: list[dict[str, Any]] = []
    for video in videos:
        video_id = video["video_id"]
        metadata = {k: v for k, v in video.items() if k not in ("transcript", "frames")}
        published = (
            datetime.fromisoformat(video["published_at"]) if video.get("published_at") else None
        )
        # the layout files metadata under the UTC day of publication
        await vault.astore_metadata(video_id, metadata, date=published)
        if video.get("transcript"):
            language = video.get("language", "en")
            path = await vault.astore_transcript(video_id, video["transcript"], language=language)
            pointers.append(
                {
                    "video_id": video_id,
                    "language": language,
                    "vault_provider": vault.provider,
                    "vault_path": path,
                    "segment_count": len(video["transcript"]),
                }
            )
        if video.get("frames"):
            await vault.astore_visuals(video_id, video["frames"])
    return pointers


@task(name="atlas-simulated-failure")
def simulated_failure(reason: str) -> None:
    """Fails on purpose: `make demo` uses it to show the failure alert."""
    raise RuntimeError(reason)


@flow(
    name="ingest",
    log_prints=True,
    on_failure=[alert_on_failure],
    on_crashed=[alert_on_crashed],
    on_completion=[alert_on_completion],
)
async def ingest(
    records: dict[str, Any] | None = None,
    database: str = "default",
    vault: str = "default",
    simulate_failure: str | None = None,
    discord: str | None = None,
) -> IngestSummary:
    """Ingest ``records`` (``{"channels": [...], "videos": [...]}``; default: the sample set).

    Alerts go to the Atlas Discord block named ``discord``, else by ``ATLAS_DISCORD_BLOCK``
    (default ``"default"``; deployments.yaml sets it per work pool). ``simulate_failure`` fails the
    run after the writes with that message, to see the alert path end to end.
    """
    logger = get_run_logger()
    timings: dict[str, float] = {}
    started = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal started
        now = time.perf_counter()
        timings[step] = round(now - started, 4)
        started = now

    batch = records if records is not None else sample_records()
    db = await resolve_block(DatabaseBlock, database)
    store = await resolve_block(VaultBlock, vault)
    run_id = str(flow_run.get_id() or uuid.uuid4())
    async with db:
        await db.asetup()
        lap("setup")
        channels, videos, rejects = validate_records(
            batch.get("videos", []), batch.get("channels", [])
        )
        for reject in rejects:
            logger.warning(
                "rejected record %s (%s): %s", reject.index, reject.video_id, reject.reason
            )
        lap("validate")

        # The vault writes, one task run per video, go to the flow's task runner (threads by
        # default; Dask or processes with ``ingest.with_options(task_runner=...)``) while the
        # rows are upserted here.
        stored = store_video_objects.map(unmapped(store), [[v] for v in videos])
        now = datetime.now(UTC).isoformat()
        await upsert_rows(
            "atlas.channels",
            [
                {
                    "channel_id": c["channel_id"],
                    "title": c.get("title", ""),
                    "handle": c.get("handle"),
                    "country": c.get("country"),
                    "updated_at": now,
                }
                for c in channels
            ],
            key_columns=["channel_id"],
            database=db,
        )
        await upsert_rows(
            "atlas.videos",
            [
                {
                    "video_id": v["video_id"],
                    "channel_id": v["channel_id"],
                    "title": v.get("title", ""),
                    "description": v.get("description", ""),
                    "category_id": v.get("category_id"),
                    "tags": list(v.get("tags", [])),
                    "duration_s": v.get("duration_s"),
                    "view_count": v.get("view_count"),
                    "published_at": v.get("published_at"),
                    "status": "ingested",
                    "updated_at": now,
                }
                for v in videos
            ],
            key_columns=["video_id"],
            database=db,
        )
        lap("upsert")

        # (Prefect types the results of a mapped async task as coroutines; they are lists)
        batches = cast(list[list[dict[str, Any]]], await asyncio.to_thread(stored.result))
        pointers = [p for batch in batches for p in batch]
        await upsert_rows(
            "atlas.transcripts", pointers, key_columns=["video_id", "language"], database=db
        )
        lap("vault")

        events = [
            {
                "event_type": "video.ingested",
                "entity_id": v["video_id"],
                "event_id": uuid.uuid5(EVENT_NAMESPACE, f"{run_id}:{v['video_id']}"),
                "payload": {
                    "channel_id": v["channel_id"],
                    "title": v.get("title", ""),
                    "tags": v.get("tags", []),
                    "flow_run_id": run_id,
                },
            }
            for v in videos
        ]
        events.append(
            {
                "event_type": "ingest.completed",
                "entity_id": f"flow-run:{run_id}",
                "event_id": uuid.uuid5(EVENT_NAMESPACE, f"{run_id}:completed"),
                "payload": {"videos": len(videos), "rejects": len(rejects)},
            }
        )
        emitted = await emit_events(events, database=db)
        lap("events")

    objects = sum(1 + bool(v.get("transcript")) + bool(v.get("frames")) for v in videos)
    summary = IngestSummary(
        flow_run_id=run_id,
        received=len(batch.get("videos", [])),
        channels=len(channels),
        videos=len(videos),
        transcripts=len(pointers),
        objects_stored=objects,
        events_emitted=len(emitted),
        rejects=rejects,
        timings_s=timings,
    )
    await acreate_markdown_artifact(
        key="atlas-ingest-summary",
        markdown=summary.markdown(),
        description="Atlas ingest run summary",
    )
    logger.info(
        "ingested %d video(s) of %d channel(s), %d "
        "object(s) in the vault, %d event(s), %d reject(s)",
        summary.videos,
        summary.channels,
        summary.objects_stored,
        summary.events_emitted,
        len(rejects),
    )
    if simulate_failure:
        simulated_failure(simulate_failure)
    return summary
