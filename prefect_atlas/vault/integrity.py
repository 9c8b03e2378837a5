"""Checksums recorded on write and verified on read.

Each provider records the digest it can keep atomically with the data: local disk a sha256
sidecar, GCS a sha256 in the object's metadata (plus crc32c checked by the client on the
wire), Hugging Face the git blob sha1 the Hub computes from the committed bytes (its ETag).
"""

from __future__ import annotations

import hashlib

from prefect_atlas.vault.errors import VaultIntegrityError


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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
        raise VaultIntegrityError(path, algorithm=algorithm, expected=expected, actual=actual, provider=provider)
