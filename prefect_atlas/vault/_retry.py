"""Retrying transient provider errors with backoff and jitter, honouring ``Retry-After``.

Providers classify their own exceptions into :class:`Transient` (429, 5xx, timeouts) and
permanent ones; only the former are retried, via ``stamina``.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import stamina

T = TypeVar("T")

# Never wait longer than this for one Retry-After, whatever the server asks.
MAX_RETRY_AFTER = 60.0


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, min(float(value), MAX_RETRY_AFTER))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, min(when.timestamp() - time.time(), MAX_RETRY_AFTER))


Classifier = Callable[[BaseException], "bool | float"]


async def retrying(
    call: Callable[[], Awaitable[T]], *, classify: Classifier, attempts: int, budget: float
) -> T:
    """Await ``call()`` until it succeeds, retrying when ``classify(exc)`` says so.

    ``classify`` returns False (permanent: raise now), True (transient: exponential
    backoff with jitter) or a number of seconds (the server's ``Retry-After``).
    """

    def hook(exc: Exception) -> bool | float:
        return classify(exc)

    async for attempt in stamina.retry_context(
        on=hook, attempts=attempts, timeout=budget, wait_initial=0.2, wait_max=10.0, wait_jitter=0.5
    ):
        with attempt:
            return await call()
    raise AssertionError("unreachable")  # pragma: no cover


async def call(
    run: Callable[[], Awaitable[T]],
    *,
    classify: Classifier,
    permanent: Callable[[BaseException], Exception | None],
    attempts: int,
    budget: float,
) -> T:
    """:func:`retrying` ``run()``, then turn a permanent failure into the provider's clear error.

    ``permanent(exc)`` returns the :class:`~prefect_atlas.VaultAccessError` (or other vault
    error) to raise instead of ``exc``, or None to let ``exc`` through unchanged. Shared by
    every remote provider so that retry and refusal handling cannot drift apart.
    """
    try:
        return await retrying(run, classify=classify, attempts=attempts, budget=budget)
    except Exception as exc:
        mapped = permanent(exc)
        if mapped is not None:
            raise mapped from exc
        raise


async def in_thread(fn: Callable[[], T]) -> T:
    """Run a blocking client call off the event loop."""
    return await asyncio.to_thread(fn)
