"""Local-disk provider: atomic writes (temp file, fsync, rename) with the sha256 on the file,
never through a symbolic link.

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

Links, name limits and the mapping of OS refusals to vault errors are the safe folder and
file operations of :class:`~prefect_atlas.vault._fs.SafeRoot`, which the provider builds on.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Callable, Sequence
from pathlib import Path

from prefect_atlas.vault._base import REFUSALS, BatchFailed, StorageProvider
from prefect_atlas.vault._fs import (
    _CREATE,
    _DIR,
    _READ,
    TMP_PREFIX,
    TMP_SUFFIX,
    SafeRoot,
)
from prefect_atlas.vault.errors import VaultAccessError, VaultObjectExistsError, VaultPathError
from prefect_atlas.vault.integrity import HashingWriter, Sink, verify
from prefect_atlas.vault.paths import RESERVED

XATTR = "user.atlas.sha256"
# The filesystem (or the OS) keeps no user extended attributes: use sidecar files.
_NO_XATTR = {errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.ENOSYS}

Fill = Callable[[Sink], None]


def _bytes(data: bytes) -> Fill:
    def fill(sink: Sink) -> None:
        sink.write(data)

    return fill


class LocalProvider(SafeRoot, StorageProvider):
    name = "local"

    def __init__(self, root: Path, *, use_xattr: bool = True) -> None:
        super().__init__(root)
        # Turned off for good the first time the filesystem refuses an attribute.
        self.use_xattr = use_xattr and hasattr(os, "setxattr")

    def describe(self) -> str:
        return f"local folder {self.root}"

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

    def _create_temp(self, parts: list[str], key: str) -> tuple[int, int, str]:
        """The target's folder descriptor, a new temp file's descriptor in it, and its name.

        A folder removed while we opened it (ENOENT on create: its descriptor now names a
        deleted folder) is opened again, a few times.
        """
        for attempt in range(3):
            folder = self._open_dir(parts[:-1], create=True, key=key)
            assert folder is not None
            try:
                found = self._lstat(folder, parts[-1], key)
                if found is not None and stat.S_ISDIR(found.st_mode):
                    raise VaultPathError(
                        f"{self._where(key)} cannot be stored: a folder of that name is there"
                    )
                tmp = f"{TMP_PREFIX}{secrets.token_hex(8)}{TMP_SUFFIX}"
                return folder, os.open(tmp, _CREATE, 0o600, dir_fd=folder), tmp
            except FileNotFoundError:
                os.close(folder)
                if attempt == 2:
                    raise
            except BaseException:
                os.close(folder)
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _write_atomic(
        self, parts: list[str], fill: Fill, *, overwrite: bool, key: str, record: bool
    ) -> int:
        """Write what ``fill`` produces to ``parts`` (under the root) atomically; return the size.

        ``record``: record the sha256 of the bytes (xattr, else a sidecar); off for the
        sidecars themselves. ``key`` is the vault path the write is for (messages, locks).
        """
        name = parts[-1]
        tmp: str | None = None
        sidecar: str | None = None
        folder, fd, tmp = self._create_temp(parts, key)
        try:
            with os.fdopen(fd, "wb") as fh:
                sink = HashingWriter(fh)
                fill(sink)
                fh.flush()
                if record and not self._record_xattr(fh.fileno(), sink.hexdigest()):
                    sidecar = sink.hexdigest()
                os.fsync(fh.fileno())
            # Sidecar fallback: two files, published under the per-path lock readers share.
            with self._locked(key, shared=False) if sidecar else contextlib.nullcontext():
                if overwrite:
                    if sidecar:
                        # Sidecar first: if the data rename then fails, the old data no longer
                        # verifies and the reader is told, rather than trusting unchecked bytes.
                        self._write_sidecar(key, sidecar)
                    # rename replaces the name itself: it never writes through a link.
                    os.replace(tmp, name, src_dir_fd=folder, dst_dir_fd=folder)
                    tmp = None
                else:
                    try:
                        os.link(
                            tmp, name, src_dir_fd=folder, dst_dir_fd=folder, follow_symlinks=False
                        )
                    except FileExistsError:
                        raise VaultObjectExistsError(
                            f"{self._where(key)} already exists and "
                            "overwrite=False; pass overwrite=True to replace it"
                        ) from None
                    os.unlink(tmp, dir_fd=folder)
                    tmp = None
                    if sidecar:
                        self._write_sidecar(key, sidecar)  # only the winner of the link writes it
            os.fsync(folder)
        except BaseException:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=folder)
            raise
        finally:
            os.close(folder)
        if record and sidecar is None and self.use_xattr:
            # A sidecar left by an earlier version or a non-xattr mount is stale now.
            self._unlink_quietly(self._sidecar_parts(key), key)
        return sink.size

    def _unlink_quietly(self, parts: list[str], key: str) -> None:
        folder = self._open_dir(parts[:-1], create=False, key=key)
        if folder is None:
            return
        try:
            with contextlib.suppress(FileNotFoundError, IsADirectoryError, NotADirectoryError):
                os.unlink(parts[-1], dir_fd=folder)
        finally:
            os.close(folder)

    def _write_sidecar(self, key: str, checksum: str) -> None:
        data = checksum.encode()
        self._write_atomic(
            self._sidecar_parts(key), _bytes(data), overwrite=True, key=key, record=False
        )

    def _put_stream(self, key: str, fill: Fill, overwrite: bool) -> int:
        self.check_key(key)
        with self._mapped("write", key):
            return self._write_atomic(
                key.split("/"), fill, overwrite=overwrite, key=key, record=True
            )

    def _put(self, key: str, data: bytes, overwrite: bool) -> None:
        self._put_stream(key, _bytes(data), overwrite)

    async def put(self, key: str, data: bytes, *, overwrite: bool, content_type: str) -> None:
        await asyncio.to_thread(self._put, key, data, overwrite)

    async def put_stream(self, key: str, fill: Fill, *, overwrite: bool, content_type: str) -> int:
        # Straight into the temp file, hashed on the way: no in-memory copy, no re-read.
        return await asyncio.to_thread(self._put_stream, key, fill, overwrite)

    async def put_many(self, items: Sequence[tuple[str, bytes, str]], *, overwrite: bool) -> None:
        """Write one after the other; on a failure report exactly what is on disk.

        Every key is checked against the name limits first (nothing is written when one is
        too long). Each write is atomic, so a failed one left its path as it was, unless
        it failed after publishing (the folder's fsync): the path is then read back.
        """
        for key, _, _ in items:
            self.check_key(key)

        def run() -> None:
            written: set[str] = set()
            for key, data, _ in items:
                try:
                    self._put(key, data, overwrite)
                except Exception as exc:
                    unknown: set[str] = set()
                    if not isinstance(exc, REFUSALS):
                        try:
                            if self._get(key) == data:
                                written.add(key)
                        except Exception:
                            unknown.add(key)
                    raise BatchFailed(written=written, failed={key: exc}, unknown=unknown) from exc
                written.add(key)

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

    def _read_file(
        self, parts: list[str], key: str, *, xattr: bool
    ) -> tuple[bytes, str | None] | None:
        """The bytes of regular file ``parts`` (and its recorded sha256), or None; links raise."""
        folder = self._open_dir(parts[:-1], create=False, key=key)
        if folder is None:
            return None
        try:
            try:
                fd = os.open(parts[-1], _READ, dir_fd=folder)
            except FileNotFoundError:
                return None
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise self._link_error(key, repr("/".join(parts))) from None
                raise
        finally:
            os.close(folder)
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                return None  # a folder (or a FIFO, a device): not a vault object
            data = fh.read()
            # Same open file as the bytes: a concurrent rename cannot mix two versions.
            return data, self._read_xattr(fh.fileno()) if xattr else None

    def _read(self, key: str) -> tuple[bytes, str | None] | None:
        """The bytes at ``key`` and the recorded sha256 (xattr, else sidecar), or None."""
        found = self._read_file(key.split("/"), key, xattr=True)
        if found is None:
            return None
        data, expected = found
        if expected is None:
            recorded = self._read_file(self._sidecar_parts(key), key, xattr=False)
            if recorded is None:
                # Written by hand (or copied without xattrs): nothing recorded to verify against.
                return data, None
            expected = recorded[0].decode().strip()
        return data, expected

    def _is_file(self, key: str) -> bool:
        with self._parent(key) as (folder, name):
            found = None if folder is None else self._lstat(folder, name, key)
        return found is not None and stat.S_ISREG(found.st_mode)

    def _get(self, key: str) -> bytes | None:
        with self._mapped("read", key):
            if self.use_xattr:
                found = self._read(key)
            elif not self._is_file(key):
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

    def _exists(self, key: str) -> bool:
        with self._mapped("existence check", key):
            return self._is_file(key)

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self._exists, key)

    def _walk(self, folder: int, rel: str, keys: list[str], *, top: bool) -> None:
        """Collect regular files under descriptor ``folder``; links are not vault objects."""
        with os.scandir(folder) as entries:
            found = [
                (e.name, e.is_dir(follow_symlinks=False), e.is_file(follow_symlinks=False))
                for e in entries
            ]
        for name, is_dir, is_file in found:
            if is_dir:
                if top and name == RESERVED:
                    continue
                try:
                    child = os.open(name, _DIR, dir_fd=folder)
                except OSError:
                    continue  # removed, or swapped for a link, since it was listed
                try:
                    self._walk(child, f"{rel}{name}/", keys, top=False)
                finally:
                    os.close(child)
            elif is_file and not (name.startswith(".") and name.endswith(TMP_SUFFIX)):
                keys.append(f"{rel}{name}")  # (a ".tmp" dot-file is an in-flight atomic write)

    def _list(self, prefix: str) -> list[str]:
        with self._mapped("listing", prefix or "/"):
            parts = prefix.split("/") if prefix else []
            folder = self._open_dir(parts, create=False, key=prefix or "/")
            if folder is None:
                return []
            keys: list[str] = []
            try:
                self._walk(folder, f"{prefix}/" if prefix else "", keys, top=not prefix)
            finally:
                os.close(folder)
        return sorted(keys)

    async def list(self, prefix: str) -> list[str]:
        return await asyncio.to_thread(self._list, prefix)

    def _unlink(self, key: str) -> bool:
        with self._parent(key) as (folder, name):
            if folder is None:
                return False
            found = self._lstat(folder, name, key)
            if found is None or stat.S_ISDIR(found.st_mode):
                return False
            self._unlink_quietly(self._sidecar_parts(key), key)
            try:
                os.unlink(name, dir_fd=folder)
            except FileNotFoundError:
                return False
            return True

    def _delete(self, key: str) -> bool:
        with self._mapped("delete", key):
            if self.use_xattr or not self._is_file(key):
                return self._unlink(key)
            with self._locked(key, shared=False):
                return self._unlink(key)

    async def delete(self, key: str) -> bool:
        return await asyncio.to_thread(self._delete, key)

    def _check(self) -> str:
        root = self.root
        with self._mapped("health check", "/"):
            folder = self._open_dir([], create=False, key="/")
            if folder is not None:
                probe = f"{TMP_PREFIX}health-{secrets.token_hex(4)}{TMP_SUFFIX}"
                try:
                    os.close(os.open(probe, _CREATE, 0o600, dir_fd=folder))
                    os.unlink(probe, dir_fd=folder)
                except OSError as exc:
                    raise VaultAccessError(
                        f"local vault root {root} is not writable "
                        f"({exc.strerror}): fix its permissions or set `root`"
                    ) from None
                finally:
                    os.close(folder)
                return "folder exists and is writable"
        parent = self.real_root.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            raise VaultAccessError(
                f"local vault root {root} cannot be created "
                f"({parent} is not a writable folder): set `root`"
            )
        return f"folder will be created on first write (under {parent})"

    async def check(self) -> str:
        return await asyncio.to_thread(self._check)

    async def aclose(self) -> None:
        with self._root_lock:
            self._forget_root()
