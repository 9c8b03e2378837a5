"""Atlas 0.2.1's utilities (``atlas.utils``): the retry decorator, id validators, health check.

Each is a thin face over prefect-atlas's own: :mod:`prefect_atlas._retry` (the one retry
runner, on stamina), :mod:`prefect_atlas.youtube.ids` and :mod:`prefect_atlas.health`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, TypeVar

from prefect_atlas.youtube.ids import is_channel_id, is_video_id

P = ParamSpec("P")
T = TypeVar("T")


def retry_async(
    max_attempts: int = 3,
    delay: float = 1.0,
    backoff: float = 2.0,
    exceptions: tuple[type[Exception], ...] = (Exception,),
) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """Retry a function on ``exceptions``, ``max_attempts`` tries in all, waiting longer each time.

    As in 0.2.1 the first wait is ``delay`` seconds and the waits grow; they now double
    (stamina's curve) up to the longest wait 0.2.1 made, ``delay * backoff ** (max_attempts
    - 2)``, each plus up to ``delay / 10`` of random jitter so that many workers do not retry
    in step. Works on async and sync functions. For database code prefer
    :func:`prefect_atlas.resilience.retrying`, which retries only transient errors.
    """
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
    if delay < 0 or backoff < 1:
        raise ValueError(f"delay must be >= 0 and backoff >= 1, got {delay} and {backoff}")
    from prefect_atlas import _retry  # stamina loads when a function is decorated

    longest = delay * backoff ** max(max_attempts - 2, 0)
    return _retry.decorator(
        on=exceptions,
        attempts=max_attempts,
        timeout=None,
        wait_initial=delay,
        wait_max=max(longest, delay),
        wait_jitter=delay * 0.1,
    )


def validate_youtube_id(video_id: str) -> bool:
    """True when ``video_id`` is a well-formed YouTube video id (11 URL-safe characters)."""
    return is_video_id(video_id)


def validate_channel_id(channel_id: str) -> bool:
    """True when ``channel_id`` is a well-formed channel id (``UC`` + 22 characters)."""
    return is_channel_id(channel_id)


async def health_check_all(timeout: float = 5.0) -> dict[str, bool]:
    """Whether each component answers: ``database``, ``event spool``, ``vault``, ``discord``.

    0.2.1 checked the database only (``{"database": True}``); the key is the same. Uses the
    blocks behind ``db``, ``vault`` and ``notifier``; never raises for a component that is
    down.
    """
    from prefect_atlas.compat import _config
    from prefect_atlas.database import DatabaseBlock
    from prefect_atlas.discord import DiscordBlock
    from prefect_atlas.health import acheck_system
    from prefect_atlas.vault import VaultBlock

    report = await acheck_system(
        await _config.ablock(DatabaseBlock),
        await _config.ablock(VaultBlock),
        await _config.ablock(DiscordBlock),
        timeout=timeout,
    )
    return {component.component: component.ok for component in report.components}
