"""The interface every vault provider implements (one strategy per provider module).

Keys given to a provider are already normalised by :mod:`prefect_atlas.vault.paths` and
relative to the vault (the provider adds its own root or prefix, once). Providers record a
checksum with every write and verify it on every read.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence


class VaultProvider(abc.ABC):
    """Storage strategy behind :class:`~prefect_atlas.VaultBlock`."""

    name: str

    @abc.abstractmethod
    async def put(self, key: str, data: bytes, *, overwrite: bool, content_type: str) -> None:
        """Store ``data`` at ``key``; with ``overwrite=False`` fail if it exists."""

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

    def describe(self) -> str:
        """Where the provider stores, without secrets."""
        return self.name

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release clients (default: nothing to release)."""
