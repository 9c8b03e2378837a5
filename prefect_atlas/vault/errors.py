"""Errors raised by :class:`~prefect_atlas.VaultBlock`.

Each names the path and the provider and says what to change; none contains a token or a
service-account key (messages are built from our own fields, never from credentials).
"""

from __future__ import annotations

from prefect_atlas.exceptions import AtlasError


class VaultError(AtlasError):
    """Base class of vault errors."""


class VaultPathError(VaultError, ValueError):
    """A path was rejected: before anything was sent (``..``, absolute, NUL, backslash, empty,
    a name beyond the filesystem's limits) or by the local disk (a symbolic link on the way,
    a file where a folder must be)."""


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
    """A permanent refusal: retrying would not help.

    401, 403, 404 of the bucket or dataset; on local disk permission denied (EACCES, EPERM)
    and a read-only filesystem (EROFS).
    """


def _shown(paths: list[str], limit: int = 5) -> str:
    if not paths:
        return "none"
    head = ", ".join(repr(p) for p in paths[:limit])
    return f"{head} and {len(paths) - limit} more" if len(paths) > limit else head


class VaultBatchError(VaultError):
    """``store_batch`` failed part-way: says exactly which paths hold the batch's bytes.

    No provider can roll back an overwrite (the old bytes are gone once replaced), so the
    vault reports instead: ``written`` (in input order) hold what this batch sent,
    ``not_written`` were left as they were, and ``unknown`` — empty unless the failure
    itself made it impossible to find out (a lost answer, then a failed check) — may hold
    either. ``errors`` maps each failed path to its error; the first is the ``__cause__``.
    Storing the paths not written again is safe; rewriting written ones is too with
    ``overwrite=True``.

    Raised as :class:`VaultBatchExistsError`, :class:`VaultBatchAccessError` or
    :class:`VaultBatchPathError` when every failure is of that one kind, so an ``except
    VaultObjectExistsError`` (or access, or path) around ``store_batch`` keeps working.
    """

    def __init__(
        self,
        *,
        provider: str,
        written: list[str],
        not_written: list[str],
        unknown: list[str],
        errors: dict[str, BaseException],
    ) -> None:
        self.written = written
        self.not_written = not_written
        self.unknown = unknown
        self.errors = errors
        total = len(written) + len(not_written) + len(unknown)
        first_path, first = next(iter(errors.items()))
        message = (
            f"{provider} vault store_batch stored {len(written)} of {total} objects and then failed "
            f"({len(errors)} path(s) failed; first {first_path!r}: {first}). "
            f"Written: {_shown(written)}. Not written: {_shown(not_written)}."
        )
        if unknown:
            message += f" Outcome unknown (check them): {_shown(unknown)}."
        message += " Fix the cause, then store the paths not written again."
        super().__init__(message)

    @staticmethod
    def of(
        *,
        provider: str,
        written: list[str],
        not_written: list[str],
        unknown: list[str],
        errors: dict[str, BaseException],
    ) -> VaultBatchError:
        """The most specific batch error for ``errors`` (see the class docstring)."""
        kinds: list[tuple[type[VaultBatchError], type[VaultError]]] = [
            (VaultBatchExistsError, VaultObjectExistsError),
            (VaultBatchAccessError, VaultAccessError),
            (VaultBatchPathError, VaultPathError),
        ]
        cls: type[VaultBatchError] = VaultBatchError
        for kind, single in kinds:
            if all(isinstance(e, single) for e in errors.values()):
                cls = kind
                break
        return cls(provider=provider, written=written, not_written=not_written, unknown=unknown, errors=errors)


class VaultBatchExistsError(VaultBatchError, VaultObjectExistsError):
    """A create-only batch found some of its paths taken (after writing the ones reported)."""


class VaultBatchAccessError(VaultBatchError, VaultAccessError):
    """A batch was refused part-way (permissions, read-only disk, missing container)."""


class VaultBatchPathError(VaultBatchError, VaultPathError):
    """A batch met paths the storage refuses (a symlink, a file where a folder must be)."""
