"""``VaultBlock`` as Prefect result storage: the ``WritableFileSystem`` faces.

Prefect's ``ResultStore`` calls ``aread_path``/``awrite_path`` from async code and
``read_path(path, _sync=True)``/``write_path(path, content=..., _sync=True)`` from sync code
(``prefect._internal.compatibility.blocks``); each face here takes both forms. Results live
under their own folder, :data:`RESULTS_PREFIX`, below the block's ``prefix``, so they never
mix with Atlas records; the path Prefect gives (a storage key, a cache key) goes through the
vault's path rules first (no ``..``, no absolute paths, no NUL, no backslash).

Prefect checks whether a cache key is stored by *reading* it (``ResultStore.exists`` reads
and treats any error as "not there"). So a missing key must be cheap: it is looked up on the
provider's existence or metadata path (a failed ``open`` on disk, the object's metadata on
GCS, a ``HEAD`` on Hugging Face), never downloaded, and raises ``FileNotFoundError``.

On Hugging Face, writes are buffered and committed together (the Hub limits commits per
hour); see :mod:`prefect_atlas.vault._hf_buffer` for when they are committed and what a
crash loses.
"""

from __future__ import annotations

from collections.abc import Awaitable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar, cast

from prefect_atlas._dispatch import run_sync, sync_or_await
from prefect_atlas.vault import paths

if TYPE_CHECKING:
    from prefect_atlas.vault._base import StorageProvider

RESULTS_PREFIX = "prefect-results"
RESULT_TYPE = "application/json"  # Prefect's result records are JSON documents

R = TypeVar("R")


def _face(coro: Coroutine[Any, Any, R], sync: bool | None) -> R:
    """A sync face the way Prefect calls it: ``_sync=True`` runs to completion,
    ``_sync=False`` returns the coroutine, None decides by the caller's context."""
    if sync is None:
        return sync_or_await(coro)
    if sync:
        return run_sync(coro)
    return cast(R, coro)


class ResultFiles:
    """The ``WritableFileSystem`` methods of :class:`~prefect_atlas.vault.VaultBlock`."""

    if TYPE_CHECKING:
        provider: str

        async def _get_provider(self) -> StorageProvider: ...

        def describe(self) -> str: ...

        async def _counted_read(self, read: Awaitable[bytes | None]) -> bytes | None: ...

        async def _counted_write(self, write: Awaitable[None], size: int) -> None: ...

    def _result_key(self, path: str) -> str:
        """The vault path of the Prefect result ``path``: checked, under :data:`RESULTS_PREFIX`."""
        key = paths.normalise(str(path), field="Prefect result path")
        return paths.join(RESULTS_PREFIX, key)

    def _resolve_path(self, path: str) -> str:
        """The storage key Prefect records for a block that was never saved: the path itself.

        Prefect's ``ResultStore`` asks this of unsaved storage blocks (``LocalFileSystem``
        returns an absolute path); the vault adds its own folder inside the faces, once.
        """
        return paths.normalise(str(path), field="Prefect result path", allow_empty=True)

    async def aread_path(self, path: str) -> bytes:
        """The Prefect result stored at ``path``; ``FileNotFoundError`` when there is none.

        A missing key costs one existence or metadata lookup and no download.
        """
        key = self._result_key(path)
        provider = await self._get_provider()
        data = await self._counted_read(provider.get_result(key))
        if data is None:
            raise FileNotFoundError(f"no Prefect result {path!r} ({key!r}) in {self.describe()}")
        return data

    def read_path(self, path: str, _sync: bool | None = None) -> bytes:
        """Sync face of :meth:`aread_path` (``_sync`` as Prefect passes it)."""
        return _face(self.aread_path(path), _sync)

    async def awrite_path(self, path: str, content: bytes) -> str:
        """Store the Prefect result ``content`` at ``path``; return its vault path.

        On Hugging Face the write is buffered and committed with others (see
        :meth:`aflush_results`); reads in this process see it at once.
        """
        key = self._result_key(path)
        if not isinstance(content, bytes | bytearray | memoryview):
            raise TypeError(
                f"content for Prefect result {path!r} must be bytes, got {type(content).__name__}"
            )
        data = bytes(content)
        provider = await self._get_provider()
        write = provider.put_result(key, data, content_type=RESULT_TYPE)
        await self._counted_write(write, len(data))
        return key

    def write_path(self, path: str, content: bytes, _sync: bool | None = None) -> str:
        """Sync face of :meth:`awrite_path` (``_sync`` as Prefect passes it)."""
        return _face(self.awrite_path(path, content), _sync)

    async def aflush_results(self) -> None:
        """Commit buffered Prefect results now (Hugging Face; elsewhere nothing is buffered).

        Raises when a commit failed (those results are lost: the tasks run again next
        time) or :class:`~prefect_atlas.VaultObjectExistsError` naming paths another
        writer committed first (theirs are kept, never overwritten).
        """
        await (await self._get_provider()).flush_results()

    def flush_results(self) -> None:
        """Sync face of :meth:`aflush_results`."""
        return sync_or_await(self.aflush_results())
