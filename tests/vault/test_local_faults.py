"""Real OS faults under the local provider: a full disk (ENOSPC), a read-only filesystem
(EROFS) and a permission refusal (EACCES), each in a child process.

The full and read-only disks are small tmpfs mounts in a private mount namespace
(``unshare -m``: they vanish with the child and nobody else sees them); EACCES comes from a
child that runs without the capability that lets root ignore file modes (``setpriv``).
Both need root on Linux; elsewhere the tests say so and skip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

CHILD = r"""
import json, subprocess, sys
from pathlib import Path
from prefect_atlas import VaultBlock
from prefect_atlas.vault.errors import VaultBatchError

root, steps = sys.argv[1], json.loads(sys.argv[2])
vault = VaultBlock(root=root)
results = []
for step in steps:
    op = step["op"]
    try:
        if op == "remount-ro":
            subprocess.run(["mount", "-o", "remount,ro", step["mount"]], check=True)
            result = {"ok": True}
        elif op == "bytes":
            vault.store_bytes(step["path"], b"x" * step["size"])
            result = {"ok": True}
        elif op == "batch":
            result = {
                "ok": True,
                "paths": vault.store_batch([(p, b"x" * n) for p, n in step["items"]]),
            }
        elif op == "delete":
            result = {"ok": True, "removed": vault.delete_object(step["path"])}
    except Exception as exc:
        result = {
            "ok": False,
            "types": [c.__name__ for c in type(exc).__mro__],
            "message": str(exc),
        }
        if isinstance(exc, VaultBatchError):
            result.update(written=exc.written, not_written=exc.not_written, unknown=exc.unknown)
    results.append(result)
temp = [p.name for p in Path(root).rglob("*.tmp")] if Path(root).exists() else []
print(json.dumps({"results": results, "list": vault.list_objects(), "temp": temp}))
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PREFECT_API_URL": ""}


def _run(
    prefix: list[str], root: Path, steps: list[dict[str, Any]], tmp_path: Path
) -> dict[str, Any]:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    proc = subprocess.run(
        [*prefix, sys.executable, str(script), str(root), json.dumps(steps)],
        capture_output=True,
        text=True,
        timeout=180,
        env=_env(),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    outcome: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return outcome


def _private_tmpfs(mount: Path, size: str) -> list[str]:
    """A command prefix running the child in its own mount namespace with a tmpfs at ``mount``."""
    if sys.platform != "linux" or os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip(
            "a real full or read-only disk needs root on Linux (unshare -m and a tmpfs mount)"
        )
    mount.mkdir(parents=True, exist_ok=True)
    probe = subprocess.run(
        ["unshare", "-m", "mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip(f"mount namespaces are not available here: {probe.stderr.strip()}")
    return [
        "unshare",
        "-m",
        "sh",
        "-c",
        f'mount -t tmpfs -o size={size} tmpfs "$0" && exec "$@"',
        str(mount),
    ]


def test_full_disk_is_a_vault_error_naming_path_and_fix(tmp_path: Path) -> None:
    mount = tmp_path / "small"
    prefix = _private_tmpfs(mount, "64k")
    root = mount / "vault"
    out = _run(
        prefix,
        root,
        [
            {"op": "bytes", "path": "a/one.bin", "size": 1000},
            {"op": "bytes", "path": "a/big.bin", "size": 300_000},
            {
                "op": "batch",
                "items": [
                    ["b/1.bin", 1000],
                    ["b/2.bin", 1000],
                    ["b/big.bin", 300_000],
                    ["b/3.bin", 1000],
                ],
            },
        ],
        tmp_path,
    )
    first, big, batch = out["results"]
    assert first == {"ok": True}
    assert not big["ok"] and big["types"][:2] == ["VaultError", "AtlasError"]
    assert big["message"].startswith(
        f"write of 'a/big.bin' in local vault {root} failed: no space left (ENOSPC)"
    )
    assert "Free space" in big["message"] and "set `root`" in big["message"]
    assert batch["types"][0] == "VaultBatchError"
    assert (batch["written"], batch["not_written"], batch["unknown"]) == (
        ["b/1.bin", "b/2.bin"],
        ["b/big.bin", "b/3.bin"],
        [],
    )
    assert "stored 2 of 4 objects" in batch["message"] and "ENOSPC" in batch["message"]
    assert out["list"] == ["a/one.bin", "b/1.bin", "b/2.bin"], (
        "exactly what was reported, nothing partial"
    )
    assert out["temp"] == [], "a failed write left its temp file behind"


def test_read_only_filesystem_is_an_access_error(tmp_path: Path) -> None:
    mount = tmp_path / "ro"
    prefix = _private_tmpfs(mount, "1m")
    root = mount / "vault"
    out = _run(
        prefix,
        root,
        [
            {"op": "bytes", "path": "kept.bin", "size": 10},
            {"op": "remount-ro", "mount": str(mount)},
            {"op": "bytes", "path": "new/x.bin", "size": 10},
            {"op": "bytes", "path": "kept.bin", "size": 20},
            {"op": "delete", "path": "kept.bin"},
            {"op": "batch", "items": [["kept.bin", 5], ["y.bin", 5]]},
        ],
        tmp_path,
    )
    _, _, new, over, delete, batch = out["results"]
    for result, path, op in (
        (new, "new/x.bin", "write"),
        (over, "kept.bin", "write"),
        (delete, "kept.bin", "delete"),
    ):
        assert "VaultAccessError" in result["types"], result
        assert result["message"].startswith(
            f"{op} of {path!r} in local vault {root} failed: the filesystem"
        )
        assert "is read-only (EROFS). Mount it read-write, or set `root`" in result["message"]
    assert batch["types"][:2] == ["VaultBatchAccessError", "VaultBatchError"]
    assert (batch["written"], batch["not_written"]) == ([], ["kept.bin", "y.bin"])
    assert out["list"] == ["kept.bin"]


def test_permission_denied_is_an_access_error(tmp_path: Path) -> None:
    if sys.platform != "linux" or os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("EACCES as root needs setpriv (dropping CAP_DAC_OVERRIDE)")
    root = tmp_path / "vault"
    (root / "open").mkdir(parents=True)
    (root / "shut").mkdir()
    (root / "shut" / "old.bin").write_bytes(b"old")
    (root / "shut").chmod(0o555)
    prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner", "--"]
    try:
        out = _run(
            prefix,
            root,
            [
                {"op": "bytes", "path": "shut/new.bin", "size": 10},
                {"op": "batch", "items": [["open/1.bin", 3], ["shut/2.bin", 3], ["open/3.bin", 3]]},
            ],
            tmp_path,
        )
    finally:
        (root / "shut").chmod(0o755)
    single, batch = out["results"]
    assert "VaultAccessError" in single["types"]
    assert single["message"].startswith(
        f"write of 'shut/new.bin' in local vault {root} failed: permission denied "
        "(EACCES). Give the user running the flow read and write access"
    )
    assert batch["types"][0] == "VaultBatchAccessError"
    assert (batch["written"], batch["not_written"]) == (
        ["open/1.bin"],
        ["shut/2.bin", "open/3.bin"],
    )
    assert out["list"] == ["open/1.bin", "shut/old.bin"]
