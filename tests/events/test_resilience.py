"""The retrying decorator and the circuit breaker (prefect_atlas.resilience)."""

from __future__ import annotations

import psycopg
import psycopg.errors
import pytest

from prefect_atlas.exceptions import DatabaseConnectionError
from prefect_atlas.resilience import (
    BreakerState,
    CircuitBreaker,
    is_connection_failure,
    is_transient,
    retrying,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_threshold_and_half_opens_after_cooldown() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=3, reset_timeout=5.0, clock=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
    breaker.record_failure()
    assert breaker.state.value == "open"
    assert not breaker.allow()
    clock.now += 4.9
    assert not breaker.allow()
    clock.now += 0.2
    assert breaker.state.value == "half-open"
    assert breaker.allow()  # the one probe
    assert not breaker.allow()  # nobody else while it runs
    breaker.record_failure()  # the probe failed: open again for a full cool-down
    assert breaker.state.value == "open"
    clock.now += 5.0
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow() and breaker.allow()


def test_breaker_success_resets_the_count() -> None:
    breaker = CircuitBreaker(failure_threshold=2, reset_timeout=1.0, clock=Clock())
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED


def test_breaker_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="failure_threshold"):
        CircuitBreaker(failure_threshold=0)
    with pytest.raises(ValueError, match="reset_timeout"):
        CircuitBreaker(reset_timeout=0)


def test_error_classification() -> None:
    assert is_connection_failure(psycopg.OperationalError("connection refused"))
    assert is_connection_failure(DatabaseConnectionError("down", target="x"))
    assert is_connection_failure(psycopg.errors.AdminShutdown())
    assert not is_connection_failure(psycopg.errors.SerializationFailure())
    assert is_transient(psycopg.errors.SerializationFailure())
    assert is_transient(psycopg.errors.DeadlockDetected())
    assert not is_transient(psycopg.errors.UniqueViolation())
    assert not is_transient(psycopg.errors.UndefinedTable())
    assert not is_transient(ValueError("bad"))


async def test_retrying_retries_transient_errors_only() -> None:
    calls: list[str] = []

    @retrying(attempts=4, wait_initial=0.001, wait_max=0.002, wait_jitter=0.001)
    async def flaky(kind: str) -> str:
        calls.append(kind)
        if kind == "transient" and len(calls) < 3:
            raise psycopg.errors.DeadlockDetected()
        if kind == "permanent":
            raise psycopg.errors.UniqueViolation()
        return "ok"

    assert await flaky("transient") == "ok"
    assert len(calls) == 3
    calls.clear()
    with pytest.raises(psycopg.errors.UniqueViolation):
        await flaky("permanent")
    assert len(calls) == 1


def test_retrying_sync_gives_up_after_attempts() -> None:
    calls = 0

    @retrying(attempts=3, wait_initial=0.001, wait_max=0.001, wait_jitter=0.0)
    def always_down() -> None:
        nonlocal calls
        calls += 1
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    with pytest.raises(psycopg.OperationalError):
        always_down()
    assert calls == 3
    with pytest.raises(ValueError, match="attempts"):
        retrying(attempts=0)
