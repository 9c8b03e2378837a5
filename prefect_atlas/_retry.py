"""The one retry runner of prefect-atlas, on stamina, and the ``Retry-After`` parsing it needs.

Each component says only *what* is worth another try, with a :class:`Classifier`: the
database (:func:`prefect_atlas.resilience.is_transient`), each vault provider (its HTTP
statuses and transport errors) and Discord (its 429 and 5xx answers). The waiting, the
jitter, the attempt count and the overall deadline are stamina's, run from here:

* :func:`arun` awaits a coroutine function, :func:`run` calls a blocking one;
* :func:`decorator` wraps a sync or async function (the public face is
  :func:`prefect_atlas.resilience.retrying`).

A classifier answers ``False`` (permanent: raise at once), ``True`` (transient: exponential
backoff with jitter) or a number of seconds (transient, and the server said how long to
wait). Server-given waits go through :func:`parse_seconds` or :func:`parse_retry_after`,
so a NaN, an infinity, a negative or a word never reaches ``asyncio.sleep``.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import ParamSpec, Protocol, TypedDict, TypeVar

import stamina

P = ParamSpec("P")
T = TypeVar("T")

# The longest server-asked wait honoured, whatever a header or body says: real windows are
# seconds; more (86400, say) is a fault or a long ban, and the caller should rather fail (or
# fail over) than stall its pipeline.
MAX_RETRY_AFTER = 60.0

# HTTP statuses worth another try: request timeout, too many requests, server errors.
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class Classifier(Protocol):
    """Says whether an error is worth another try."""

    def __call__(self, exc: BaseException, /) -> bool | float:
        """``False``: permanent. ``True``: transient, back off. A float: wait that long."""


Translate = Callable[[BaseException], Exception | None]


def parse_seconds(value: object) -> float | None:
    """A wait in seconds from a header or body value: None unless a finite number; negatives are 0.

    ``float("nan")`` and ``float("inf")`` parse, and ``asyncio.sleep(nan)`` never returns, so
    every wait a server (or a proxy) sends passes through here first. Not capped: callers
    compare it with what they may wait (at most :data:`MAX_RETRY_AFTER`).
    """
    if isinstance(value, bool) or value is None:
        return None
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return None
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def parse_retry_after(value: object, *, cap: float = MAX_RETRY_AFTER) -> float | None:
    """Seconds from a ``Retry-After`` value (delta-seconds or an HTTP date), within ``[0, cap]``.

    None when the value says nothing usable (missing, a word, NaN, infinite): the caller
    then backs off on its own curve.
    """
    seconds = parse_seconds(value.strip() if isinstance(value, str) else value)
    if seconds is None and isinstance(value, str) and value.strip():
        try:
            when = email.utils.parsedate_to_datetime(value.strip())
        except (TypeError, ValueError):
            return None
        seconds = max(0.0, when.timestamp() - time.time())
    return None if seconds is None else min(seconds, cap)


def http_verdict(status: int, headers: Mapping[str, str] | None = None) -> bool | float:
    """A classifier's answer for an HTTP error status: permanent, or transient (maybe a wait)."""
    if status not in TRANSIENT_STATUS:
        return False
    after = parse_retry_after((headers or {}).get("Retry-After"))
    return after if after is not None else True


def transport_failure(exc: BaseException, modules: tuple[str, ...], markers: Iterable[str]) -> bool:
    """Whether ``exc`` is a timeout or connection failure of an HTTP client library.

    Clients raise their own classes (``requests.ConnectTimeout``, ``httpx.ReadError``...):
    one from ``modules`` whose name holds one of ``markers`` counts, as do the builtin
    ``TimeoutError`` and ``ConnectionError``.
    """
    kind = type(exc)
    if kind.__module__.startswith(modules) and any(marker in kind.__name__ for marker in markers):
        return True
    return isinstance(exc, TimeoutError | ConnectionError)


class _Policy(TypedDict):
    on: Callable[[Exception], bool | float]
    attempts: int
    timeout: float | None
    wait_initial: float
    wait_max: float
    wait_jitter: float


def _policy(
    classify: Classifier,
    attempts: int,
    timeout: float | None,
    wait_initial: float,
    wait_max: float,
    wait_jitter: float,
) -> _Policy:
    """stamina's arguments; ``classify`` wrapped because stamina hands it an ``Exception``."""

    def on(exc: Exception) -> bool | float:
        return classify(exc)

    return _Policy(
        on=on,
        attempts=attempts,
        timeout=timeout,
        wait_initial=wait_initial,
        wait_max=wait_max,
        wait_jitter=wait_jitter,
    )


def _translated(exc: Exception, translate: Translate | None) -> None:
    mapped = translate(exc) if translate is not None else None
    if mapped is not None:
        raise mapped from exc


async def arun(
    call: Callable[[], Awaitable[T]],
    *,
    classify: Classifier,
    attempts: int,
    timeout: float | None,
    wait_initial: float = 0.2,
    wait_max: float = 10.0,
    wait_jitter: float = 0.5,
    translate: Translate | None = None,
) -> T:
    """Await ``call()`` until it succeeds, retrying while ``classify`` calls the error transient.

    At most ``attempts`` tries within ``timeout`` seconds overall (None: no deadline); waits
    grow from ``wait_initial`` by 2x up to ``wait_max``, plus up to ``wait_jitter`` random
    seconds. The last error is raised, or what ``translate(exc)`` makes of it (a
    component's clear error for a permanent refusal; None keeps the error unchanged).
    """
    policy = _policy(classify, attempts, timeout, wait_initial, wait_max, wait_jitter)
    try:
        async for attempt in stamina.retry_context(**policy):
            with attempt:
                return await call()
    except Exception as exc:
        _translated(exc, translate)
        raise
    raise AssertionError("unreachable: stamina either returns or raises")  # pragma: no cover


def run(
    call: Callable[[], T],
    *,
    classify: Classifier,
    attempts: int,
    timeout: float | None,
    wait_initial: float = 0.2,
    wait_max: float = 10.0,
    wait_jitter: float = 0.5,
    translate: Translate | None = None,
) -> T:
    """The blocking twin of :func:`arun` (the same arguments, for a sync ``call``)."""
    policy = _policy(classify, attempts, timeout, wait_initial, wait_max, wait_jitter)
    try:
        for attempt in stamina.retry_context(**policy):
            with attempt:
                return call()
    except Exception as exc:
        _translated(exc, translate)
        raise
    raise AssertionError("unreachable: stamina either returns or raises")  # pragma: no cover


def decorator(
    *,
    on: Callable[[Exception], bool | float] | type[Exception] | tuple[type[Exception], ...],
    attempts: int,
    timeout: float | None,
    wait_initial: float,
    wait_max: float,
    wait_jitter: float,
) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """:func:`arun` / :func:`run` as a decorator for a sync or async function.

    ``on`` is a classifier (see :class:`Classifier`) or the exception classes worth another try.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    return stamina.retry(
        on=on,
        attempts=attempts,
        timeout=timeout,
        wait_initial=wait_initial,
        wait_max=wait_max,
        wait_jitter=wait_jitter,
    )
