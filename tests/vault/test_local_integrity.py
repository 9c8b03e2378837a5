"""Local provider: where the checksum lives (xattr, sidecar fallback) and streamed Parquet
writes."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pytest

from prefect_atlas import VaultBlock, VaultIntegrityError, VaultObjectExistsError
from prefect_atlas.vault import layout
from prefect_atlas.vault._local import XATTR, LocalProvider
from prefect_atlas.vault.integrity import sha256_hex

FRAMES = [
    {"t": i * 0.04, "label": f"person-{i % 3}", "box": [i, i + 1, 32, 64]} for i in range(500)
]


def _flip_byte_in_place(path: Path, offset: int) -> None:
    """Corrupt one byte without replacing the file (bit rot keeps the inode and its xattrs)."""
    with open(path, "r+b") as fh:
        fh.seek(offset)
        old = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([old[0] ^ 0xFF]))


def _tmp_files(root: Path) -> list[Path]:
    return list(root.rglob("*.tmp"))


async def test_checksum_is_an_xattr_of_the_file_itself(tmp_path: Path) -> None:
    vault = VaultBlock(root=str(tmp_path / "vault"))
    payload = b"evidence " * 1000
    await vault.astore_bytes("e/a.bin", payload)
    target = vault.local_root() / "e/a.bin"
    assert os.getxattr(target, XATTR).decode() == sha256_hex(payload)
    assert not (vault.local_root() / ".atlas").exists(), (
        "no sidecar when the filesystem keeps xattrs"
    )
    _flip_byte_in_place(target, 5)
    with pytest.raises(VaultIntegrityError, match="corrupt"):
        await vault.afetch_bytes("e/a.bin")
    os.truncate(target, 10)
    with pytest.raises(VaultIntegrityError):
        await vault.afetch_bytes("e/a.bin")


@pytest.mark.parametrize("as_table", [False, True], ids=["rows", "table"])
async def test_visuals_streamed_checksummed_and_verified(tmp_path: Path, as_table: bool) -> None:
    vault = VaultBlock(root=str(tmp_path / "vault"))
    frames = pa.Table.from_pylist(FRAMES) if as_table else FRAMES
    path = await vault.astore_visuals("vid-9", frames)
    assert path == layout.visuals_path("vid-9")
    target = vault.local_root() / path
    data = target.read_bytes()
    assert data[:4] == b"PAR1"
    assert os.getxattr(target, XATTR).decode() == sha256_hex(
        data
    )  # the digest of what was streamed
    assert await vault.afetch_visuals("vid-9") == FRAMES
    assert _tmp_files(vault.local_root()) == []
    _flip_byte_in_place(target, len(data) // 2)
    with pytest.raises(VaultIntegrityError) as info:
        await vault.afetch_visuals("vid-9")
    assert info.value.path == path


async def test_bad_visuals_leave_nothing_behind(tmp_path: Path) -> None:
    vault = VaultBlock(root=str(tmp_path / "vault"))
    await vault.astore_visuals("vid-1", FRAMES)
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError)):
        await vault.astore_visuals("vid-1", [{"t": 1.0}, {"t": "not a number"}])
    assert await vault.afetch_visuals("vid-1") == FRAMES  # the old file is untouched
    assert _tmp_files(vault.local_root()) == []


async def test_sidecar_fallback_without_xattrs(tmp_path: Path) -> None:
    """Filesystems without user xattrs keep the digest in an atomically written sidecar."""
    provider = LocalProvider(tmp_path / "vault", use_xattr=False)
    payload = b"fallback bytes"
    await provider.put("s/a.bin", payload, overwrite=True, content_type="application/octet-stream")
    await provider.put("s/b.bin", payload, overwrite=False, content_type="application/octet-stream")
    with pytest.raises(VaultObjectExistsError):
        await provider.put(
            "s/b.bin", b"other", overwrite=False, content_type="application/octet-stream"
        )
    for key in ("s/a.bin", "s/b.bin"):
        target = tmp_path / "vault" / key
        assert XATTR not in os.listxattr(target)
        assert provider._sidecar(key).read_text() == sha256_hex(payload)
        assert await provider.get(key) == payload
    (tmp_path / "vault/s/a.bin").write_bytes(b"fallback bytez")
    with pytest.raises(VaultIntegrityError):
        await provider.get("s/a.bin")
    assert await provider.list("") == ["s/a.bin", "s/b.bin"]


async def test_sidecar_of_an_earlier_write_is_honoured_then_replaced(tmp_path: Path) -> None:
    root = tmp_path / "vault"
    old = LocalProvider(root, use_xattr=False)  # as written by a version (or mount) without xattrs
    await old.put("m/x.json", b'{"v": 1}', overwrite=True, content_type="application/json")
    vault = VaultBlock(root=str(root))
    assert await vault.afetch_json("m/x.json") == {"v": 1}  # verified against the sidecar
    (root / "m/x.json").write_bytes(b'{"v": 2}')
    with pytest.raises(VaultIntegrityError):
        await vault.afetch_json("m/x.json")
    await vault.astore_json("m/x.json", {"v": 3})
    assert not old._sidecar("m/x.json").exists(), "a stale sidecar must not outlive the rewrite"
    assert await vault.afetch_json("m/x.json") == {"v": 3}


_RACER = """
import sys
from pathlib import Path
from prefect_atlas.vault._local import LocalProvider
from prefect_atlas._dispatch import run_sync

root, tag, rounds = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
provider = LocalProvider(root, use_xattr=False)
for i in range(rounds):
    payload = (tag * (1 + i % 7) * 4096).encode()
    run_sync(
        provider.put("hot/x.bin", payload, overwrite=True, content_type="application/octet-stream")
    )
print("done")
"""


async def test_sidecar_fallback_concurrent_overwrites_stay_consistent(tmp_path: Path) -> None:
    """Two writer processes overwrite one path while a reader reads it: never a false corruption."""
    import asyncio
    import subprocess
    import sys

    root = tmp_path / "vault"
    reader = LocalProvider(root, use_xattr=False)
    await reader.put(
        "hot/x.bin", b"S" * 64, overwrite=True, content_type="application/octet-stream"
    )
    env = {**os.environ, "PREFECT_API_URL": ""}
    writers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _RACER,
            str(root),
            tag,
            "150",
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        for tag in ("A", "B")
    ]
    waits = [asyncio.ensure_future(w.communicate()) for w in writers]
    reads = 0
    corrupt: list[str] = []
    while not all(w.done() for w in waits):
        try:
            data = await reader.get("hot/x.bin")
        except VaultIntegrityError as exc:
            corrupt.append(str(exc))
        else:
            assert data is not None and len(set(data)) == 1, "a torn file was served"
            reads += 1
    outputs = await asyncio.wait_for(asyncio.gather(*waits), 300)
    for (out, err), proc in zip(outputs, writers, strict=True):
        assert proc.returncode == 0 and b"done" in out, err[-2000:]
    assert corrupt == [], (
        f"{len(corrupt)} false corruption report(s) during concurrent overwrites: {corrupt[:2]}"
    )
    # Whatever writer won last, sidecar and data agree: the file is not left permanently "corrupt".
    final = await reader.get("hot/x.bin")
    assert final is not None and len(set(final)) == 1 and final[:1] in (b"A", b"B")
    assert reads > 0
