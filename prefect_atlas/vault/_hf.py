"""Hugging Face dataset provider: one commit per at most 100 files, checksums from the Hub.

The Hub limits commits per hour and files per commit, so writes are batched into
``create_commit`` calls of <= 100 operations. Create-only writes read the branch head,
check the paths at that commit and commit with ``parent_commit`` set to it: if anyone
committed in between, the Hub refuses and we check again. On read, the bytes are verified
against the digest the Hub recorded for the committed file (its ETag: the git blob sha1 of
a regular file, the sha256 of an LFS file).

A commit whose answer is lost (a timeout or 5xx after the Hub applied it) is retried; a
create-only retry then finds the paths taken. Those whose content hash (the Hub's blob sha1,
or the LFS sha256) equals ours are our own earlier write and count as done; any other
content still raises :class:`~prefect_atlas.VaultObjectExistsError`. Only after such an
unknown outcome: on a first try, an identical file written by someone else is still refused.

A missing dataset or revision is a :class:`~prefect_atlas.VaultAccessError` on every read,
existence check and listing (``huggingface_hub``'s ``file_exists`` answers False for a
missing repository, which would make a typo'd ``dataset_id`` look empty).

Prefect result writes (``put_result``) are not committed one by one: they go to the
process's :class:`~prefect_atlas.vault._hf_buffer.CommitBuffer` of the branch and are
committed together; ``get_result`` serves them from there until then.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prefect_atlas import _runtime
from prefect_atlas._extras import require
from prefect_atlas._retry import arun, http_verdict, transport_failure
from prefect_atlas.vault import paths
from prefect_atlas.vault._base import REFUSALS, BatchFailed, StorageProvider
from prefect_atlas.vault._hf_buffer import CommitBuffer, HubCalls, retry_with
from prefect_atlas.vault.errors import VaultAccessError, VaultObjectExistsError
from prefect_atlas.vault.integrity import git_blob_sha1, sha256_hex, verify

COMMIT_LIMIT = 100
BUFFER_KIND = "vault-hf-results"
CONFLICT_STATUS = {409, 412}


class _HeadMoved(Exception):
    """The branch moved between our check and our create-only commit: check again."""


@dataclass
class _Attempts:
    """What earlier tries of one chunk's commit left behind."""

    # A try sent the commit and got no answer we can trust (timeout, 5xx): it may have landed.
    maybe_landed: bool = False


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    code = getattr(response, "status_code", None)
    return code if isinstance(code, int) else None


def classify(exc: BaseException) -> bool | float:
    """The Hub classifier: a moved branch head, an HTTP status, or an httpx transport failure."""
    if isinstance(exc, _HeadMoved):
        return True
    code = _status(exc)
    if code is not None:
        return http_verdict(code, getattr(getattr(exc, "response", None), "headers", None))
    markers = ("Timeout", "Connect", "Network", "Protocol")
    return transport_failure(exc, ("httpx", "httpcore"), markers)


class HfProvider(StorageProvider):
    name = "huggingface"

    def __init__(
        self,
        *,
        dataset_id: str,
        revision: str,
        endpoint: str,
        token: str | None,
        prefix: str,
        timeout: float,
        attempts: int,
    ) -> None:
        purpose = "The Hugging Face vault provider"
        self.hf: Any = require("huggingface_hub", extra="hf", purpose=purpose)
        self.errors: Any = require("huggingface_hub.errors", extra="hf", purpose=purpose)
        self.hfutils: Any = require("huggingface_hub.utils", extra="hf", purpose=purpose)
        self.repo_file: Any = require(
            "huggingface_hub.hf_api", extra="hf", purpose=purpose
        ).RepoFile
        self.dataset_id = dataset_id
        self.revision = revision
        self.endpoint = endpoint.rstrip("/")
        self.prefix = prefix
        self.timeout = timeout
        self.attempts = attempts
        # The token lives only inside the client objects, never in our messages.
        self._token = token
        self.api = self.hf.HfApi(endpoint=self.endpoint, token=token or False)

    def describe(self) -> str:
        return f"Hugging Face dataset {self.dataset_id}@{self.revision} on {self.endpoint}"

    def _permanent(self, exc: BaseException, op: str, key: str) -> Exception | None:
        code = _status(exc)
        where = f"{op} of {key!r} in dataset {self.dataset_id!r} at {self.endpoint}"
        if isinstance(exc, self.errors.RevisionNotFoundError):
            return VaultAccessError(
                f"Hugging Face dataset {self.dataset_id!r} has no revision {self.revision!r} "
                f"({where}): check `revision` (a branch of the dataset)"
            )
        if code in (401, 403):
            return VaultAccessError(
                f"Hugging Face refused the {where} ({code}): set "
                "`token` to a token with write access to the dataset"
            )
        if isinstance(exc, self.errors.RepositoryNotFoundError):
            return VaultAccessError(
                f"Hugging Face dataset {self.dataset_id!r} was not found during the {where}: "
                "check `dataset_id` and that the dataset exists"
            )
        if code == 404:
            return VaultAccessError(
                "Hugging Face could not find the dataset or revision for "
                f"the {where} (404): check `dataset_id` and `revision` "
                f"({self.revision!r}) and that the dataset exists"
            )
        return None

    async def _call(self, op: str, key: str, fn: Any, *, attempts: int | None = None) -> Any:
        return await arun(
            lambda: asyncio.to_thread(fn),
            classify=classify,
            attempts=attempts or self.attempts,
            timeout=self.timeout * 4,
            translate=lambda exc: self._permanent(exc, op, key),
        )

    async def check(self) -> str:
        def info() -> str:
            sha: str = self.api.dataset_info(
                self.dataset_id, revision=self.revision, timeout=self.timeout
            ).sha
            return f"dataset {self.dataset_id!r} found, {self.revision!r} at commit {sha[:12]}"

        found: str = await self._call("health check", "/", info, attempts=1)
        return found

    # ------------------------------------------------------------------ writes

    def _same_content(self, entry: Any, data: bytes) -> bool:
        """Whether the committed file ``entry`` (a ``RepoFile``) holds exactly ``data``."""
        if not isinstance(entry, self.repo_file):
            return False
        if entry.lfs is not None:
            return bool(entry.lfs.sha256 == sha256_hex(data))
        return bool(entry.blob_id == git_blob_sha1(data))

    def _commit(
        self,
        items: Sequence[tuple[str, bytes, str]],
        *,
        overwrite: bool,
        message: str,
        attempts: _Attempts,
    ) -> None:
        hf = self.hf
        parent: str | None = None
        pending = {paths.join(self.prefix, key): data for key, data, _ in items}
        if not overwrite:
            parent = self.api.dataset_info(self.dataset_id, revision=self.revision).sha
            present = self.api.get_paths_info(
                self.dataset_id, list(pending), repo_type="dataset", revision=parent
            )
            clash: list[str] = []
            for entry in present:
                if attempts.maybe_landed and self._same_content(entry, pending[entry.path]):
                    del pending[entry.path]  # our own earlier commit landed; its answer was lost
                else:
                    clash.append(paths.strip(self.prefix, entry.path))
            if clash:
                clash.sort()
                raise VaultObjectExistsError(
                    f"Hugging Face dataset {self.dataset_id!r} already has "
                    f"{', '.join(map(repr, clash[:5]))}{' …' if len(clash) > 5 else ''} and "
                    "overwrite=False; pass overwrite=True to replace"
                )
            if not pending:
                return
        operations = [
            hf.CommitOperationAdd(path_in_repo=full, path_or_fileobj=data)
            for full, data in pending.items()
        ]
        try:
            self.api.create_commit(
                self.dataset_id,
                operations,
                commit_message=message,
                repo_type="dataset",
                revision=self.revision,
                parent_commit=parent,
            )
        except Exception as exc:
            code = _status(exc)
            if parent is not None and code in CONFLICT_STATUS:
                raise _HeadMoved() from exc
            if code is None or code >= 500:
                attempts.maybe_landed = True  # no trustworthy answer: the Hub may have applied it
            raise

    async def put(self, key: str, data: bytes, *, overwrite: bool, content_type: str) -> None:
        try:
            await self.put_many([(key, data, content_type)], overwrite=overwrite)
        except BatchFailed as failed:
            # One object: its own error (a batch report of one would only wrap it).
            error = next(iter(failed.failed.values()))
            raise error from error.__cause__

    async def put_many(self, items: Sequence[tuple[str, bytes, str]], *, overwrite: bool) -> None:
        """Commit chunks of <= 100 one after the other; on a failure, report what was committed.

        Each commit is atomic: the chunks before a failed one are written, the ones after
        are not attempted. The failed chunk itself is unwritten after a refusal, unless an
        earlier try's answer was lost (or the failure is not a refusal): then its paths are
        looked up at the branch head and compared with our content.
        """
        written: set[str] = set()
        # Chunks are committed one after the other: the Hub serialises commits per branch.
        for start in range(0, len(items), COMMIT_LIMIT):
            chunk = items[start : start + COMMIT_LIMIT]
            label = chunk[0][0] if len(chunk) == 1 else f"{len(chunk)} files"
            message = f"atlas: store {label}"
            attempts = _Attempts()
            try:
                await self._call(
                    "commit",
                    label,
                    lambda chunk=chunk, message=message, attempts=attempts: self._commit(
                        chunk, overwrite=overwrite, message=message, attempts=attempts
                    ),
                )
            except Exception as exc:
                keys = [key for key, _, _ in chunk]
                unknown: set[str] = set()
                if attempts.maybe_landed or not isinstance(exc, REFUSALS):
                    try:
                        landed = await asyncio.to_thread(
                            functools.partial(self._landed_many, chunk)
                        )
                    except Exception:
                        unknown = set(keys)
                    else:
                        written |= landed
                        if landed == set(keys):
                            continue  # the commit landed; only its answer was lost
                raise BatchFailed(
                    written=written,
                    failed={key: exc for key in keys if key not in written},
                    unknown=unknown,
                ) from exc
            written.update(key for key, _, _ in chunk)

    def _landed_many(self, items: Sequence[tuple[str, bytes, str]]) -> set[str]:
        """Keys of ``items`` whose file at the branch head holds exactly our bytes."""
        pending = {paths.join(self.prefix, key): (key, data) for key, data, _ in items}
        present = self.api.get_paths_info(
            self.dataset_id, list(pending), repo_type="dataset", revision=self.revision
        )
        return {pending[e.path][0] for e in present if self._same_content(e, pending[e.path][1])}

    async def landed(self, key: str, data: bytes) -> bool | None:
        try:
            return bool(await asyncio.to_thread(lambda: self._landed_many([(key, data, "")])))
        except Exception:
            return None

    # ------------------------------------------------------------------ reads

    def _download(self, full: str, revision: str | None = None) -> tuple[bytes, str | None] | None:
        hf = self.hf
        url = hf.hf_hub_url(
            self.dataset_id,
            full,
            repo_type="dataset",
            revision=revision or self.revision,
            endpoint=self.endpoint,
        )
        headers = self.hfutils.build_hf_headers(token=self._token or False)
        response = self.hfutils.get_session().get(
            url, headers=headers, follow_redirects=True, timeout=self.timeout
        )
        first = response.history[0] if response.history else response
        try:
            self.hfutils.hf_raise_for_status(response)
        except self.errors.EntryNotFoundError:
            return None
        etag = first.headers.get("X-Linked-Etag") or first.headers.get("ETag")
        return response.content, etag.strip('W/"') if etag else None

    async def get(self, key: str) -> bytes | None:
        full = paths.join(self.prefix, key)
        result = await self._call("download", key, lambda: self._download(full))
        return self._verified(key, result)

    def _verified(self, key: str, result: tuple[bytes, str | None] | None) -> bytes | None:
        """The downloaded bytes, checked against the digest the Hub recorded (its ETag)."""
        if result is None:
            return None
        data, etag = result
        if etag and len(etag) == 64:
            verify(key, data, algorithm="sha256", expected=etag, provider=self.name)
        elif etag and len(etag) == 40:
            verify(key, data, algorithm="git-sha1", expected=etag, provider=self.name)
        return bytes(data)

    def _file_metadata(self, full: str) -> Any | None:
        """The file's metadata from a ``HEAD`` (commit, ETag, size), or None when absent."""
        # Not ``HfApi.file_exists``: it answers False for a missing dataset or revision too.
        url = self.hf.hf_hub_url(
            self.dataset_id,
            full,
            repo_type="dataset",
            revision=self.revision,
            endpoint=self.endpoint,
        )
        try:
            return self.hf.get_hf_file_metadata(
                url, token=self._token or False, timeout=self.timeout
            )
        except self.errors.RemoteEntryNotFoundError:
            return None

    def _file_exists(self, full: str) -> bool:
        return self._file_metadata(full) is not None

    async def exists(self, key: str) -> bool:
        full = paths.join(self.prefix, key)
        return bool(await self._call("existence check", key, lambda: self._file_exists(full)))

    async def list(self, prefix: str) -> list[str]:
        folder = paths.join(self.prefix, prefix)

        def names() -> list[str]:
            try:
                tree = self.api.list_repo_tree(
                    self.dataset_id,
                    path_in_repo=folder or None,
                    recursive=True,
                    repo_type="dataset",
                    revision=self.revision,
                )
                return [
                    paths.strip(self.prefix, e.path) for e in tree if isinstance(e, self.repo_file)
                ]
            except self.errors.EntryNotFoundError:
                return []

        found = await self._call("listing", prefix or "/", names)
        return sorted(k for k in found if k.split("/")[0] != ".gitattributes")

    async def delete(self, key: str) -> bool:
        full = paths.join(self.prefix, key)

        def remove() -> bool:
            if not self._file_exists(full):
                return False
            self.api.create_commit(
                self.dataset_id,
                [self.hf.CommitOperationDelete(path_in_repo=full)],
                commit_message=f"atlas: delete {key}",
                repo_type="dataset",
                revision=self.revision,
            )
            return True

        return bool(await self._call("delete", key, remove))

    # ------------------------------------------------------------------ Prefect results

    def _buffer_key(self) -> tuple[str, str, str, str]:
        # One buffer per branch and token (a digest: the token itself is never a key).
        token = hashlib.sha256((self._token or "").encode()).hexdigest()[:16]
        return (self.endpoint, self.dataset_id, self.revision, token)

    def _results_buffer(self) -> CommitBuffer:
        """The process's commit buffer of this dataset branch (see :mod:`._hf_buffer`).

        Made on first use (its timer thread starts with the first buffered write).
        """
        key = self._buffer_key()

        def make() -> CommitBuffer:
            hub = HubCalls(
                api=self.api,
                hf=self.hf,
                dataset_id=self.dataset_id,
                revision=self.revision,
                same_content=self._same_content,
                retry=retry_with(
                    classify=classify,
                    attempts=self.attempts,
                    timeout=self.timeout * 4,
                    translate=lambda exc, op: self._permanent(exc, op, "Prefect results"),
                ),
            )
            buffer = CommitBuffer(hub=hub, where=self.describe())
            _runtime.on_exit(f"Prefect result buffer of {self.describe()}", buffer.close)
            return buffer

        return _runtime.shared(BUFFER_KIND, key, make)

    async def put_result(self, key: str, data: bytes, *, content_type: str) -> None:
        buffer = self._results_buffer()
        if buffer.needs_base():
            await asyncio.to_thread(buffer.ensure_base)  # retried and translated in there
        if buffer.add(paths.join(self.prefix, key), data):
            await asyncio.to_thread(buffer.flush)  # full: the writer commits (bounded memory)

    async def get_result(self, key: str) -> bytes | None:
        """Buffered bytes first; then a ``HEAD`` (no download when absent) and a ``GET``
        pinned to the commit the ``HEAD`` saw."""
        full = paths.join(self.prefix, key)
        buffered = self._results_buffer().get(full)
        if buffered is not None:
            return buffered
        meta = await self._call("existence check", key, lambda: self._file_metadata(full))
        if meta is None:
            return None
        commit = getattr(meta, "commit_hash", None)
        result = await self._call("download", key, lambda: self._download(full, commit))
        return self._verified(key, result)

    async def flush_results(self) -> None:
        await asyncio.to_thread(self._results_buffer().flush)
