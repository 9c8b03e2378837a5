"""Local-disk provider: atomic writes (temp file, fsync, rename) and sha256 sidecars.

A reader never sees a half-written file: data goes to a temp file in the same folder,
is fsynced, then renamed over the target (``os.replace``), or hard-linked for create-only
writes (``os.link`` fails atomically when the target exists). The sha256 of each file is
kept in a sidecar under ``<root>/.atlas/sha256/`` written the same way; a crash between the
two renames can leave a stale sidecar, which reads then report as an integrity error
rather than serve unverified bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from prefect_atlas.vault._base import VaultProvider
from prefect_atlas.vault.errors import VaultObjectExistsError
from prefect_atlas.vault.integrity import sha256_hex, verify
from prefect_atlas.vault.paths import RESERVED

SIDECARS = f"{RESERVED}/sha256"


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(target: Path, data: bytes, *, overwrite: bool) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, target)
        else:
            try:
                os.link(tmp, target)
            except FileExistsError:
                raise VaultObjectExistsError(
                    f"local vault object {target} already exists and overwrite=False; "
                    "pass overwrite=True to replace it"
                ) from None
            tmp.unlink()
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_dir(target.parent)


class LocalProvider(VaultProvider):
    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = root

    def describe(self) -> str:
        return f"local folder {self.root}"

    def _path(self, key: str) -> Path:
        return self.root / key

    def _sidecar(self, key: str) -> Path:
        return self.root / SIDECARS / f"{key}.sha256"

    def _put(self, key: str, data: bytes, overwrite: bool) -> None:
        target = self._path(key)
        checksum = sha256_hex(data).encode()
        if overwrite:
            # Sidecar first: if the data rename then fails, the old data no longer verifies
            # and the reader is told, rather than silently trusting bytes nobody checked.
            _write_atomic(self._sidecar(key), checksum, overwrite=True)
            _write_atomic(target, data, overwrite=True)
        else:
            # Create-only: the link decides the winner; only the winner writes the sidecar.
            _write_atomic(target, data, overwrite=False)
            _write_atomic(self._sidecar(key), checksum, overwrite=True)

    async def put(self, key: str, data: bytes, *, overwrite: bool, content_type: str) -> None:
        await asyncio.to_thread(self._put, key, data, overwrite)

    async def put_many(self, items: Sequence[tuple[str, bytes, str]], *, overwrite: bool) -> None:
        def run() -> None:
            for key, data, _ in items:
                self._put(key, data, overwrite)

        await asyncio.to_thread(run)

    def _get(self, key: str) -> bytes | None:
        try:
            data = self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        try:
            expected = self._sidecar(key).read_text().strip()
        except FileNotFoundError:
            # Written by hand or by an older version: nothing recorded to verify against.
            return data
        verify(key, data, algorithm="sha256", expected=expected, provider=self.name)
        return data

    async def get(self, key: str) -> bytes | None:
        return await asyncio.to_thread(self._get, key)

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self._path(key).is_file)

    def _list(self, prefix: str) -> list[str]:
        base = self._path(prefix) if prefix else self.root
        if not base.is_dir():
            return []
        keys: list[str] = []
        for folder, dirs, files in os.walk(base):
            rel_folder = Path(folder).relative_to(self.root).as_posix()
            if rel_folder == ".":
                dirs[:] = [d for d in dirs if d != RESERVED]
                rel_folder = ""
            for name in files:
                if name.startswith(".") and name.endswith(".tmp"):
                    continue  # an in-flight atomic write
                keys.append(f"{rel_folder}/{name}" if rel_folder else name)
        return sorted(keys)

    async def list(self, prefix: str) -> list[str]:
        return await asyncio.to_thread(self._list, prefix)

    def _delete(self, key: str) -> bool:
        with contextlib.suppress(FileNotFoundError):
            self._sidecar(key).unlink()
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            return False
        return True

    async def delete(self, key: str) -> bool:
        return await asyncio.to_thread(self._delete, key)
