"""deployments.yaml is checked strictly: Prefect ignores unknown keys, we do not."""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import pytest
import yaml
from prefect.cli.deploy._models import PrefectYamlModel
from prefect.flows import Flow, load_flow_from_entrypoint
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parent.parent
DEPLOYMENTS = ROOT / "deployments.yaml"


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (through Optional, list, Union, forward refs)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    if get_origin(annotation) in (Union, types.UnionType, list, typing.List, dict):  # noqa: UP006
        for arg in get_args(annotation):
            found += _models_in(arg)
    return found


def strict_errors(model: type[BaseModel], data: Any, path: str = "") -> list[str]:
    """Every key of ``data`` that ``model`` (recursively) does not declare."""
    if isinstance(data, list):
        return [
            e for i, item in enumerate(data) for e in strict_errors(model, item, f"{path}[{i}]")
        ]
    if not isinstance(data, dict):
        return []
    model.model_rebuild()
    fields = {(f.alias or name): f for name, f in model.model_fields.items()}
    errors: list[str] = []
    for key, value in data.items():
        field = fields.get(key)
        if field is None:
            errors.append(
                f"{path}.{key}: unknown key for {model.__name__} (known: {sorted(fields)})"
            )
            continue
        candidates = _models_in(field.annotation)
        if candidates:
            # a union (e.g. Prefect's ScheduleItem) is fine when one of its models fits
            options: list[list[str]] = [
                strict_errors(sub, value, f"{path}.{key}") for sub in candidates
            ]
            best = min(options, key=len)
            errors += best
    return errors


def load() -> dict[str, Any]:
    data = yaml.safe_load(DEPLOYMENTS.read_text())
    assert isinstance(data, dict)
    return data


def test_deployments_yaml_passes_prefects_model_with_unknown_keys_rejected() -> None:
    data = load()
    PrefectYamlModel.model_validate(data)
    assert strict_errors(PrefectYamlModel, data) == []
    assert {d["name"] for d in data["deployments"]} == {
        "atlas-ingest",
        "atlas-replay",
        "atlas-health",
        "atlas-drain",
        "atlas-maintenance",
    }


def test_strict_check_catches_a_misplaced_key() -> None:
    data = load()
    data["deployments"][0]["job_variables"] = {"env": {}}  # belongs under work_pool
    data["deployments"][0]["work_pool"]["jobvariables"] = {}
    errors = strict_errors(PrefectYamlModel, data)
    assert any("deployments[0].job_variables" in e for e in errors)
    assert any("deployments[0].work_pool.jobvariables" in e for e in errors)


@pytest.mark.parametrize("index", [0, 1, 2, 3, 4])
def test_entrypoints_load_and_parameters_fit_the_flow(
    index: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    deployment = load()["deployments"][index]
    flow: Flow[..., Any] = load_flow_from_entrypoint(deployment["entrypoint"])
    # raises ParameterTypeError when a parameter is unknown or of the wrong type
    flow.validate_parameters(deployment.get("parameters", {}))
    for schedule in deployment.get("schedules", []):
        assert schedule.get("active") is True
