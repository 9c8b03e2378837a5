"""Local-disk provider: atomic writes (temp file, fsync, rename) with the sha256 on the file.

A reader never sees a half-written file: data goes to a temp file in the same folder,
is fsynced, then renamed over the target (``os.replace``), or hard-linked for create-only
writes (``os.link`` fails atomically when the target exists), and the folder is fsynced.

Where the checksum lives, and why: the sha256 is stored in an extended attribute
(``user.atlas.sha256``) of the temp file before its fsync, so it belongs to the same inode
as the bytes and the rename publishes both at once. No crash can pair new data with an
old checksum, a reader gets bytes and checksum from the one file it opened, and a write
costs one file fsync and one folder fsync. (A separate sidecar file needs its own temp
file, fsync, rename and folder fsync: about twice the synchronous disk work, which was
most of the cost of ``store_visuals``.) The digest is computed while the bytes are
written (:class:`~prefect_atlas.vault.integrity.HashingWriter`), never by re-reading.

What verification means then: bit rot, truncation or an in-place edit of the file keeps the
attribute and is reported (:class:`~prefect_atlas.VaultIntegrityError`); a file replaced by
a *new* inode without the attribute (a copy or restore that drops xattrs: use ``cp -a``,
``rsync -X``, ``tar --xattrs``) carries no checksum and is served unverified, like a file
put there by hand. Filesystems without user xattrs (some network or FAT mounts) fall back
to sidecars under ``<root>/.atlas/sha256/`` written atomically as before, which reads
also still honour (files written by earlier versions).

The sidecar fallback needs a lock: data and sidecar are two files, so two overwrites of one
path could interleave (sidecar of one writer, data of the other: a file reported corrupt
for good) and a reader could pair old data with a new sidecar. Writers there hold an
exclusive ``fcntl.flock`` on ``<root>/.atlas/locks/<path>.lock`` from the sidecar write to
the data rename, readers a shared one while reading both. Lock files are empty and are
kept (removing a lock file others may hold would let two holders lock different inodes).
With xattrs none of this is needed: one inode, one rename.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from prefect_atlas.vault._base import VaultProvider
from prefect_atlas.vault.errors import VaultAccessError, VaultObjectExistsError
from prefect_atlas.vault.integrity import HashingWriter, Sink, verify
from prefect_atlas.vault.paths import RESERVED

SIDECARS = f"{RESERVED}/sha256"
LOCKS = f"{RESERVED}/locks"
XATTR = "user.atlas.sha256"
# The filesystem (or the OS) keeps no user extended attributes: use sidecar files.
_NO_XATTR = {errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.ENOSYS}

Fill = Callable[[Sink], None]


def _bytes(data: bytes) -> Fill:
    def fill(sink: Sink) -> None:
        sink.write(data)

    return fill


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _exists_error(target: Path) -> VaultObjectExistsError:
    return VaultObjectExistsError(
        f"local vault object {target} already exists and overwrite=False; pass overwrite=True to replace it"
    )


class LocalProvider(VaultProvider):
    name = "local"

    def __init__(self, root: Path, *, use_xattr: bool = True) -> None:
        self.root = root
        # Turned off for good the first time the filesystem refuses an attribute.
        self.use_xattr = use_xattr and hasattr(os, "setxattr")

    def describe(self) -> str:
        return f"local folder {self.root}"

    def _path(self, key: str) -> Path:
        return self.root / key

    def _sidecar(self, key: str) -> Path:
        return self.root / SIDECARS / f"{key}.sha256"

    @contextlib.contextmanager
    def _locked(self, key: str, *, shared: bool) -> Iterator[None]:
        """Hold the sidecar fallback's per-path lock (see the module docstring)."""
        lock = self.root / LOCKS / f"{key}.lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    # ------------------------------------------------------------------ writing

    def _record_xattr(self, fd: int, checksum: str) -> bool:
        if not self.use_xattr:
            return False
        try:
            os.setxattr(fd, XATTR, checksum.encode())
        except OSError as exc:
            if exc.errno not in _NO_XATTR:
                raise
            self.use_xattr = False
            return False
        return True

    def _write_atomic(self, target: Path, fill: Fill, *, overwrite: bool, key: str | None) -> int:
        """Write what ``fill`` produces to ``target`` atomically; return the size.

        ``key`` set: record the sha256 of the bytes (xattr, else a sidecar). ``key`` None:
        a plain atomic write (the sidecars themselves).
        """
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        tmp = Path(tmp_name)
        sidecar: str | None = None
        try:
            with os.fdopen(fd, "wb") as fh:
                sink = HashingWriter(fh)
                fill(sink)
                fh.flush()
                if key is not None and not self._record_xattr(fh.fileno(), sink.hexdigest()):
                    sidecar = sink.hexdigest()
                os.fsync(fh.fileno())
            # Sidecar fallback: two files, published under the per-path lock readers share.
            pair = (key, sidecar) if key is not None and sidecar is not None else None
            with self._locked(pair[0], shared=False) if pair else contextlib.nullcontext():
                if overwrite:
                    if pair:
                        # Sidecar first: if the data rename then fails, the old data no longer
                        # verifies and the reader is told, rather than trusting unchecked bytes.
                        self._write_sidecar(*pair)
                    os.replace(tmp, target)
                else:
                    try:
                        os.link(tmp, target)
                    except FileExistsError:
                        raise _exists_error(target) from None
                    tmp.unlink()
                    if pair:
                        self._write_sidecar(*pair)  # only the winner of the link writes it
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        _fsync_dir(target.parent)
        if key is not None and sidecar is None and self.use_xattr:
            # A sidecar left by an earlier version or a non-xattr mount is stale now.
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                self._sidecar(key).unlink()
        return sink.size

    def _write_sidecar(self, key: str, checksum: str) -> None:
        data = checksum.encode()
        self._write_atomic(self._sidecar(key), _bytes(data), overwrite=True, key=None)

    def _put_stream(self, key: str, fill: Fill, overwrite: bool) -> int:
        return self._write_atomic(self._path(key), fill, overwrite=overwrite, key=key)

    def _put(self, key: str, data: bytes, overwrite: bool) -> None:
        self._put_stream(key, _bytes(data), overwrite)

    async def put(self, key: str, data: bytes, *, overwrite: bool, content_type: str) -> None:
        await asyncio.to_thread(self._put, key, data, overwrite)

    async def put_stream(self, key: str, fill: Fill, *, overwrite: bool, content_type: str) -> int:
        # Straight into the temp file, hashed on the way: no in-memory copy, no re-read.
        return await asyncio.to_thread(self._put_stream, key, fill, overwrite)

    async def put_many(self, items: Sequence[tuple[str, bytes, str]], *, overwrite: bool) -> None:
        def run() -> None:
            for key, data, _ in items:
                self._put(key, data, overwrite)

        await asyncio.to_thread(run)

    # ------------------------------------------------------------------ reading

    @staticmethod
    def _read_xattr(fd: int) -> str | None:
        if not hasattr(os, "getxattr"):
            return None
        try:
            return os.getxattr(fd, XATTR).decode()
        except OSError as exc:
            if exc.errno == errno.ENODATA or exc.errno in _NO_XATTR:
                return None
            raise

    def _read(self, key: str) -> tuple[bytes, str | None] | None:
        """The bytes at ``key`` and the recorded sha256 (xattr, else sidecar), or None."""
        try:
            with open(self._path(key), "rb") as fh:
                data = fh.read()
                # Same open file as the bytes: a concurrent rename cannot mix two versions.
                expected = self._read_xattr(fh.fileno())
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        if expected is None:
            try:
                expected = self._sidecar(key).read_text().strip()
            except (FileNotFoundError, NotADirectoryError):
                # Written by hand (or copied without xattrs): nothing recorded to verify against.
                return data, None
        return data, expected

    def _get(self, key: str) -> bytes | None:
        if self.use_xattr:
            found = self._read(key)
        elif not self._path(key).is_file():
            return None  # no lock file for paths that were never written
        else:
            # Two files: read them under the lock writers hold from sidecar to rename.
            with self._locked(key, shared=True):
                found = self._read(key)
        if found is None:
            return None
        data, expected = found
        if expected is not None:
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

    def _unlink(self, key: str) -> bool:
        with contextlib.suppress(FileNotFoundError):
            self._sidecar(key).unlink()
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            return False
        return True

    def _delete(self, key: str) -> bool:
        if self.use_xattr or not self._path(key).is_file():
            return self._unlink(key)
        with self._locked(key, shared=False):
            return self._unlink(key)

    def _check(self) -> str:
        root = self.root
        if root.exists():
            if not root.is_dir():
                raise VaultAccessError(f"local vault root {root} is not a folder: set `root` to a folder")
            try:
                fd, probe = tempfile.mkstemp(dir=root, prefix=".atlas-health.", suffix=".tmp")
                os.close(fd)
                os.unlink(probe)
            except OSError as exc:
                raise VaultAccessError(
                    f"local vault root {root} is not writable ({exc.strerror}): fix its permissions or set `root`"
                ) from None
            return "folder exists and is writable"
        parent = root.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            raise VaultAccessError(
                f"local vault root {root} cannot be created ({parent} is not a writable folder): set `root`"
            )
        return f"folder will be created on first write (under {parent})"

    async def check(self) -> str:
        return await asyncio.to_thread(self._check)

    async def delete(self, key: str) -> bool:
        return await asyncio.to_thread(self._delete, key)
