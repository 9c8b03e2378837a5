"""Which install command each missing dependency names, and the demo's precheck."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from prefect_atlas import MissingExtraError
from prefect_atlas._extras import EXTRAS, extra_of, is_installed, require


def _python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_parquet_is_core_and_never_asks_for_hf(monkeypatch: pytest.MonkeyPatch) -> None:
    assert extra_of("pyarrow.parquet") is None
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(MissingExtraError) as caught:
        require("pyarrow.parquet", purpose="Storing visuals as Parquet")
    message = str(caught.value)
    assert "[hf]" not in message
    assert "pip install --force-reinstall prefect-atlas" in message
    assert caught.value.extra is None


@pytest.mark.parametrize(
    ("module", "extra"),
    [("pgserver", "embedded"), ("google.cloud.storage", "gcs"), ("huggingface_hub", "hf")],
)
def test_optional_modules_name_their_extra(
    module: str, extra: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(MissingExtraError) as caught:
        require(module, purpose="A feature")
    assert f"pip install 'prefect-atlas[{extra}]'" in str(caught.value)


def test_every_extra_in_the_map_is_declared() -> None:
    import tomllib

    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    declared = pyproject["project"]["optional-dependencies"]
    assert {e for e in EXTRAS.values() if e is not None} <= set(declared)
    assert not any("pyarrow" in dep for dep in declared["hf"])
    assert any(dep.startswith("pyarrow") for dep in pyproject["project"]["dependencies"])


def test_is_installed_does_not_import(monkeypatch: pytest.MonkeyPatch) -> None:
    assert is_installed("pyarrow")
    assert not is_installed("prefect_atlas_no_such_module")
    monkeypatch.setitem(sys.modules, "pgserver", None)
    assert not is_installed("pgserver")


def test_import_does_not_load_pyarrow() -> None:
    out = _python("import sys, prefect_atlas; print('pyarrow' in sys.modules)")
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"


def test_demo_without_pgserver_stops_at_once_with_one_line(tmp_path: Path) -> None:
    atlas_home, prefect_home = tmp_path / "atlas", tmp_path / "prefect"
    code = (
        "import sys; sys.modules['pgserver'] = None\n"
        "from prefect_atlas.cli import main\n"
        "sys.exit(main(['demo']))\n"
    )
    out = _python(code, env={"ATLAS_HOME": str(atlas_home), "PREFECT_HOME": str(prefect_home)})
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("prefect-atlas: error: The demo's embedded PostgreSQL")
    assert lines[0].endswith("Install it with: pip install 'prefect-atlas[embedded]'.")
    # no work was done: no database folder, no Prefect API database
    assert not (atlas_home / "postgres").exists()
    assert not (prefect_home / "prefect.db").exists()
