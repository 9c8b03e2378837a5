"""Every exception prefect-atlas raises, in one tree.

Every error a user can act on says *what* went wrong and *which field or setting* fixes it.
Messages never contain secrets: connection strings are redacted before they are formatted,
and vault messages are built from our own fields, never from tokens or service-account keys.

Where callers already catch a builtin, the error is that builtin too (a rejected path is a
``ValueError``, a create-only write that finds the object is a ``FileExistsError``), so an
``except ValueError`` written before keeps working. The hierarchy::

    AtlasError
    ├── MissingExtraError (ImportError)
    ├── InvalidYouTubeIdError (ValueError)
    ├── AllKeysExhaustedError
    ├── ComponentDown (RuntimeError)
    ├── DatabaseError
    │   ├── DatabaseConnectionError
    │   │   └── DatabaseConfigurationError
    │   └── MigrationError
    ├── EventStoreError
    │   ├── ConcurrencyError
    │   ├── DeadLetterError
    │   ├── SegmentError (ValueError)
    │   ├── ConsumerError (ValueError)
    │   └── ArchiveError
    │       └── ArchiveIntegrityError
    └── VaultError
        ├── VaultPathError (ValueError)
        │   └── VaultBatchPathError
        ├── VaultIntegrityError
        ├── VaultObjectExistsError (FileExistsError)
        │   └── VaultBatchExistsError
        ├── VaultAccessError
        │   └── VaultBatchAccessError
        └── VaultBatchError
            ├── VaultBatchExistsError
            ├── VaultBatchAccessError
            └── VaultBatchPathError

The old import paths (``prefect_atlas.vault.errors``, ``prefect_atlas.events.store``,
``prefect_atlas.youtube``, ...) re-export these classes.
"""

from __future__ import annotations

from datetime import datetime


class AtlasError(Exception):
    """Base class of every error raised by prefect-atlas."""


class MissingExtraError(AtlasError, ImportError):
    """A dependency is not installed; the message names the command that installs it.

    ``extra`` is the extra of prefect-atlas that brings the module, or ``None`` for a core
    dependency missing from a broken install.
    """

    def __init__(self, module: str, extra: str | None, purpose: str, alternative: str = "") -> None:
        self.module = module
        """The module that could not be imported."""
        self.extra = extra
        """The extra that installs it, or None for a core dependency."""
        if extra is None:
            message = (
                f"{purpose} needs {module!r}, a dependency of prefect-atlas that is not "
                "installed. Install it with: pip install --force-reinstall prefect-atlas"
            )
        else:
            message = (
                f"{purpose} needs the optional dependency {module!r}, which is not installed. "
                f"Install it with: pip install 'prefect-atlas[{extra}]'"
            )
        super().__init__(f"{message}, or {alternative}." if alternative else f"{message}.")


class DatabaseError(AtlasError):
    """Base class of database errors raised by :class:`~prefect_atlas.DatabaseBlock`."""


class DatabaseConnectionError(DatabaseError):
    """The database could not be reached or refused the connection.

    ``target`` is the redacted description of where we tried to connect (host, port,
    database, user — never the password).
    """

    def __init__(self, message: str, *, target: str) -> None:
        self.target = target
        super().__init__(message)


class DatabaseConfigurationError(DatabaseConnectionError):
    """The server answered and refused us: wrong password, unknown role or unknown database.

    Unlike an outage this does not heal by waiting, so nothing retries it; the message says
    which part of the block's ``url`` to fix.
    """


class MigrationError(DatabaseError):
    """The schema could not be brought up to date (for example an applied migration was edited)."""


# ---------------------------------------------------------------------------- event store


class EventStoreError(AtlasError):
    """Base class of :class:`~prefect_atlas.EventStore` errors beyond the database's own."""


class ConcurrencyError(EventStoreError):
    """``expected_version`` did not match the entity's current version (optimistic concurrency)."""

    def __init__(self, entity_id: str, expected: int, actual: int) -> None:
        self.entity_id = entity_id
        """The entity whose version did not match."""
        self.expected = expected
        """The version the caller expected."""
        self.actual = actual
        """The entity's current version."""
        super().__init__(
            f"entity {entity_id!r} is at version {actual}, not the expected "
            f"{expected}: another writer appended first. Reload the entity's "
            "events and decide again, or emit without expected_version."
        )


class DeadLetterError(EventStoreError):
    """A dead letter could not be retried: there is none with that id, or it was refused again."""


class SegmentError(EventStoreError, ValueError):
    """A spool segment in the vault that is not one, or whose checksum does not match."""


class ConsumerError(EventStoreError, ValueError):
    """A consumer cannot run as asked: its checkpoint was made with another group size or other
    event types (rebuild it from zero, or use a new name), or an argument is out of range."""


class ArchiveError(EventStoreError):
    """A partition could not be archived or dropped, or an archive could not be read.

    Whatever step failed, the partition is left in place: nothing is dropped whose archive
    did not verify. The message names the partition and the step.
    """


class ArchiveIntegrityError(ArchiveError):
    """An archive read back from the vault is not what was written (or what the log holds):
    its checksum, row count, cursors or rows differ."""


# ---------------------------------------------------------------------------- YouTube


class InvalidYouTubeIdError(AtlasError, ValueError):
    """An id that YouTube cannot have issued; the message says which rule it breaks."""


class AllKeysExhaustedError(AtlasError):
    """Every key of the pool hit its quota; the message says when the first one resets."""

    def __init__(self, count: int, reset_at: datetime) -> None:
        self.reset_at = reset_at
        """When the first key's quota resets."""
        super().__init__(
            f"all {count} YouTube API key(s) are out of quota until {reset_at.isoformat()}; "
            "add keys to YOUTUBE_API_KEY_POOL_JSON or wait for the reset"
        )


# ---------------------------------------------------------------------------- system health


class ComponentDown(AtlasError, RuntimeError):
    """Raised by the health flow so that its failure alert names what is down."""


# ---------------------------------------------------------------------------- vault


class VaultError(AtlasError):
    """Base class of :class:`~prefect_atlas.VaultBlock` errors (each names path and provider)."""


class VaultPathError(VaultError, ValueError):
    """A path was rejected: before anything was sent (``..``, absolute, NUL, backslash, empty,
    a name beyond the filesystem's limits) or by the local disk (a symbolic link on the way,
    a file where a folder must be)."""


class VaultIntegrityError(VaultError):
    """The bytes read back do not match the checksum recorded when they were written."""

    def __init__(
        self, path: str, *, algorithm: str, expected: str, actual: str, provider: str
    ) -> None:
        self.path = path
        """The vault path of the corrupt object."""
        self.algorithm = algorithm
        """The checksum algorithm (such as ``sha256``)."""
        self.expected = expected
        """The checksum recorded when the object was written."""
        self.actual = actual
        """The checksum of the bytes read back."""
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
            f"{provider} vault store_batch stored {len(written)} of {total} objects and then "
            f"failed ({len(errors)} path(s) failed; first {first_path!r}: {first}). Written: "
            f"{_shown(written)}. Not written: {_shown(not_written)}."
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
        return cls(
            provider=provider,
            written=written,
            not_written=not_written,
            unknown=unknown,
            errors=errors,
        )


class VaultBatchExistsError(VaultBatchError, VaultObjectExistsError):
    """A create-only batch found some of its paths taken (after writing the ones reported)."""


class VaultBatchAccessError(VaultBatchError, VaultAccessError):
    """A batch was refused part-way (permissions, read-only disk, missing container)."""


class VaultBatchPathError(VaultBatchError, VaultPathError):
    """A batch met paths the storage refuses (a symlink, a file where a folder must be)."""
