"""One webhook POST over HTTP, and the per-loop session and rate limiter it runs on.

:func:`post` makes the tries for one webhook: each waits for the route's turn in the rate
limiter, POSTs once, and maps Discord's answer to a message id, a retry (5xx, timeouts,
connection errors, a 429 with ``retry_after``) or a refusal (401/403/404 kill the webhook,
an over-long 429 hands the alert to the fallback, a header-less 429 is a Cloudflare ban).

The runtime (one aiohttp session and one rate limiter per event loop) lives in the process
runtime, shared by every block that shares a rate-limit budget; it is never saved, copied or
pickled, and both objects bind to the loop that created them.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prefect_atlas import _runtime
from prefect_atlas._loops import PerLoop, close_at_loop_shutdown
from prefect_atlas._retry import MAX_RETRY_AFTER, arun, parse_seconds
from prefect_atlas.discord.enums import Channel
from prefect_atlas.discord.ratelimit import RateLimiter, Turn, WaitTooLong

if TYPE_CHECKING:
    import aiohttp

    from prefect_atlas.database.block import DatabaseBlock

# ---------------------------------------------------------------------------- errors of one try


class _Transient(Exception):
    """Worth another try: 5xx, timeout, connection error, or a 429 with ``retry_after``."""

    def __init__(self, reason: str, backoff: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.backoff = backoff


class _Permanent(Exception):
    """Not worth another try on this webhook; ``dead`` means never use it again,
    ``failover`` that the fallback channel may still take this alert."""

    def __init__(
        self, reason: str, *, code: str, dead: bool = False, failover: bool = False
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.dead = dead
        self.failover = failover


def _retry_on(exc: BaseException) -> bool | float:
    """Discord's classifier: retry transient faults (with the 429's own wait), never permanent."""
    if isinstance(exc, _Transient):
        return exc.backoff if exc.backoff is not None else True
    return False


@dataclass
class Sent:
    message_id: str | None
    attempts: int


class Failed(Exception):
    def __init__(
        self, reason: str, *, code: str, attempts: int, dead: bool = False, failover: bool = False
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.attempts = attempts
        self.dead = dead
        self.failover = failover


# Answers that kill a webhook for good: the delivery code, and the state a health check reports.
DEAD_STATUS = {
    401: ("unauthorized", "token rejected (401)"),
    403: ("forbidden", "forbidden (403)"),
    404: ("webhook_deleted", "webhook deleted (404)"),
}

# ---------------------------------------------------------------------------- per-loop runtime


@dataclass(eq=False)
class LoopRuntime:
    """One aiohttp session and rate limiter per event loop (in a ``PerLoop``)."""

    session: aiohttp.ClientSession
    limiter: RateLimiter
    _closer: AsyncGenerator[None] | None = field(default=None, repr=False)

    async def close_with_loop(self) -> None:
        """Close the session when its loop shuts down (Prefect runs async tasks of sync flows
        on short-lived loops), instead of aiohttp's "Unclosed client session" at exit."""
        if self._closer is None:
            self._closer = await close_at_loop_shutdown(self._close_session)

    async def _close_session(self) -> None:
        if not self.session.closed:
            with contextlib.suppress(Exception):
                await self.session.close()


def _new_runtime(
    previous: LoopRuntime | None, state_database: DatabaseBlock | str | None = None
) -> LoopRuntime:
    import aiohttp  # lazily: `import prefect_atlas` does not pay for aiohttp

    # a closed session is replaced, but what the limiter learned is kept
    if previous is not None:
        limiter = previous.limiter
    elif state_database is not None:
        from prefect_atlas.discord.shared_limits import SharedRateLimiter

        limiter = SharedRateLimiter(state_database)
    else:
        limiter = RateLimiter()
    return LoopRuntime(session=aiohttp.ClientSession(raise_for_status=False), limiter=limiter)


def _live(runtime: LoopRuntime) -> bool:
    return not runtime.session.closed


def runtimes(state_database: DatabaseBlock | str | None) -> PerLoop[LoopRuntime]:
    """The HTTP session and rate limiter per loop of one rate-limit budget, from the process
    runtime.

    Why not on a block instance: hooks load the block anew for every alert, and Prefect copies
    blocks freely; limiters per instance would each believe they own a webhook's budget.
    Every block of the process that shares a budget (the same state database, or none)
    shares one limiter and one session per event loop.
    """
    if state_database is None:
        key = "local"
    elif isinstance(state_database, str):
        key = f"saved:{state_database}"
    else:
        key = f"db:{state_database._runtime_key()}"
    return _runtime.shared("discord-runtime", key, PerLoop)


def runtime(state_database: DatabaseBlock | str | None) -> LoopRuntime:
    """This event loop's session and limiter for the budget (a closed session is replaced)."""
    return runtimes(state_database).get_or_create(
        lambda previous: _new_runtime(previous, state_database), reuse=_live
    )


async def close(state_database: DatabaseBlock | str | None) -> None:
    """Close this event loop's session (and a shared limiter's connection); the next send opens new
    ones."""
    from prefect_atlas.discord.shared_limits import SharedRateLimiter

    current = runtimes(state_database).pop()
    if current is not None and not current.session.closed:
        await current.session.close()
    if current is not None and isinstance(current.limiter, SharedRateLimiter):
        await current.limiter.aclose()


# ---------------------------------------------------------------------------- tries


async def post(
    runtime: LoopRuntime,
    route: str,
    channel: Channel,
    webhook_url: str,
    payload: dict[str, Any],
    deadline_at: float,
    *,
    timeout: float,
    max_attempts: int,
    redact: Callable[[str], str],
) -> Sent:
    """POST to one webhook with retries: 429 waits ``retry_after``, 5xx/timeouts back off.

    ``route`` is the webhook id (Discord's major parameter); ``redact`` cleans Discord's own
    error messages before they reach a reason. Raises :class:`Failed` when it gives up.
    """
    await runtime.close_with_loop()
    attempts = 0

    async def attempt() -> str | None:
        nonlocal attempts
        attempts += 1
        return await _attempt(
            runtime, route, webhook_url, payload, deadline_at, timeout=timeout, redact=redact
        )

    try:
        message_id = await arun(
            attempt,
            classify=_retry_on,
            attempts=max_attempts,
            timeout=None,
            wait_initial=0.5,
            wait_max=10.0,
            wait_jitter=1.0,
        )
    except _Transient as exc:
        raise Failed(
            f"gave up on the {channel.value} webhook after {attempts} attempt(s): {exc.reason}",
            code="attempts_exhausted",
            attempts=attempts,
        ) from None
    except _Permanent as exc:
        raise Failed(
            exc.reason, code=exc.code, attempts=attempts, dead=exc.dead, failover=exc.failover
        ) from None
    return Sent(message_id=message_id, attempts=attempts)


async def _attempt(
    runtime: LoopRuntime,
    route: str,
    webhook_url: str,
    payload: dict[str, Any],
    deadline_at: float,
    *,
    timeout: float,
    redact: Callable[[str], str],
) -> str | None:
    import asyncio

    limiter = runtime.limiter
    # Never wait longer than the cap, nor past this alert's deadline: the fallback may take it.
    max_wait = min(MAX_RETRY_AFTER, max(0.0, deadline_at - asyncio.get_running_loop().time()))
    try:
        async with limiter.slot(route, max_wait=max_wait) as turn:
            return await _request(
                runtime, turn, webhook_url, payload, max_wait, timeout=timeout, redact=redact
            )
    except WaitTooLong as exc:
        raise _Permanent(
            f"rate limited: the bucket is empty for another {exc.wait:.0f} s (over the "
            f"{max_wait:.0f} s this alert may wait)",
            code="rate_limited",
            failover=True,
        ) from None


async def _request(
    runtime: LoopRuntime,
    turn: Turn,
    webhook_url: str,
    payload: dict[str, Any],
    max_wait: float,
    *,
    timeout: float,
    redact: Callable[[str], str],
) -> str | None:
    """One POST, inside the route's turn; the answer's headers teach the limiter."""
    import aiohttp

    try:
        async with runtime.session.post(
            webhook_url,
            params={"wait": "true"},
            json=payload,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as response:
            status = response.status
            headers = response.headers
            body = await response.read()
    except TimeoutError:
        raise _Transient(f"no answer within {timeout:g} s") from None
    except aiohttp.ClientError as exc:
        raise _Transient(f"connection error ({type(exc).__name__})") from None
    has_limits = turn.update(headers)
    data = _json(body)
    if status == 429:
        # NaN, negative, non-numeric or missing: 1 s; negatives are "now" (0 s).
        parsed = parse_seconds(data.get("retry_after"))
        if parsed is None:
            parsed = parse_seconds(headers.get("Retry-After"))
        retry_after = 1.0 if parsed is None else parsed
        is_global = (
            bool(data.get("global")) or headers.get("X-RateLimit-Global", "").lower() == "true"
        )
        # Discord's own 429s carry bucket headers, or (global limit) a JSON body with
        # retry_after and X-RateLimit-Global/Scope. A 429 with neither is Cloudflare's
        # ban page: retrying would only extend the ban.
        from_discord = has_limits or "retry_after" in data or "X-RateLimit-Scope" in headers
        if not from_discord:
            raise _Permanent(
                "Discord answered 429 without rate-limit headers (a Cloudflare ban of this IP); "
                "stopped at once instead of retrying, which would extend the ban",
                code="banned",
            )
        if retry_after > max_wait:
            turn.penalize(retry_after, is_global=is_global)
            raise _Permanent(
                f"rate limited for {retry_after:g} s (over the "
                f"{max_wait:.0f} s this alert may wait); not waiting that long",
                code="rate_limited",
                failover=True,
            )
        turn.penalize(retry_after, is_global=is_global)
        raise _Transient(f"rate limited (429, retry_after {retry_after:g} s)", backoff=retry_after)

    if 200 <= status < 300:
        message_id = data.get("id")
        return str(message_id) if message_id is not None else None
    message = redact(str(data.get("message") or "")[:200])
    detail = f"{status} {message}".strip()
    if status in DEAD_STATUS:
        raise _Permanent(f"Discord answered {detail}", code=DEAD_STATUS[status][0], dead=True)
    if status >= 500:
        raise _Transient(f"Discord answered {detail}")
    raise _Permanent(f"Discord rejected the message: {detail}", code="rejected")


def _json(body: bytes) -> dict[str, Any]:
    import orjson

    try:
        data = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}
