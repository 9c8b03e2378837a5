"""The Atlas layout methods of :class:`~prefect_atlas.vault.VaultBlock`: metadata, transcripts
and visuals at the paths :mod:`prefect_atlas.vault.layout` gives them.
"""

from __future__ import annotations

import builtins
import datetime as dt
import io
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from prefect_atlas import metrics
from prefect_atlas._dispatch import sync_or_await
from prefect_atlas._extras import require
from prefect_atlas.vault import layout
from prefect_atlas.vault._base import StorageProvider
from prefect_atlas.vault.integrity import Sink

PARQUET_TYPE = "application/vnd.apache.parquet"
Rows = list[dict[str, Any]]


class AtlasRecords:
    """Metadata, transcripts and visuals, over the block's JSON and bytes methods."""

    if TYPE_CHECKING:
        provider: str

        async def _get_provider(self) -> StorageProvider: ...

        def _count(self, operation: str, outcome: str) -> None: ...

        async def astore_json(self, path: str, obj: Any, *, overwrite: bool = True) -> str: ...

        async def afetch_json(self, path: str) -> Any: ...

        async def afetch_bytes(self, path: str) -> bytes | None: ...

    async def astore_metadata(
        self,
        video_id: str,
        data: Mapping[str, Any],
        date: dt.date | dt.datetime | str | None = None,
    ) -> str:
        """Store a video's metadata at ``metadata/YYYY-MM-DD/{video_id}.json`` (UTC day)."""
        return await self.astore_json(layout.metadata_path(video_id, date), data)

    def store_metadata(
        self,
        video_id: str,
        data: Mapping[str, Any],
        date: dt.date | dt.datetime | str | None = None,
    ) -> str:
        """Sync face of :meth:`astore_metadata`."""
        return sync_or_await(self.astore_metadata(video_id, data, date))

    async def astore_transcript(
        self, video_id: str, segments: Sequence[Mapping[str, Any]], language: str = "en"
    ) -> str:
        """Store transcript segments at ``transcripts/{shard}/{video_id}.json``."""
        if not language or not isinstance(language, str):
            raise ValueError("language must be a language code such as 'en'")
        document = {"video_id": video_id, "language": language, "segments": list(segments)}
        return await self.astore_json(layout.transcript_path(video_id), document)

    def store_transcript(
        self, video_id: str, segments: Sequence[Mapping[str, Any]], language: str = "en"
    ) -> str:
        """Sync face of :meth:`astore_transcript`."""
        return sync_or_await(self.astore_transcript(video_id, segments, language))

    async def afetch_transcript(self, video_id: str) -> Any:
        """The transcript document of ``video_id``, or None."""
        return await self.afetch_json(layout.transcript_path(video_id))

    def fetch_transcript(self, video_id: str) -> Any:
        """Sync face of :meth:`afetch_transcript`."""
        return sync_or_await(self.afetch_transcript(video_id))

    async def astore_visuals(self, video_id: str, frames: Any) -> str:
        """Store frame rows (a list of dicts or a ``pyarrow.Table``) as zstd Parquet.

        Written to ``visuals/{shard}/{video_id}.parquet``; needs pyarrow (a core dependency).
        The rows are converted and encoded in a worker thread (never on the event loop) and,
        on the local provider, streamed straight into the atomic temp file.
        """
        pa = require("pyarrow", purpose="Storing visuals as Parquet")
        pq = require("pyarrow.parquet", purpose="Storing visuals as Parquet")
        path = layout.visuals_path(video_id)
        rows = None if isinstance(frames, pa.Table) else builtins.list(frames)

        def write(sink: Sink) -> None:
            table = frames if rows is None else pa.Table.from_pylist(rows)
            pq.write_table(table, sink, compression="zstd")

        provider = await self._get_provider()
        try:
            size = await provider.put_stream(path, write, overwrite=True, content_type=PARQUET_TYPE)
        except Exception:
            self._count("store", "error")
            raise
        self._count("store", "ok")
        metrics.VAULT_BYTES.labels(self.provider, "out").inc(size)
        return path

    def store_visuals(self, video_id: str, frames: Any) -> str:
        """Sync face of :meth:`astore_visuals`."""
        return sync_or_await(self.astore_visuals(video_id, frames))

    async def afetch_visuals(self, video_id: str) -> Rows | None:
        """The frame rows of ``video_id`` as dicts, or None when none were stored."""
        data = await self.afetch_bytes(layout.visuals_path(video_id))
        if data is None:
            return None
        pq = require("pyarrow.parquet", purpose="Reading visuals from Parquet")
        rows: Rows = pq.read_table(io.BytesIO(data)).to_pylist()
        return rows

    def fetch_visuals(self, video_id: str) -> Rows | None:
        """Sync face of :meth:`afetch_visuals`."""
        return sync_or_await(self.afetch_visuals(video_id))
