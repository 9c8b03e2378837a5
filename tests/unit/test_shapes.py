"""One error tree and one health shape: every public error is an AtlasError, every report a
Health."""

from __future__ import annotations

import inspect

import pytest

from prefect_atlas import exceptions
from prefect_atlas.database import HealthReport
from prefect_atlas.discord.block import DiscordHealth
from prefect_atlas.events import EventStoreHealth
from prefect_atlas.health import ComponentHealth, Health
from prefect_atlas.vault import VaultHealth


def test_every_public_error_is_an_atlas_error_and_drawn_in_the_docstring() -> None:
    errors = [
        c
        for _, c in inspect.getmembers(exceptions, inspect.isclass)
        if issubclass(c, BaseException)
    ]
    assert len(errors) > 20
    doc = exceptions.__doc__ or ""
    for error in errors:
        assert issubclass(error, exceptions.AtlasError), error
        assert error.__module__ == "prefect_atlas.exceptions"
        assert error.__name__ in doc, error


def test_old_import_paths_and_builtins() -> None:
    from prefect_atlas.events.segments import SegmentError
    from prefect_atlas.events.store import ConcurrencyError, DeadLetterError
    from prefect_atlas.flows.health import ComponentDown
    from prefect_atlas.vault.errors import VaultPathError
    from prefect_atlas.youtube import AllKeysExhaustedError, InvalidYouTubeIdError

    assert issubclass(InvalidYouTubeIdError, ValueError) and issubclass(VaultPathError, ValueError)
    assert issubclass(SegmentError, ValueError) and issubclass(ComponentDown, RuntimeError)
    for error in (ConcurrencyError, DeadLetterError, AllKeysExhaustedError, InvalidYouTubeIdError):
        assert issubclass(error, exceptions.AtlasError)


@pytest.mark.parametrize(
    "model", [HealthReport, DiscordHealth, EventStoreHealth, VaultHealth, ComponentHealth]
)
def test_every_health_report_starts_with_the_one_shape(model: type[Health]) -> None:
    assert issubclass(model, Health)
    assert list(model.model_fields)[:3] == ["ok", "latency_ms", "detail"]


def test_database_reason_is_a_deprecated_alias_of_detail() -> None:
    down = HealthReport(ok=False, target="db", embedded=False, detail="refused")
    with pytest.warns(DeprecationWarning, match="detail"):
        assert down.reason == "refused"
    with pytest.warns(DeprecationWarning, match="detail"):
        assert (
            HealthReport(ok=True, target="db", embedded=False, detail="PostgreSQL 16").reason
            is None
        )
