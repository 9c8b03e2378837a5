"""YouTube id validators and the API key pool."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta

import pytest

from prefect_atlas.youtube import (
    AllKeysExhaustedError,
    ApiKeyPool,
    InvalidYouTubeIdError,
    is_channel_id,
    is_video_id,
    next_quota_reset,
    validate_channel_id,
    validate_video_id,
)


@pytest.mark.parametrize("vid", ["dQw4w9WgXcQ", "jNQXAC9IVRw", "_-_-_-_-_-A", "aaaaaaaaaa0"])
def test_real_video_ids_pass(vid: str) -> None:
    assert validate_video_id(vid) == vid
    assert is_video_id(vid)


@pytest.mark.parametrize(
    ("vid", "reason"),
    [
        ("dQw4w9WgXc", "has 10 characters"),
        ("dQw4w9WgXcQQ", "has 12 characters"),
        ("dQw4w9WgX!Q", "contains '!'"),
        ("dQw4w9WgXcB", "ends with 'B'"),
        (12345678901, "must be a string"),
    ],
)
def test_bad_video_ids_say_why(vid: object, reason: str) -> None:
    with pytest.raises(InvalidYouTubeIdError, match=reason):
        validate_video_id(vid)
    assert not is_video_id(vid)


def test_every_last_character_rule_matches_64_bit_ids() -> None:
    import base64

    # the id of a 64-bit number is its urlsafe base64 without padding; the last char varies
    # with the number
    for n in (0, 1, 2**63, 2**64 - 1, 123456789):
        vid = base64.urlsafe_b64encode(n.to_bytes(8, "big")).decode().rstrip("=")
        assert is_video_id(vid), vid


def test_channel_ids() -> None:
    good = "UC" + "x" * 22
    assert validate_channel_id(good) == good and is_channel_id(good)
    with pytest.raises(InvalidYouTubeIdError, match=r"must start with 'UC'.*@handle"):
        validate_channel_id("@somechannel")
    with pytest.raises(InvalidYouTubeIdError, match="has 23 characters"):
        validate_channel_id("UC" + "x" * 21)
    with pytest.raises(InvalidYouTubeIdError, match=r"contains '\.'"):
        validate_channel_id("UC" + "x" * 21 + ".")


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_pool_rotates_on_quota_and_reports_exhausted_keys() -> None:
    clock = Clock()
    pool = ApiKeyPool(["key-aaaa", "key-bbbb", "key-cccc"], clock=clock)
    assert pool.get() == "key-aaaa"
    assert pool.get() == "key-aaaa"  # sticky until reported
    pool.report_quota_exceeded("key-aaaa")
    assert pool.get() == "key-bbbb"
    pool.report_quota_exceeded("key-bbbb")
    pool.report_quota_exceeded("key-cccc")
    assert [s.label for s in pool.exhausted()] == ["…aaaa", "…bbbb", "…cccc"]
    with pytest.raises(AllKeysExhaustedError, match="all 3 YouTube API key") as info:
        pool.get()
    assert "key-" not in str(info.value)
    # the next midnight Pacific brings them back
    clock.now = next_quota_reset(clock.now) + timedelta(seconds=1)
    assert pool.get() in {"key-aaaa", "key-bbbb", "key-cccc"}
    assert pool.exhausted() == []
    assert "key-" not in repr(pool)


def test_quota_reset_is_midnight_pacific() -> None:
    reset = next_quota_reset(datetime(2026, 7, 1, 12, 0, tzinfo=UTC))  # PDT, UTC-7
    assert reset == datetime(2026, 7, 2, 7, 0, tzinfo=UTC)
    reset = next_quota_reset(datetime(2026, 12, 1, 12, 0, tzinfo=UTC))  # PST, UTC-8
    assert reset == datetime(2026, 12, 2, 8, 0, tzinfo=UTC)


def test_compliance_mode_uses_only_the_first_key() -> None:
    pool = ApiKeyPool(["first-key", "second-key"], compliance_mode=True)
    assert len(pool) == 1
    pool.report_quota_exceeded("first-key")
    with pytest.raises(AllKeysExhaustedError):
        pool.get()


def test_empty_pool_is_refused() -> None:
    with pytest.raises(ValueError, match="YOUTUBE_API_KEY_POOL_JSON"):
        ApiKeyPool([])


def test_pool_is_safe_under_threads_and_asyncio() -> None:
    keys = [f"key-{i:04d}" for i in range(20)]
    pool = ApiKeyPool(keys)
    barrier = threading.Barrier(8)

    def burn() -> None:
        barrier.wait()
        for _ in range(200):
            try:
                pool.report_quota_exceeded(pool.get())
            except AllKeysExhaustedError:
                return

    threads = [threading.Thread(target=burn) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(pool.exhausted()) == 20

    async def concurrent_gets() -> set[str]:
        fresh = ApiKeyPool(keys)
        got = await asyncio.gather(*(asyncio.to_thread(fresh.get) for _ in range(50)))
        return set(got)

    assert asyncio.run(concurrent_gets()) == {"key-0000"}
