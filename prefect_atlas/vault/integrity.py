"""Checksums recorded on write and verified on read.

Each provider records the digest it can keep atomically with the data: local disk a sha256
in an extended attribute of the file itself (a sidecar file where the filesystem has no
user xattrs), GCS a sha256 in the object's metadata (plus crc32c checked by the client on the
wire), Hugging Face the git blob sha1 the Hub computes from the committed bytes (its ETag).
"""

from __future__ import annotations

import hashlib
from typing import Any, Protocol

from prefect_atlas.vault.errors import VaultIntegrityError


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Sink(Protocol):
    """Where a writer puts bytes: a file, a ``BytesIO`` or a :class:`HashingWriter`."""

    def write(self, data: bytes, /) -> int: ...


class HashingWriter:
    """A write-only file object that hashes the bytes on their way to ``target``.

    Writers such as ``pyarrow.parquet.write_table`` stream straight into the vault's temp
    file through it, so the sha256 is known when the last byte is written: no in-memory
    copy of the whole file and no second read of it.
    """

    closed = False  # pyarrow checks it before writing

    def __init__(self, target: Any) -> None:
        self._target = target
        self._digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes, /) -> int:
        written: int = self._target.write(data)
        self._digest.update(data)
        self.size += len(data)
        return written

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self._target.flush()

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def git_blob_sha1(data: bytes) -> str:
    """The git object id of ``data`` (what the Hub reports as the ETag of a regular file)."""
    digest = hashlib.sha1(usedforsecurity=False)
    digest.update(b"blob %d\x00" % len(data))
    digest.update(data)
    return digest.hexdigest()


def verify(path: str, data: bytes, *, algorithm: str, expected: str, provider: str) -> None:
    """Raise :class:`VaultIntegrityError` unless ``data`` has digest ``expected``."""
    if algorithm == "sha256":
        actual = sha256_hex(data)
    elif algorithm == "git-sha1":
        actual = git_blob_sha1(data)
    else:  # pragma: no cover - programming error
        raise ValueError(f"unknown checksum algorithm {algorithm!r}")
    if actual != expected.lower():
        raise VaultIntegrityError(
            path, algorithm=algorithm, expected=expected, actual=actual, provider=provider
        )
