"""Where Atlas keeps metadata, transcripts and visual evidence inside a vault.

Transcripts and visuals are sharded by a hash of the video id: 4,096 shards (three hex
digits) keep every folder far below the Hugging Face limit of 10,000 files per folder
until about 40 million videos, and the hash spreads ids evenly whatever their format.
"""

from __future__ import annotations

import datetime as dt
import hashlib

from prefect_atlas.vault.errors import VaultPathError

SHARD_DIGITS = 3
"""Hex digits of the sha256 of a video id that name its shard folder (4,096 shards)."""


def check_video_id(video_id: str) -> str:
    """Return ``video_id`` if it is safe as a file name, else raise :class:`VaultPathError`.

    >>> check_video_id("dQw4w9WgXcQ")
    'dQw4w9WgXcQ'
    >>> check_video_id("../etc")
    Traceback (most recent call last):
    ...
    prefect_atlas.exceptions.VaultPathError: video_id '../etc' may not contain '/', ...
    """
    if not isinstance(video_id, str) or not video_id.strip():
        raise VaultPathError("video_id must be a non-empty string such as 'dQw4w9WgXcQ'")
    bad = [c for c in ("/", "\\", "\x00") if c in video_id]
    if bad or video_id in (".", ".."):
        raise VaultPathError(
            f"video_id {video_id!r} may not contain '/', '\\' or NUL, nor be '.' or '..'"
        )
    return video_id


def shard(video_id: str) -> str:
    """The shard folder of ``video_id``: the first hex digits of its sha256.

    >>> shard("dQw4w9WgXcQ")
    '5f6'
    """
    return hashlib.sha256(video_id.encode()).hexdigest()[:SHARD_DIGITS]


def _day(date: dt.date | dt.datetime | str | None) -> str:
    if date is None:
        return dt.datetime.now(dt.UTC).date().isoformat()
    if isinstance(date, dt.datetime):
        if date.tzinfo is not None:
            date = date.astimezone(dt.UTC)
        return date.date().isoformat()
    if isinstance(date, dt.date):
        return date.isoformat()
    try:
        return dt.date.fromisoformat(date).isoformat()
    except (TypeError, ValueError):
        raise VaultPathError(
            f"date {date!r} is not a date; pass a datetime.date or 'YYYY-MM-DD'"
        ) from None


def metadata_path(video_id: str, date: dt.date | dt.datetime | str | None = None) -> str:
    """``metadata/YYYY-MM-DD/{video_id}.json`` (UTC day; today when ``date`` is None).

    >>> metadata_path("dQw4w9WgXcQ", "2026-12-01")
    'metadata/2026-12-01/dQw4w9WgXcQ.json'
    """
    return f"metadata/{_day(date)}/{check_video_id(video_id)}.json"


def transcript_path(video_id: str) -> str:
    """``transcripts/{shard}/{video_id}.json``.

    >>> transcript_path("dQw4w9WgXcQ")
    'transcripts/5f6/dQw4w9WgXcQ.json'
    """
    return f"transcripts/{shard(check_video_id(video_id))}/{video_id}.json"


def visuals_path(video_id: str) -> str:
    """``visuals/{shard}/{video_id}.parquet``.

    >>> visuals_path("dQw4w9WgXcQ")
    'visuals/5f6/dQw4w9WgXcQ.parquet'
    """
    return f"visuals/{shard(check_video_id(video_id))}/{video_id}.parquet"
