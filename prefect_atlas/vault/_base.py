"""The interface every vault provider implements (one strategy per provider module).

Keys given to a provider are already normalised by :mod:`prefect_atlas.vault.paths` and
relative to the vault (the provider adds its own root or prefix, once). Providers record a
checksum with every write and verify it on every read.
"""

from __future__ import annotations

import abc
import asyncio
import io
from collections.abc import Callable, Sequence

from prefect_atlas.vault.errors import VaultAccessError, VaultObjectExistsError, VaultPathError
from prefect_atlas.vault.integrity import Sink

# Failures that prove the object was not written by this call: a refusal before or instead
# of the write. Any other failure (a lost answer, a timeout) is checked against the storage.
REFUSALS = (VaultObjectExistsError, VaultPathError, VaultAccessError)


class BatchFailed(Exception):
    """A provider's ``put_many`` stopped part-way; what it knows, by key.

    ``written`` hold this batch's bytes, ``failed`` maps keys to their errors, ``unknown``
    could not be checked. Every other key of the batch was left untouched. The block turns
    this into the public :class:`~prefect_atlas.vault.errors.VaultBatchError`.
    """

    def __init__(
        self, *, written: set[str], failed: dict[str, BaseException], unknown: set[str]
    ) -> None:
        super().__init__(f"{len(failed)} of the batch failed after {len(written)} were written")
        self.written = written
        self.failed = failed
        self.unknown = unknown


class StorageProvider(abc.ABC):
    """Storage strategy behind :class:`~prefect_atlas.VaultBlock`.

    Not to be confused with :data:`prefect_atlas.settings.VaultProvider`, the ``Literal`` of
    provider names a block or ``$VAULT_PROVIDER`` chooses from.
    """

    name: str

    @abc.abstractmethod
    async def put(self, key: str, data: bytes, *, overwrite: bool, content_type: str) -> None:
        """Store ``data`` at ``key``; with ``overwrite=False`` fail if it exists."""

    async def put_stream(
        self, key: str, fill: Callable[[Sink], None], *, overwrite: bool, content_type: str
    ) -> int:
        """Store what ``fill`` writes to a file object (in a worker thread); return the size.

        The default renders to memory and calls :meth:`put` (remote providers upload a
        body anyway); the local provider streams into its temp file instead.
        """

        def render() -> bytes:
            sink = io.BytesIO()
            fill(sink)
            return sink.getvalue()

        data = await asyncio.to_thread(render)
        await self.put(key, data, overwrite=overwrite, content_type=content_type)
        return len(data)

    async def put_many(self, items: Sequence[tuple[str, bytes, str]], *, overwrite: bool) -> None:
        """Store many ``(key, data, content_type)``; providers batch or parallelise.

        On a failure part-way raise :class:`BatchFailed` saying exactly what was written:
        never a bare error that leaves the caller guessing. This default writes one after
        the other and stops at the first failure; a write that failed without a refusal
        but is found in place with our bytes (:meth:`landed`) counts as done.
        """
        written: set[str] = set()
        for key, data, content_type in items:
            error, unknown = await self.put_settled(
                key, data, overwrite=overwrite, content_type=content_type
            )
            if error is not None:
                failed: dict[str, BaseException] = {key: error}
                raise BatchFailed(
                    written=written, failed=failed, unknown={key} if unknown else set()
                ) from error
            written.add(key)

    async def put_settled(
        self, key: str, data: bytes, *, overwrite: bool, content_type: str
    ) -> tuple[Exception | None, bool]:
        """:meth:`put`, and after a failure what became of the write, as ``(error, unknown)``.

        ``(None, False)``: the object is in place (written, or it landed and only the answer
        was lost, as :meth:`landed` tells). ``(exc, False)``: not written (a refusal, or the
        key found without our bytes). ``(exc, True)``: whether it landed cannot be told.
        """
        try:
            await self.put(key, data, overwrite=overwrite, content_type=content_type)
        except Exception as exc:
            if isinstance(exc, REFUSALS):
                return exc, False
            landed = await self.landed(key, data)
            if landed:
                return None, False
            return exc, landed is None
        return None, False

    async def landed(self, key: str, data: bytes) -> bool | None:
        """After a failed write: does ``key`` hold exactly ``data``? None when that cannot be told.

        The default reads the object back; remote providers compare recorded checksums.
        """
        try:
            return await self.get(key) == data
        except Exception:
            return None

    @abc.abstractmethod
    async def get(self, key: str) -> bytes | None:
        """The verified bytes at ``key``, or None when absent."""

    async def put_result(self, key: str, data: bytes, *, content_type: str) -> None:
        """Store a Prefect result record at ``key`` (overwriting); providers may buffer it.

        The default writes at once; the Hugging Face provider buffers and commits many
        results together (see :mod:`prefect_atlas.vault._hf_buffer`).
        """
        await self.put(key, data, overwrite=True, content_type=content_type)

    async def get_result(self, key: str) -> bytes | None:
        """The Prefect result at ``key``, or None: a missing key must cost no download.

        The default is :meth:`get`, which on local disk fails at the ``open`` and on GCS at
        the metadata lookup; a provider whose read would fetch first overrides this.
        """
        return await self.get(key)

    async def flush_results(self) -> None:  # noqa: B027 - optional hook
        """Write buffered results now (default: nothing is buffered)."""

    @abc.abstractmethod
    async def exists(self, key: str) -> bool:
        """Whether ``key`` exists."""

    @abc.abstractmethod
    async def list(self, prefix: str) -> list[str]:
        """Sorted keys under folder ``prefix`` ('' for all), relative to the vault."""

    @abc.abstractmethod
    async def delete(self, key: str) -> bool:
        """Remove ``key``; True if something was removed."""

    @abc.abstractmethod
    async def check(self) -> str:
        """Check the container itself (folder, bucket, dataset at its revision); say what was found.

        Raises (a :class:`~prefect_atlas.VaultAccessError` naming the field to fix) when it
        is missing or unusable. Object-level calls cannot tell "no such object" from "no
        such bucket" everywhere, hence a check of its own.
        """

    def describe(self) -> str:
        """Where the provider stores, without secrets."""
        return self.name

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release clients (default: nothing to release)."""


# The ABC's former name, the same class: it clashed with the settings ``Literal`` of the same
# name. Provider modules import ``StorageProvider``.
VaultProvider = StorageProvider
