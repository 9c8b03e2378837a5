"""Renamed public names: the new ones are the same objects, the old ones warn and still work."""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path

import pytest

from prefect_atlas import VaultBlock


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


def _local_vault(tmp_path: Path) -> VaultBlock:
    vault = VaultBlock(provider="local", root=str(tmp_path / "vault"))
    vault.store_json("a/one.json", {"n": 1})
    vault.store_json("a/two.json", {"n": 2})
    return vault


async def _alocal_vault(tmp_path: Path) -> VaultBlock:
    vault = VaultBlock(provider="local", root=str(tmp_path / "vault"))
    await vault.astore_json("a/one.json", {"n": 1})
    await vault.astore_json("a/two.json", {"n": 2})
    return vault


def test_vault_new_names_do_not_warn(tmp_path: Path) -> None:
    vault = _local_vault(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        assert vault.list_objects("a") == ["a/one.json", "a/two.json"]
        assert vault.delete_object("a/one.json") is True
        assert vault.list_objects() == ["a/two.json"]


def test_vault_list_is_deprecated(tmp_path: Path) -> None:
    vault = _local_vault(tmp_path)
    with pytest.warns(DeprecationWarning, match=r"list_objects"):
        assert vault.list("a") == ["a/one.json", "a/two.json"]


async def test_vault_alist_is_deprecated(tmp_path: Path) -> None:
    vault = await _alocal_vault(tmp_path)
    with pytest.warns(DeprecationWarning, match=r"alist_objects"):
        assert await vault.alist("a") == ["a/one.json", "a/two.json"]


def test_vault_delete_on_an_instance_is_deprecated(tmp_path: Path) -> None:
    vault = _local_vault(tmp_path)
    with pytest.warns(DeprecationWarning, match=r"delete_object"):
        assert vault.delete("a/one.json") is True
    assert vault.list_objects() == ["a/two.json"]


async def test_vault_adelete_on_an_instance_is_deprecated(tmp_path: Path) -> None:
    vault = await _alocal_vault(tmp_path)
    with pytest.warns(DeprecationWarning, match=r"adelete_object"):
        assert await vault.adelete("a/one.json") is True
    assert await vault.alist_objects() == ["a/two.json"]


def test_vault_delete_on_the_class_is_still_the_block_documents_delete() -> None:
    from prefect.blocks.core import Block

    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        assert VaultBlock.delete.__func__ is Block.delete.__func__  # type: ignore[attr-defined]
        assert VaultBlock.adelete.__func__ is Block.adelete.__func__  # type: ignore[attr-defined]


def test_the_provider_interface_and_the_settings_literal_have_their_own_names() -> None:
    from typing import get_args

    from prefect_atlas.settings import VaultProvider
    from prefect_atlas.vault import _base
    from prefect_atlas.vault._local import LocalProvider

    assert issubclass(LocalProvider, _base.StorageProvider)
    assert set(get_args(VaultProvider)) == {"local", "gcs", "huggingface"}
    assert _base.VaultProvider is _base.StorageProvider  # the interface's former name
