"""Safe folder and file operations under a local vault root: never through a symbolic link.

Symbolic links are never followed, and the check cannot be raced. The configured ``root``
is resolved once, when the provider is made (links in the root's own path are the
operator's configuration, like macOS's ``/tmp``). From then on each folder is opened with
``O_NOFOLLOW | O_DIRECTORY`` relative to the descriptor of the folder above it (``openat``
style), and the file itself with ``O_NOFOLLOW``; temp file, rename, link and unlink all
take that folder's descriptor. The root's own path is walked so from ``/`` on first use
and kept as a descriptor; it is walked again whenever a ``stat`` of the path finds another
folder (a swapped-in link, a root removed and made again), so the vault follows its path,
never a link. A link anywhere on the
way — a folder or file inside the root, or a folder of the root's own path swapped for a
link later — raises :class:`~prefect_atlas.VaultPathError` naming it; links pointing
inside the root are refused too (a link's target can change after any check, so refusing
them all is the only rule without a window). ``list`` skips links: they are not vault
objects. A resolve-then-verify check would leave a gap between the check and the open in
which a swapped-in link redirects the write.

Names are checked before anything is written: each name may use ``NAME_MAX`` (asked of the
filesystem, 255 bytes on ext4) minus the 7 bytes of the checksum file's ``.sha256``, and
the longest absolute path made from a key (its sidecar) must stay below ``PATH_MAX``.
Temp files have a fixed-length name of their own (``.atlas-<16 hex>.tmp``), so the limit
is the same with or without xattrs. OS refusals become vault errors naming the relative
path and the fix: ENOSPC/EDQUOT/EFBIG/EIO/EMFILE/ENOENT a :class:`~prefect_atlas.VaultError`,
EACCES/EPERM/EROFS a :class:`~prefect_atlas.VaultAccessError`, ENAMETOOLONG/ELOOP/ENOTDIR/
EISDIR a :class:`~prefect_atlas.VaultPathError`; the ``OSError`` is the ``__cause__``.

The sidecar fallback's per-path lock (:meth:`SafeRoot._locked`) lives here too: an
exclusive or shared ``fcntl.flock`` on ``<root>/.atlas/locks/<path>.lock`` (see
:mod:`prefect_atlas.vault._local` for why the sidecar fallback needs it).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import threading
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from prefect_atlas.vault.errors import VaultAccessError, VaultError, VaultPathError
from prefect_atlas.vault.paths import RESERVED

SIDECARS = f"{RESERVED}/sha256"
LOCKS = f"{RESERVED}/locks"
SIDECAR_SUFFIX = ".sha256"
# Bytes of NAME_MAX a name gives up so that every file made from it fits: "<name>.sha256"
# (the longest; "<name>.lock" is shorter, and temp files have names of their own).
NAME_RESERVE = len(SIDECAR_SUFFIX)
# Temp files get a fixed-length name, never one grown from the target's: 27 bytes always fit.
TMP_PREFIX = ".atlas-"
TMP_SUFFIX = ".tmp"
# Used when the filesystem does not say (pathconf unsupported): Linux's values.
DEFAULT_NAME_MAX = 255
DEFAULT_PATH_MAX = 4096

# Every folder is opened relative to its parent's descriptor and never through a link.
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO put in the vault must not hang a read (it is then "not a file").
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _short(name: str) -> str:
    return name if len(name) <= 60 else f"{name[:40]}…{name[-8:]}"


class SafeRoot:
    """The root of a local vault and the link-safe walking, limits and error mapping under it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # The configured root's own links are configuration: resolved once, here. From
        # then on no component is opened through a link (see the module docstring).
        self.real_root = Path(os.path.realpath(root))
        self._root_parts = self.real_root.parts[1:]
        self._limits_found: tuple[int, int] | None = None
        # A kept descriptor of the root (see _open_root), shared by the worker threads.
        self._root_lock = threading.Lock()
        self._root_fd: int | None = None
        self._root_id: tuple[int, int] | None = None
        self._root_closer: weakref.finalize[Any, Any] | None = None

    def _path(self, key: str) -> Path:
        return self.root / key

    def _sidecar(self, key: str) -> Path:
        return self.root / SIDECARS / f"{key}{SIDECAR_SUFFIX}"

    @staticmethod
    def _sidecar_parts(key: str) -> list[str]:
        return [*SIDECARS.split("/"), *f"{key}{SIDECAR_SUFFIX}".split("/")]

    @staticmethod
    def _lock_parts(key: str) -> list[str]:
        return [*LOCKS.split("/"), *f"{key}.lock".split("/")]

    def _where(self, key: str) -> str:
        root = (
            str(self.root)
            if self.real_root == Path(self.root)
            else f"{self.root} (really {self.real_root})"
        )
        return f"{key!r} in local vault {root}"

    # ------------------------------------------------------------------ limits

    def _limits(self) -> tuple[int, int]:
        """NAME_MAX and PATH_MAX of the filesystem holding the root (asked once)."""
        if self._limits_found is None:
            probe = self.real_root
            while not probe.exists() and probe != probe.parent:
                probe = probe.parent
            try:
                name_max = os.pathconf(probe, "PC_NAME_MAX")
                path_max = os.pathconf(probe, "PC_PATH_MAX")
            except (OSError, ValueError):
                name_max, path_max = DEFAULT_NAME_MAX, DEFAULT_PATH_MAX
            self._limits_found = (
                name_max if name_max > 0 else DEFAULT_NAME_MAX,
                path_max if path_max > 0 else DEFAULT_PATH_MAX,
            )
        return self._limits_found

    def check_key(self, key: str) -> None:
        """Refuse, before anything is written, a key some file made from it could not have.

        Each name must leave room for the checksum file's suffix (``NAME_MAX`` minus 7
        bytes), and the longest absolute path made from the key (its sidecar) must stay
        below ``PATH_MAX``, so the same key works with or without xattrs and every file
        can still be handled by tools that take whole paths.
        """
        name_max, path_max = self._limits()
        allowed = name_max - NAME_RESERVE
        for part in key.split("/"):
            size = len(os.fsencode(part))
            if size > allowed:
                raise VaultPathError(
                    f"path {key!r}: the name {_short(part)!r} is {size} bytes; this filesystem "
                    f"allows {name_max} bytes per name (NAME_MAX) and the local vault keeps "
                    f"{NAME_RESERVE} of them for the checksum file '<name>{SIDECAR_SUFFIX}': "
                    f"shorten it to at most {allowed} bytes"
                )
        longest = len(os.fsencode(f"{self.real_root}/{SIDECARS}/{key}{SIDECAR_SUFFIX}"))
        if longest >= path_max:
            raise VaultPathError(
                f"path {_short(key)!r} is too long for local vault {self.root}: "
                f"with the root and the checksum file it makes a {longest}-byte "
                f"path and this filesystem's PATH_MAX is {path_max} (including the "
                "final NUL): shorten the path or set `root` to a shorter folder"
            )

    # ------------------------------------------------------------------ safe walking

    def _link_error(self, key: str, shown: str) -> VaultPathError:
        return VaultPathError(
            f"{self._where(key)}: {shown} is a symbolic link, and the local vault "
            "never follows links below its root or into it (a link can lead "
            "outside the vault, and can be changed after any check). Replace the "
            "link with a real folder or file, or set `root` to the real location"
        )

    def _open_step(
        self, fd: int, chain: Sequence[str], index: int, key: str, *, create: bool
    ) -> int | None:
        """Open folder ``chain[index]`` under ``fd``, never through a link; None when absent.

        ``create`` makes a missing folder. What stands in the way decides the error: a link
        (:class:`VaultPathError`, in the root's own path too), a file (absent on reads, a
        :class:`VaultPathError` on writes; an access error in the root's path). A folder
        removed, or put back, between two of our calls (a concurrent rename) is tried again.
        """
        name = chain[index]
        in_root = index < len(self._root_parts)
        rel = "/".join(chain[len(self._root_parts) : index + 1])
        for _ in range(5):
            try:
                return os.open(name, _DIR, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    return None
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o777, dir_fd=fd)
                continue
            except OSError as exc:
                if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
                    raise
            try:
                info = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue  # gone since: again
            if stat.S_ISLNK(info.st_mode):
                if in_root:
                    raise VaultPathError(
                        f"{self._where(key)}: {'/' + '/'.join(chain[: index + 1])}, part of the "
                        "vault root's own path, is now a symbolic link (it was not when the "
                        "vault was opened); the local vault never follows links into its root. "
                        "Restore the folder, or set `root` to the real location"
                    )
                raise self._link_error(key, repr(rel))
            if stat.S_ISDIR(info.st_mode):
                continue  # a folder again since: again
            if in_root:
                raise VaultAccessError(
                    f"local vault root {self.root}: {'/' + '/'.join(chain[: index + 1])} is not a "
                    "folder: set `root` to a folder"
                )
            if not create:
                return None
            raise VaultPathError(
                f"{self._where(key)} cannot be stored: {rel!r} is a file, not a folder; "
                "choose another path or remove that file"
            )
        raise VaultPathError(
            f"{self._where(key)}: {rel or name!r} kept changing between a folder and something "
            "else (a symbolic link, a file, nothing) while the vault opened it; links are never "
            "followed. Store it again once whatever is moving it has finished"
        )

    def _open_root(self, *, create: bool, key: str) -> int | None:
        """A descriptor of the root, for the caller to close; None when it does not exist.

        The first call walks the root's path from ``/`` with :meth:`_open_step` and keeps
        a descriptor of it. Later calls reuse a duplicate of that descriptor while a plain
        ``stat`` of the root's path still finds the same folder (device and inode): a
        folder of the path swapped for a link elsewhere, or the root removed and made
        again, shows as another inode and sends the call back to the strict walk (which
        then refuses the link). A link back to the very same folder leads nowhere new: the
        kept descriptor is that folder. This saves the walk's opens (about 0.2 ms per
        write with a root five folders deep).
        """
        with self._root_lock:
            kept = self._root_fd
            if kept is not None:
                try:
                    info = os.stat(self.real_root)
                except OSError:
                    info = None
                if info is not None and (info.st_dev, info.st_ino) == self._root_id:
                    return os.dup(kept)
                self._forget_root()
        chain = self._root_parts
        fd = os.open("/", _DIR)
        try:
            for index in range(len(chain)):
                child = self._open_step(fd, chain, index, key, create=create)
                os.close(fd)
                if child is None:
                    return None
                fd = child
            with self._root_lock:
                if self._root_fd is None:
                    info = os.fstat(fd)
                    self._root_fd, self._root_id = os.dup(fd), (info.st_dev, info.st_ino)
                    self._root_closer = weakref.finalize(self, os.close, self._root_fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise
        return fd

    def _forget_root(self) -> None:
        """Drop the kept root descriptor (callers hold ``_root_lock``)."""
        if self._root_closer is not None:
            self._root_closer()  # closes it, once
        self._root_fd = self._root_id = self._root_closer = None

    @contextlib.contextmanager
    def _parent(self, key: str) -> Iterator[tuple[int | None, str]]:
        """The open folder holding ``key`` (None when it does not exist) and the file's name;
        the descriptor is closed on exit."""
        parts = key.split("/")
        folder = self._open_dir(parts[:-1], create=False, key=key)
        try:
            yield folder, parts[-1]
        finally:
            if folder is not None:
                os.close(folder)

    def _open_dir(self, parts: Sequence[str], *, create: bool, key: str) -> int | None:
        """A descriptor of folder ``parts`` under the root, every step opened with O_NOFOLLOW.

        Returns None when a folder is missing (or is a plain file) and ``create`` is False.
        With ``create`` missing folders are made (``mkdir -p``, relative to the parent's
        descriptor). A symbolic link anywhere on the way, in the root's path included,
        raises :class:`VaultPathError`: each step opens the next name relative to the
        descriptor of the folder already open, so there is no check-then-use gap in which a
        swapped-in link could redirect us.
        """
        fd = self._open_root(create=create, key=key)
        if fd is None:
            return None
        chain = [*self._root_parts, *parts]
        try:
            for index in range(len(self._root_parts), len(chain)):
                child = self._open_step(fd, chain, index, key, create=create)
                os.close(fd)
                if child is None:
                    return None
                fd = child
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise
        return fd

    def _os_error(self, exc: OSError, op: str, key: str) -> VaultError:
        """The vault error for an OS refusal, naming the path and the fix."""
        code = exc.errno
        name = errno.errorcode.get(code or 0, "unknown")
        where = f"{op} of {self._where(key)} failed"
        if code in (errno.ENOSPC, errno.EDQUOT):
            return VaultError(
                f"{where}: no space left ({name}) on the filesystem of "
                f"{self.real_root}. Free space (or raise the quota) there, or set "
                "`root` to a folder on a larger disk; the write left nothing behind"
            )
        if code == errno.EFBIG:
            return VaultError(
                f"{where}: the file is larger than this process or filesystem "
                f"allows ({name}; see `ulimit -f`). Raise the limit or store "
                "smaller objects; the write left nothing behind"
            )
        if code in (errno.EACCES, errno.EPERM):
            return VaultAccessError(
                f"{where}: permission denied ({name}). Give the user running "
                f"the flow read and write access to {self.real_root} and its "
                "folders (and check for immutable files: lsattr), or set `root`"
            )
        if code == errno.EROFS:
            return VaultAccessError(
                f"{where}: the filesystem of {self.real_root} is read-only ({name}). Mount it "
                "read-write, or set `root` to a writable folder"
            )
        if code == errno.ENAMETOOLONG:
            name_max, path_max = self._limits()
            return VaultPathError(
                f"{where}: a name or the whole path is too long ({name}; NAME_MAX {name_max} "
                f"bytes per name, PATH_MAX {path_max}). Shorten the path"
            )
        if code == errno.ELOOP:
            return self._link_error(key, repr(key))
        if code in (errno.ENOTDIR, errno.EISDIR):
            return VaultPathError(
                f"{where}: a file stands where a folder must be, or a folder where the file must "
                f"be ({name}). Choose another path or remove what is in the way"
            )
        if code == errno.ENOENT:
            return VaultError(
                f"{where}: a folder on its way was removed or renamed while "
                "the vault was using it (ENOENT). Store it again once "
                "whatever is moving folders under the root has finished"
            )
        if code in (errno.EMFILE, errno.ENFILE):
            return VaultError(
                f"{where}: too many open files ({name}). Raise `ulimit -n` or write fewer at once"
            )
        if code == errno.EIO:
            return VaultError(
                f"{where}: the disk reported an I/O error "
                f"({name}). Check the disk ({self.real_root})"
            )
        return VaultError(f"{where}: {exc.strerror or exc} ({name}). Check {self.real_root}")

    @contextlib.contextmanager
    def _mapped(self, op: str, key: str) -> Iterator[None]:
        """Turn an :class:`OSError` into the vault error for it (vault errors pass through)."""
        try:
            yield
        except VaultError:
            raise
        except OSError as exc:
            raise self._os_error(exc, op, key) from exc

    def _lstat(self, parent_fd: int, name: str, key: str) -> os.stat_result | None:
        """What ``name`` is, without following it; a link raises."""
        try:
            info = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        if stat.S_ISLNK(info.st_mode):
            raise self._link_error(key, repr(key))
        return info

    @contextlib.contextmanager
    def _locked(self, key: str, *, shared: bool) -> Iterator[None]:
        """Hold the sidecar fallback's per-path lock (see the module docstring)."""
        parts = self._lock_parts(key)
        folder = self._open_dir(parts[:-1], create=True, key=key)
        assert folder is not None
        try:
            fd = os.open(
                parts[-1],
                os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o644,
                dir_fd=folder,
            )
        finally:
            os.close(folder)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock
