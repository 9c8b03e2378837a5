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

from prefect_atlas.vault.integrity import Sink


class VaultProvider(abc.ABC):
    """Storage strategy behind :class:`~prefect_atlas.VaultBlock`."""

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
        """Store many ``(key, data, content_type)``; providers batch or parallelise."""
        for key, data, content_type in items:
            await self.put(key, data, overwrite=overwrite, content_type=content_type)

    @abc.abstractmethod
    async def get(self, key: str) -> bytes | None:
        """The verified bytes at ``key``, or None when absent."""

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
