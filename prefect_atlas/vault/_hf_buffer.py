"""Coalescing Prefect result writes on Hugging Face into few commits.

The Hub limits commits per repository per hour (an observed error said 128), and a flow with
caching writes one result per task run. So result writes on the Hugging Face provider go to
a buffer, one per process and dataset branch (in :mod:`prefect_atlas._runtime`, since
Prefect makes block copies all the time), and are committed together:

* ``delay`` seconds after the first buffered write (a short timer, in a daemon thread);
* at once when ``max_files`` results or ``max_bytes`` are waiting (the writer commits them
  itself, so memory stays bounded);
* on :meth:`CommitBuffer.flush` (``VaultBlock.flush_results``) and at interpreter exit.

Until it is committed, a buffered result is served from the buffer to reads in the same
process, so read-after-write holds there; other processes see it after the commit.

**What a crash loses**: results still in the buffer when the process dies without running
its exit hooks (SIGKILL, an OOM kill, power loss). Such a result is a cache entry: the
cached task simply runs again next time. Nothing else is buffered.

**Concurrent writers**: each commit names its parent (``create_commit(parent_commit=...)``):
the branch head after our previous commit, or read once before the first buffered write
(one request per process and branch). If someone else
committed in between, the Hub refuses with 412; the buffer then compares each of its paths
at the old parent and at the new head. Paths nobody touched are committed again on the new
head; a path another writer changed is *not* overwritten (a result with our very bytes counts
as written): it is reported as a :class:`~prefect_atlas.VaultObjectExistsError`, raised by
an explicit flush and logged by the timer and the exit hook.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prefect_atlas._retry import run
from prefect_atlas.vault.errors import VaultError, VaultObjectExistsError

logger = logging.getLogger("prefect_atlas.vault.results")

# Files per commit (the Hub's advice: fewer than 100 operations per commit).
MAX_FILES = 100
MAX_BYTES = 32 * 1024 * 1024
DELAY = 2.0
# New parents tried for one commit while other writers keep moving the branch.
MOVED_RETRIES = 5
# The longest the exit hook waits for the final commit (the Hub down must not hang exit).
EXIT_TIMEOUT = 30.0
CONFLICT_STATUS = frozenset({409, 412})


def _status(exc: BaseException) -> int | None:
    code = getattr(getattr(exc, "response", None), "status_code", None)
    return code if isinstance(code, int) else None


@dataclass
class FlushReport:
    """What one flush did: ``committed`` paths, and paths another writer had changed."""

    committed: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    commits: int = 0


class CommitBuffer:
    """Buffered result files of one dataset branch, committed together (see the module doc).

    ``hub`` does the Hub calls; ``classify``/``attempts``/``timeout``/``translate`` are the
    provider's retry policy for each call.
    """

    def __init__(
        self,
        *,
        hub: HubCalls,
        where: str,
        delay: float | None = None,
        max_files: int | None = None,
        max_bytes: int | None = None,
    ) -> None:
        self.hub = hub
        self.where = where
        # Read when the buffer is made (not bound at import), so a test can shorten them.
        self.delay = DELAY if delay is None else delay
        self.max_files = MAX_FILES if max_files is None else max_files
        self.max_bytes = MAX_BYTES if max_bytes is None else max_bytes
        self._cond = threading.Condition()
        self._flush_lock = threading.Lock()
        self._pending: dict[str, bytes] = {}
        self._inflight: dict[str, bytes] = {}
        self._head: str | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self.commits = 0
        self.last_error: BaseException | None = None

    # ------------------------------------------------------------------ buffer

    def get(self, path: str) -> bytes | None:
        """The buffered (or being committed) bytes of ``path``, or None."""
        with self._cond:
            found = self._pending.get(path)
            return found if found is not None else self._inflight.get(path)

    def _over_bounds(self) -> bool:
        size = sum(len(d) for d in self._pending.values())
        return len(self._pending) >= self.max_files or size >= self.max_bytes

    def add(self, path: str, data: bytes) -> bool:
        """Buffer ``data`` for ``path``; True when the buffer is full and must be flushed now."""
        with self._cond:
            if self._closed:
                raise VaultError(
                    f"{self.where}: the result buffer was closed at interpreter exit; "
                    "no more results can be buffered"
                )
            self._pending[path] = data
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._timer, daemon=True, name="atlas-vault-results"
                )
                self._thread.start()
            self._cond.notify_all()
            return self._over_bounds()

    def needs_base(self) -> bool:
        return self._head is None

    def ensure_base(self) -> None:
        """Read the branch head once, before the first buffered write: the parent of the
        first commit, so a concurrent writer committing after that is detected."""
        if self._head is None:
            head = self.hub.head()
            with self._cond:
                if self._head is None:
                    self._head = head

    def pending(self) -> int:
        with self._cond:
            return len(self._pending)

    def _timer(self) -> None:
        """Commit ``delay`` seconds after the first buffered write (until closed)."""
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                deadline = time.monotonic() + self.delay
                while self._pending and not self._closed and not self._over_bounds():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                if self._closed:
                    return
            try:
                self.flush()
            except Exception as exc:
                logger.error("%s: committing buffered Prefect results failed: %s", self.where, exc)

    def close(self, timeout: float | None = None) -> None:
        """Commit what is buffered and stop the timer (interpreter exit), within ``timeout``
        seconds (default :data:`EXIT_TIMEOUT`); errors and a timeout are logged."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            left = len(self._pending)
        if not left:
            return
        limit = EXIT_TIMEOUT if timeout is None else timeout

        def final() -> None:
            try:
                self.flush()
            except Exception as exc:
                logger.error(
                    "%s: committing %d buffered Prefect results at exit failed: %s (those "
                    "cache entries are lost: the tasks will run again)",
                    self.where,
                    left,
                    exc,
                )

        worker = threading.Thread(target=final, daemon=True, name="atlas-vault-results-exit")
        worker.start()
        worker.join(limit)
        if worker.is_alive():
            logger.error(
                "%s: committing %d buffered Prefect results at exit took over %g s; given up "
                "(those cache entries are lost: the tasks will run again)",
                self.where,
                left,
                limit,
            )

    # ------------------------------------------------------------------ commits

    def flush(self) -> FlushReport:
        """Commit every buffered result now (<= ``max_files`` per commit), one flush at a time.

        Results whose commit failed are dropped from the buffer (a lost cache entry) and the
        error is raised; paths another writer changed raise
        :class:`~prefect_atlas.VaultObjectExistsError` after the rest was committed.
        """
        report = FlushReport()
        with self._flush_lock:
            while True:
                with self._cond:
                    if not self._pending:
                        break
                    batch = dict(list(self._pending.items())[: self.max_files])
                    for path in batch:
                        del self._pending[path]
                    self._inflight.update(batch)
                try:
                    self._commit(batch, report)
                except BaseException as exc:
                    self.last_error = exc
                    raise
                finally:
                    with self._cond:
                        for path, data in batch.items():
                            if self._inflight.get(path) is data:
                                del self._inflight[path]
        if report.conflicts:
            shown = ", ".join(repr(p) for p in report.conflicts[:5])
            more = f" and {len(report.conflicts) - 5} more" if len(report.conflicts) > 5 else ""
            error = VaultObjectExistsError(
                f"{self.where}: another writer committed {shown}{more} while these Prefect "
                "results were buffered; their content was kept, ours was not written (the "
                "cache entries are theirs)"
            )
            self.last_error = error
            raise error
        return report

    def _commit(self, batch: Mapping[str, bytes], report: FlushReport) -> None:
        """Commit ``batch`` on the branch, naming the parent; retry on a fresh one when it moved."""
        todo = dict(batch)
        parent = self._head or self.hub.head()
        for _ in range(MOVED_RETRIES):
            try:
                self._head = self.hub.commit(todo, parent, f"atlas: {len(todo)} Prefect results")
            except Exception as exc:
                if _status(exc) not in CONFLICT_STATUS:
                    raise
                moved = self.hub.head()
                changed = self.hub.changed(list(todo), parent, moved)
                for path, content_is_ours in changed.items():
                    if content_is_ours(todo.pop(path)):
                        report.committed.append(path)  # already there with our bytes
                    else:
                        report.conflicts.append(path)
                parent = moved
                if not todo:
                    self._head = moved
                    return
                continue
            self.commits += 1
            report.commits += 1
            report.committed.extend(todo)
            return
        raise VaultError(
            f"{self.where}: the branch kept moving under {MOVED_RETRIES} commits of buffered "
            "Prefect results (other writers commit as fast); the results were not written"
        )


class HubCalls:
    """The Hub calls a :class:`CommitBuffer` makes, each under the provider's retry policy."""

    def __init__(
        self,
        *,
        api: Any,
        hf: Any,
        dataset_id: str,
        revision: str,
        same_content: Callable[[Any, bytes], bool],
        retry: Callable[[Callable[[], Any], str], Any],
    ) -> None:
        self.api = api
        self.hf = hf
        self.dataset_id = dataset_id
        self.revision = revision
        self.same_content = same_content
        self.retry = retry

    def head(self) -> str:
        """The branch's current commit."""
        sha: str = self.retry(
            lambda: self.api.dataset_info(self.dataset_id, revision=self.revision).sha,
            "branch lookup",
        )
        return sha

    def commit(self, files: Mapping[str, bytes], parent: str, message: str) -> str:
        """One commit of ``files`` on top of ``parent``; the new head."""
        operations = [
            self.hf.CommitOperationAdd(path_in_repo=path, path_or_fileobj=data)
            for path, data in files.items()
        ]

        def create() -> str:
            info = self.api.create_commit(
                self.dataset_id,
                operations,
                commit_message=message,
                repo_type="dataset",
                revision=self.revision,
                parent_commit=parent,
            )
            oid: str = info.oid
            return oid

        oid: str = self.retry(create, "commit")
        return oid

    def changed(self, paths: list[str], old: str, new: str) -> dict[str, Callable[[bytes], bool]]:
        """Paths whose file differs between commits ``old`` and ``new``, each with a test
        of whether its file at ``new`` holds given bytes."""

        def entries(revision: str) -> dict[str, Any]:
            found = self.retry(
                lambda: self.api.get_paths_info(
                    self.dataset_id, paths, repo_type="dataset", revision=revision
                ),
                "paths lookup",
            )
            return {entry.path: entry for entry in found}

        before, after = entries(old), entries(new)

        def ident(entry: Any) -> object:
            if entry is None:
                return None
            lfs = getattr(entry, "lfs", None)
            return lfs.sha256 if lfs is not None else getattr(entry, "blob_id", None)

        def holds(entry: Any, data: bytes) -> bool:
            return entry is not None and self.same_content(entry, data)

        return {
            path: functools.partial(holds, after.get(path))
            for path in paths
            if ident(before.get(path)) != ident(after.get(path))
        }


def retry_with(
    *,
    classify: Callable[[BaseException], bool | float],
    attempts: int,
    timeout: float,
    translate: Callable[[BaseException, str], Exception | None],
) -> Callable[[Callable[[], Any], str], Any]:
    """A blocking retry runner for :class:`HubCalls`, on :func:`prefect_atlas._retry.run`."""

    def call(fn: Callable[[], Any], op: str) -> Any:
        def mapped(exc: BaseException) -> Exception | None:
            # A moved branch is the buffer's to handle, never a permanent error.
            return None if _status(exc) in CONFLICT_STATUS else translate(exc, op)

        def verdict(exc: BaseException) -> bool | float:
            return False if _status(exc) in CONFLICT_STATUS else classify(exc)

        return run(fn, classify=verdict, attempts=attempts, timeout=timeout, translate=mapped)

    return call
