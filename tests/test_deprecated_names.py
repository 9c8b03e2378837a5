"""Renamed public names: the new ones are the same objects, the old ones warn and still work."""

from __future__ import annotations

import importlib

import pytest


def test_upsert_rows_lives_in_the_database_tasks_module() -> None:
    from prefect_atlas import tasks
    from prefect_atlas.tasks import database

    assert tasks.upsert_rows is database.upsert_rows
    assert database.upsert_rows.name == "upsert-rows"


def test_upsert_rows_from_the_events_tasks_module_is_deprecated() -> None:
    from prefect_atlas.tasks import database

    events = importlib.import_module("prefect_atlas.tasks.events")
    with pytest.warns(DeprecationWarning, match=r"prefect_atlas\.tasks\.database\.upsert_rows"):
        from prefect_atlas.tasks.events import upsert_rows
    assert upsert_rows is database.upsert_rows
    with pytest.raises(AttributeError):
        events.no_such_task  # noqa: B018
