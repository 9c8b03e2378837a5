"""``vault``: Atlas 0.2.1's vault (``atlas.vault``) over :class:`VaultBlock`.

Sync, as 0.2.1 was: every method runs to completion and returns its result, also when it is
called without ``await`` from async code (it blocks the caller meanwhile, as 0.2.1 did).
``VAULT_PROVIDER`` picks the provider as before (``huggingface``, ``gcs``, and now ``local``).

Changed for safety: a failed read or listing raises (0.2.1 returned ``None`` or ``[]``, so an
outage looked like missing data); only an object that is not there gives ``None``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from prefect_atlas.compat import _config
from prefect_atlas.compat._config import call_sync
from prefect_atlas.vault import VaultBlock, layout

Frame = tuple[int, bytes]  # (frame_index, image_bytes), 0.2.1's visual evidence item


def legacy_transcript_path(video_id: str) -> str:
    """Where Atlas 0.2.1 kept a transcript: ``transcripts/{video_id}.json`` (not sharded)."""
    return f"transcripts/{layout.check_video_id(video_id)}.json"


class Vault:
    """The ``vault`` object: JSON, metadata, transcripts and visual evidence."""

    def block(self) -> VaultBlock:
        """The :class:`VaultBlock` behind ``vault`` (saved under ``ATLAS_BLOCK``, or built from
        ``VAULT_PROVIDER`` and its variables)."""
        return _config.block(VaultBlock)

    def store_json(self, path: str, data: Any) -> str:
        """Store ``data`` as JSON at ``path``; returns the stored path (0.2.1 returned None)."""
        vault = self.block()
        return call_sync(vault.astore_json(path, data))

    def fetch_json(self, path: str) -> Any:
        """The JSON object at ``path``, or None when there is none (a failed read raises)."""
        vault = self.block()
        return call_sync(vault.afetch_json(path))

    def list_files(self, prefix: str = "") -> list[str]:
        """Sorted paths under folder ``prefix`` (a failed listing raises)."""
        vault = self.block()
        return call_sync(vault.alist_objects(prefix))

    def store_metadata(
        self, video_id: str, data: Mapping[str, Any], date: dt.date | str | None = None
    ) -> str:
        """Store a video's metadata at ``metadata/YYYY-MM-DD/{video_id}.json`` (UTC today by
        default), the path 0.2.1 used."""
        vault = self.block()
        return call_sync(vault.astore_metadata(video_id, data, date))

    def fetch_metadata(self, video_id: str, date: dt.date | str | None = None) -> Any:
        """The metadata stored for ``video_id`` on ``date`` (UTC today by default), or None."""
        vault = self.block()
        return call_sync(vault.afetch_json(layout.metadata_path(video_id, date)))

    def store_transcript(self, video_id: str, data: Mapping[str, Any]) -> str:
        """Store a transcript document (any JSON object, e.g. ``{"text": ..., "segments": []}``)
        at ``transcripts/{shard}/{video_id}.json``."""
        vault = self.block()
        return call_sync(vault.astore_json(layout.transcript_path(video_id), dict(data)))

    def fetch_transcript(self, video_id: str) -> Any:
        """The transcript document of ``video_id``, or None; one 0.2.1 stored at the unsharded
        ``transcripts/{video_id}.json`` is found too."""
        vault = self.block()

        async def fetch() -> Any:
            found = await vault.afetch_json(layout.transcript_path(video_id))
            if found is None:
                found = await vault.afetch_json(legacy_transcript_path(video_id))
            return found

        return call_sync(fetch())

    def store_visual_evidence(self, video_id: str, frames: Sequence[Frame]) -> str:
        """Store ``(frame_index, image_bytes)`` pairs as zstd Parquet rows ``frame_index``,
        ``image`` at ``visuals/{shard}/{video_id}.parquet`` (needs the ``[hf]`` extra)."""
        rows = []
        for index, item in enumerate(frames):
            if len(item) != 2 or not isinstance(item[1], bytes | bytearray):
                raise TypeError(
                    f"frames[{index}] must be a (frame_index, image_bytes) pair, got {item!r:.60}"
                )
            rows.append({"frame_index": int(item[0]), "image": bytes(item[1])})
        vault = self.block()
        return call_sync(vault.astore_visuals(video_id, rows))

    def __repr__(self) -> str:
        found = _config.built(VaultBlock)
        return f"<atlas vault: {found.describe() if found else 'not opened yet'}>"


vault = Vault()
