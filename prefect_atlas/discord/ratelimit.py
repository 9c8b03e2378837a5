"""Per-bucket rate limiting driven by Discord's own headers.

Discord tells a client its budget on every answer (``X-RateLimit-Remaining``,
``X-RateLimit-Reset-After``, ``X-RateLimit-Bucket``) and bans IPs that keep provoking 429s
(10,000 in 10 minutes). So the limits are never hard-coded here: a send waits *ahead* when
the last answer said the bucket is empty, and only falls back to the 429 body's
``retry_after`` when a limit was hit anyway (another process sharing the webhook, say).

Sends to one webhook are serialized (one request in flight per route, as discord.py does):
with concurrent sends, each one must see the headers of the previous answer to know whether
it may go. Routes that Discord reports in the same bucket share the bucket's budget.

A limiter belongs to one event loop (its locks do); ``DiscordBlock`` keeps one per loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from prefect_atlas._retry import MAX_RETRY_AFTER
from prefect_atlas._retry import parse_seconds as parse_seconds

# Added to every wait: the reset instant we compute is when the answer *arrived*, and an
# event loop may wake a hair early; this keeps a send from landing a moment before reset.
SAFETY_MARGIN_SECONDS = 0.05

# The longest wait a send accepts, whatever a header asks (the package's one cap on
# server-asked waits): an answer asking for more sends the alert to the fallback channel
# rather than stall its pipeline's hook. Every wait Discord sends goes through
# ``parse_seconds`` first (NaN, infinities and words are None, negatives 0).
MAX_WAIT_SECONDS = MAX_RETRY_AFTER


class WaitTooLong(Exception):
    """The bucket would make this send wait longer than it may; try another channel."""

    def __init__(self, wait: float) -> None:
        super().__init__(f"the rate limit asks for a {wait:.0f} s wait")
        self.wait = wait


@dataclass
class BucketState:
    """What the last answer said about one bucket."""

    limit: int | None = None
    remaining: int | None = None
    reset_at: float = 0.0  # monotonic clock


@dataclass
class _Route:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    bucket: str = ""


class Turn:
    """One request's turn on a route: what its answer teaches goes through here.

    The local limiter applies it at once; the shared one also writes it to the database before
    the next process may take its turn.
    """

    def __init__(self, limiter: RateLimiter, route: str) -> None:
        self._limiter = limiter
        self.route = route
        self.headers: Mapping[str, str] | None = None
        self.penalty: tuple[float, bool] | None = None

    def update(self, headers: Mapping[str, str]) -> bool:
        """Learn the budget from the answer's headers; False when it carried none."""
        self.headers = headers
        return self._limiter.update(self.route, headers)

    def penalize(self, retry_after: float, *, is_global: bool = False) -> None:
        """A 429: nothing goes to this bucket (or anywhere) for ``retry_after`` seconds."""
        self.penalty = (parse_seconds(retry_after) or 0.0, is_global)
        self._limiter.penalize(self.route, retry_after, is_global=is_global)


class RateLimiter:
    """Serializes requests per route and waits ahead of an empty bucket."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._routes: dict[str, _Route] = {}
        self._buckets: dict[str, BucketState] = {}
        self._global_until = 0.0
        self.waited_seconds = 0.0  # total time spent waiting ahead (for benchmarks and tests)

    def _route(self, route: str) -> _Route:
        entry = self._routes.get(route)
        if entry is None:
            entry = self._routes[route] = _Route(bucket=route)
        return entry

    def bucket(self, route: str) -> BucketState:
        """The budget state governing ``route`` (its own until Discord names a shared bucket)."""
        key = self._route(route).bucket
        state = self._buckets.get(key)
        if state is None:
            state = self._buckets[key] = BucketState()
        return state

    def delay(self, route: str) -> float:
        """Seconds ``route`` must wait before its next request may go."""
        now = self._clock()
        wait = max(0.0, self._global_until - now)
        state = self.bucket(route)
        if state.remaining is not None and state.remaining <= 0:
            wait = max(wait, state.reset_at - now)
        return wait

    @asynccontextmanager
    async def slot(self, route: str, *, max_wait: float = MAX_WAIT_SECONDS) -> AsyncIterator[Turn]:
        """Hold the route's turn: wait ahead if the bucket is empty, then let one request go.

        Raises :class:`WaitTooLong` instead of waiting more than ``max_wait`` seconds.
        """
        async with self._route(route).lock:
            wait = self.delay(route)
            if wait > max_wait:
                raise WaitTooLong(wait)
            if wait > 0:
                self.waited_seconds += wait
                await asyncio.sleep(wait + SAFETY_MARGIN_SECONDS)
                self.bucket(route).remaining = None  # the bucket was reset; the answer will tell
            yield Turn(self, route)

    def update(self, route: str, headers: Mapping[str, str]) -> bool:
        """Learn the budget from an answer's headers; False when it carried none."""
        remaining = headers.get("X-RateLimit-Remaining")
        reset_after = headers.get("X-RateLimit-Reset-After")
        if remaining is None and reset_after is None:
            return False
        bucket_id = headers.get("X-RateLimit-Bucket")
        if bucket_id:
            self._route(route).bucket = f"bucket:{bucket_id}"
        state = self.bucket(route)
        try:
            if remaining is not None:
                state.remaining = int(remaining)
            if reset_after is not None:
                seconds = parse_seconds(reset_after)
                if seconds is None:
                    raise ValueError("X-RateLimit-Reset-After is not a finite number")
                state.reset_at = self._clock() + seconds
            limit = headers.get("X-RateLimit-Limit")
            if limit is not None:
                state.limit = int(limit)
        except ValueError:  # a malformed header: forget it rather than wait on garbage
            state.remaining = None
        return True

    def penalize(self, route: str, retry_after: float, *, is_global: bool = False) -> None:
        """A 429: nothing goes to this bucket (or anywhere, if global) for ``retry_after`` s."""
        until = self._clock() + (parse_seconds(retry_after) or 0.0)
        if is_global:
            self._global_until = max(self._global_until, until)
        state = self.bucket(route)
        state.remaining = 0
        state.reset_at = max(state.reset_at, until)
