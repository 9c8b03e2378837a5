"""Errors raised by :class:`~prefect_atlas.VaultBlock`.

Each names the path and the provider and says what to change; none contains a token or a
service-account key (messages are built from our own fields, never from credentials).
"""

from __future__ import annotations

from prefect_atlas.exceptions import AtlasError


class VaultError(AtlasError):
    """Base class of vault errors."""


class VaultPathError(VaultError, ValueError):
    """A path was rejected before anything was sent (``..``, absolute, NUL, backslash, empty)."""


class VaultIntegrityError(VaultError):
    """The bytes read back do not match the checksum recorded when they were written."""

    def __init__(self, path: str, *, algorithm: str, expected: str, actual: str, provider: str) -> None:
        self.path = path
        self.algorithm = algorithm
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"{provider} vault object {path!r} is corrupt: {algorithm} recorded on write is "
            f"{expected}, the bytes read have {actual}. Restore it from a copy or write it again."
        )


class VaultObjectExistsError(VaultError, FileExistsError):
    """A create-only write (``overwrite=False``) found the object already there."""


class VaultAccessError(VaultError):
    """A permanent refusal (401, 403, 404 of the bucket or dataset): retrying would not help."""
