"""``ApiKeyPool``: YouTube Data API keys handed out in turn, rotated on quota errors.

Why a pool: each key has a daily quota (10,000 units by default) that resets at midnight
Pacific time. When a call fails with ``quotaExceeded`` the caller reports it; the key is
set aside until its reset and the next key is handed out. In compliance mode only the first
key is used, whatever the pool holds.

Thread- and asyncio-safe: every state change happens under one ``threading.Lock`` held only
for a few dictionary operations, never across I/O, so async callers do not block the loop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from pydantic import SecretStr

from prefect_atlas.exceptions import AllKeysExhaustedError as AllKeysExhaustedError

_PACIFIC = ZoneInfo("America/Los_Angeles")


def next_quota_reset(now: datetime) -> datetime:
    """The next midnight in Pacific time (when YouTube resets daily quotas), in UTC."""
    local = now.astimezone(_PACIFIC)
    midnight = (local + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight.astimezone(UTC)


def mask_key(key: str) -> str:
    """A key's public label: its last 4 characters."""
    return f"…{key[-4:]}" if len(key) > 4 else "…"


@dataclass(frozen=True, slots=True)
class KeyStatus:
    """One key of an :class:`ApiKeyPool` as reports show it (never the key itself)."""

    label: str
    """The key's last 4 characters."""
    exhausted_until: datetime | None
    """When its exhausted quota resets, or None while it has quota."""


class ApiKeyPool:
    """A rotating pool of API keys. Keys are never shown: reports use their last 4 characters."""

    def __init__(
        self,
        keys: Iterable[SecretStr | str],
        *,
        compliance_mode: bool = False,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        secrets = [k if isinstance(k, SecretStr) else SecretStr(k) for k in keys]
        unique: list[SecretStr] = []
        for key in secrets:
            if key.get_secret_value() and key.get_secret_value() not in {
                u.get_secret_value() for u in unique
            }:
                unique.append(key)
        if not unique:
            raise ValueError(
                "the API key pool is empty: set YOUTUBE_API_KEY_POOL_JSON to a JSON list of keys"
            )
        self._keys = unique[:1] if compliance_mode else unique
        self.compliance_mode = compliance_mode
        """True when the pool uses only its first key (no rotation past quotas)."""
        self._clock = clock
        self._lock = threading.Lock()
        self._exhausted: dict[str, datetime] = {}
        self._current = 0

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return (
            f"ApiKeyPool(keys={len(self._keys)}, exhausted={len(self.exhausted())}, "
            f"compliance_mode={self.compliance_mode})"
        )

    def _release_expired(self, now: datetime) -> None:
        for key, until in list(self._exhausted.items()):
            if until <= now:
                del self._exhausted[key]

    def get(self) -> str:
        """The key to use now (the same one until it is reported exhausted)."""
        with self._lock:
            now = self._clock()
            self._release_expired(now)
            for offset in range(len(self._keys)):
                index = (self._current + offset) % len(self._keys)
                key = self._keys[index].get_secret_value()
                if key not in self._exhausted:
                    self._current = index
                    return key
            raise AllKeysExhaustedError(len(self._keys), min(self._exhausted.values()))

    def report_quota_exceeded(self, key: str) -> None:
        """Set ``key`` aside until the next quota reset and move on to the next key."""
        with self._lock:
            now = self._clock()
            self._exhausted[key] = next_quota_reset(now)
            if self._keys[self._current].get_secret_value() == key:
                self._current = (self._current + 1) % len(self._keys)

    def exhausted(self) -> list[KeyStatus]:
        """The keys out of quota now, with when each comes back."""
        with self._lock:
            self._release_expired(self._clock())
            return [KeyStatus(mask_key(k), until) for k, until in self._exhausted.items()]

    def status(self) -> list[KeyStatus]:
        """Every key with its state (``exhausted_until`` None when usable)."""
        with self._lock:
            self._release_expired(self._clock())
            return [
                KeyStatus(mask_key(k.get_secret_value()), self._exhausted.get(k.get_secret_value()))
                for k in self._keys
            ]
