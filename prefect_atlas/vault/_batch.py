"""``VaultBlock.store_batch``: many objects checked and encoded first, then one provider call.

A failure part-way is reported path by path (:class:`~prefect_atlas.vault.errors.VaultBatchError`).
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from prefect_atlas import metrics
from prefect_atlas._dispatch import sync_or_await
from prefect_atlas.vault import _json, paths
from prefect_atlas.vault._base import BatchFailed, StorageProvider
from prefect_atlas.vault.errors import VaultBatchError

JSON_TYPE = "application/json"
Paths = list[str]


class BatchStore:
    """The batch methods of :class:`~prefect_atlas.vault.VaultBlock`."""

    if TYPE_CHECKING:
        provider: str

        async def _get_provider(self) -> StorageProvider: ...

        def _count(self, operation: str, outcome: str) -> None: ...

    async def astore_batch(
        self, items: Iterable[tuple[str, Any]], *, overwrite: bool = True
    ) -> Paths:
        """Store many ``(path, obj)`` pairs at once; ``bytes`` are stored as is, the rest as JSON.

        GCS uploads run ``max_concurrency`` at a time on one client; Hugging Face gets one
        commit per 100 files. Returns the normalised paths in input order.

        Every path and object is checked (and encoded) before the first write, so bad input
        writes nothing. A failure part-way never leaves a silent partial: it raises
        :class:`~prefect_atlas.vault.errors.VaultBatchError` whose ``written``,
        ``not_written`` and ``unknown`` say exactly which paths hold this batch's bytes.
        """
        prepared: builtins.list[tuple[str, bytes, str]] = []
        seen: set[str] = set()
        for index, pair in enumerate(items):
            try:
                path, obj = pair
            except (TypeError, ValueError):
                raise TypeError(f"store_batch item {index} must be a (path, obj) pair") from None
            key = paths.normalise(path, field=f"items[{index}] path")
            if key in seen:
                raise ValueError(
                    f"store_batch got {key!r} twice (items[{index}]); each path may appear once"
                )
            seen.add(key)
            if isinstance(obj, bytes | bytearray | memoryview):
                prepared.append((key, bytes(obj), "application/octet-stream"))
            else:
                prepared.append(
                    (key, _json.dumps(obj, what=f"items[{index}] object for {key!r}"), JSON_TYPE)
                )
        if not prepared:
            return []
        provider = await self._get_provider()
        try:
            await provider.put_many(prepared, overwrite=overwrite)
        except BatchFailed as failed:
            self._count("store_batch", "error")
            raise self._batch_error(prepared, failed) from next(iter(failed.failed.values()))
        except BaseException:
            self._count("store_batch", "error")
            raise
        metrics.VAULT_OPERATIONS.labels(self.provider, "store", "ok").inc(len(prepared))
        metrics.VAULT_BYTES.labels(self.provider, "out").inc(sum(len(d) for _, d, _ in prepared))
        return [key for key, _, _ in prepared]

    def _batch_error(
        self, prepared: builtins.list[tuple[str, bytes, str]], failed: BatchFailed
    ) -> VaultBatchError:
        """The public error for a provider's :class:`BatchFailed`, paths in input order."""
        keys = [key for key, _, _ in prepared]
        written = [k for k in keys if k in failed.written]
        unknown = [k for k in keys if k in failed.unknown and k not in failed.written]
        not_written = [k for k in keys if k not in failed.written and k not in failed.unknown]
        if written:
            metrics.VAULT_OPERATIONS.labels(self.provider, "store", "ok").inc(len(written))
        errors = {k: failed.failed[k] for k in keys if k in failed.failed}
        return VaultBatchError.of(
            provider=self.provider,
            written=written,
            not_written=not_written,
            unknown=unknown,
            errors=errors,
        )

    def store_batch(self, items: Iterable[tuple[str, Any]], *, overwrite: bool = True) -> Paths:
        """Sync face of :meth:`astore_batch`."""
        return sync_or_await(self.astore_batch(items, overwrite=overwrite))
