"""The one retry runner (prefect_atlas._retry): Retry-After parsing, classifiers, sync and async
runs."""

from __future__ import annotations

import email.utils
import math
import time

import pytest

from prefect_atlas._retry import (
    MAX_RETRY_AFTER,
    arun,
    http_verdict,
    parse_retry_after,
    parse_seconds,
    run,
)


def test_parse_retry_after_clamps_to_the_one_cap() -> None:
    assert parse_retry_after("5") == 5.0 and parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("86400") == MAX_RETRY_AFTER == 60.0
    assert parse_retry_after("-3") == 0.0
    for garbage in ("nan", "inf", "-inf", "soon", "", None, True, math.nan):
        assert parse_retry_after(garbage) is None
    later = parse_retry_after(email.utils.formatdate(time.time() + 10, usegmt=True))
    assert later is not None and 5 < later <= 10
    assert parse_retry_after(email.utils.formatdate(time.time() - 10, usegmt=True)) == 0.0
    assert parse_seconds("86400") == 86400.0  # uncapped: callers compare it with what they may wait


def test_http_verdict() -> None:
    assert http_verdict(503, {"Retry-After": "2"}) == 2.0
    assert http_verdict(429) is True and http_verdict(500, {"Retry-After": "nan"}) is True
    assert http_verdict(404, {"Retry-After": "2"}) is False


def test_run_retries_transient_and_translates_permanent() -> None:
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("blip")
        return "ok"

    transient = lambda e: isinstance(e, ConnectionError)  # noqa: E731
    assert (
        run(flaky, classify=transient, attempts=5, timeout=5, wait_initial=0.0, wait_jitter=0.0)
        == "ok"
    )
    assert len(calls) == 3

    def refused() -> None:
        calls.append(1)
        raise PermissionError("no")

    calls.clear()
    with pytest.raises(LookupError, match="clear") as info:
        run(
            refused,
            classify=lambda e: False,
            attempts=5,
            timeout=5,
            translate=lambda e: LookupError("clear"),
        )
    assert len(calls) == 1 and isinstance(info.value.__cause__, PermissionError)


async def test_arun_honours_the_classifier_wait_and_attempts() -> None:
    calls: list[float] = []

    async def always() -> None:
        calls.append(time.monotonic())
        raise TimeoutError("slow")

    with pytest.raises(TimeoutError):
        await arun(always, classify=lambda e: 0.05, attempts=3, timeout=5)
    assert len(calls) == 3 and calls[1] - calls[0] >= 0.04
