"""Google Cloud Storage provider: one reused client, bounded-concurrency uploads.

prefect-gcp's ``GcsBucket.write_path`` builds a client, resolves credentials and GETs the
bucket on every call; here the client and the bucket handle are made once per block and
uploads run ``max_concurrency`` at a time. Create-only writes use ``if_generation_match=0``
(which also makes a retried upload safe), the client checks crc32c on the wire, and the
sha256 we record in the object's metadata is verified on every read.

Per upload this is one request (the metadata rides in the multipart body). Measured against
``gcp-storage-emulator`` (bench/vault.py) the rest of the time is the server's: a reused raw
client uploading the same objects takes about as long. What is ours and tuned:

* blocking client calls run on the provider's own thread pool of ``max_concurrency``
  workers, not the event loop's default executor (``min(32, cores + 4)`` workers shared
  with everything else, which silently capped the concurrency at 6 on 2 cores);
* the HTTP connection pool holds ``max_concurrency`` connections (requests keeps 10 and
  throws away the rest, so a bound above 10 paid a new TCP/TLS connection per upload);
* the existence check before a create-only upload is made only against an emulator
  (``STORAGE_EMULATOR_HOST``), which ignores preconditions; real GCS enforces
  ``if_generation_match=0`` atomically, so there it would be a wasted round trip.

Correctness around absence: ``get_blob``, ``Blob.exists`` and a 404 on delete say nothing
about *which* thing is missing, the object or the bucket. So the first "absent" answer of
a provider checks the bucket once (its metadata, or a one-object listing where the
credentials may read objects but not the bucket) and raises
:class:`~prefect_atlas.VaultAccessError` naming ``bucket`` when it does not exist; a typo'd
bucket never reads as an empty vault. A read pins the download to the generation whose
metadata (and sha256) it read; when the object is replaced or deleted in between (412 or
404), the read starts over from fresh metadata, a bounded number of times.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from prefect_atlas import settings
from prefect_atlas._retry import arun, http_verdict, transport_failure
from prefect_atlas.vault import paths
from prefect_atlas.vault._base import BatchFailed, StorageProvider
from prefect_atlas.vault.errors import VaultAccessError, VaultError, VaultObjectExistsError
from prefect_atlas.vault.integrity import sha256_hex, verify

SHA_KEY = "atlas-sha256"
EMULATOR_ENV = "STORAGE_EMULATOR_HOST"
# requests' default; the pool is only enlarged when more uploads than this run at once.
DEFAULT_POOL = 10
# Reads of an object that keeps being replaced between its metadata and its bytes.
READ_ATTEMPTS = 5

T = TypeVar("T")


def classify(exc: BaseException) -> bool | float:
    """The GCS classifier: a google-api-core error by its status, a requests failure by its kind."""
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return http_verdict(code, getattr(getattr(exc, "response", None), "headers", None))
    return transport_failure(
        exc, ("requests", "urllib3", "google.auth"), ("Timeout", "Connection", "TransportError")
    )


def _exists(key: str, bucket: str) -> VaultObjectExistsError:
    return VaultObjectExistsError(
        f"GCS object {key!r} already exists in bucket {bucket!r} and overwrite=False; "
        "pass overwrite=True to replace it"
    )


class GcsProvider(StorageProvider):
    name = "gcs"

    def __init__(
        self,
        *,
        bucket: str,
        prefix: str,
        client_factory: Callable[[], Any],
        max_concurrency: int,
        timeout: float,
        attempts: int,
    ) -> None:
        self.bucket_name = bucket
        self.prefix = prefix
        self._client_factory = client_factory
        self._client: Any = None
        self._bucket: Any = None
        self._pool: ThreadPoolExecutor | None = None
        self.max_concurrency = max_concurrency
        self.timeout = timeout
        self.attempts = attempts
        # The emulator ignores preconditions: only there does create-only need a pre-check.
        self.check_before_create = bool(settings.read("storage_emulator_host"))
        # Set once the bucket is known to exist (then "absent" means the object is).
        self._bucket_seen = False

    def describe(self) -> str:
        where = (
            f"gs://{self.bucket_name}/{self.prefix}" if self.prefix else f"gs://{self.bucket_name}"
        )
        return f"GCS {where}"

    def _threads(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                self.max_concurrency, thread_name_prefix="atlas-vault-gcs"
            )
        return self._pool

    async def _in_thread(self, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._threads(), fn)
        except RuntimeError as exc:
            # At interpreter exit thread pools take no more work, but the event store's final
            # drain may still ship spooled events to this vault: then the call runs inline.
            if "interpreter shutdown" not in str(exc):
                raise
            return fn()

    def _make_client(self) -> Any:
        client = self._client_factory()
        if self.max_concurrency > DEFAULT_POOL:
            from requests.adapters import HTTPAdapter

            session = client._http  # the AuthorizedSession every request of this client uses
            for scheme in ("https://", "http://"):
                session.mount(
                    scheme,
                    HTTPAdapter(pool_connections=DEFAULT_POOL, pool_maxsize=self.max_concurrency),
                )
        return client

    async def _bucket_handle(self) -> Any:
        if self._bucket is None:
            client = await self._in_thread(self._make_client)
            self._client = client
            self._bucket = client.bucket(self.bucket_name)  # no request: the bucket is not re-read
        return self._bucket

    def _permanent(self, exc: BaseException, op: str, key: str) -> Exception | None:
        code = getattr(exc, "code", None)
        where = f"{op} of {key!r} in bucket {self.bucket_name!r}"
        if code in (401, 403):
            return VaultAccessError(
                f"GCS refused the {where} ({code}): give the credentials (gcp_credentials or "
                "service_account_info) the Storage Object Admin role on the bucket"
            )
        if code == 404:
            return VaultAccessError(
                f"GCS bucket {self.bucket_name!r} was not found during the {where}: check `bucket`"
            )
        return None

    async def _call(
        self, op: str, key: str, fn: Callable[[], Any], *, attempts: int | None = None
    ) -> Any:
        return await arun(
            lambda: self._in_thread(fn),
            classify=classify,
            attempts=attempts or self.attempts,
            timeout=self.timeout * 4,
            translate=lambda exc: self._permanent(exc, op, key),
        )

    def _probe_bucket(self) -> str:
        """Raise (404 → :class:`VaultAccessError` via ``_permanent``) unless the bucket exists."""
        try:
            bucket = self._client.get_bucket(self.bucket_name, timeout=self.timeout, retry=None)
        except Exception as exc:
            if getattr(exc, "code", None) not in (401, 403):
                raise
        else:
            return f"bucket {self.bucket_name!r} found ({bucket.location or 'location unknown'})"
        # Object-level roles (Storage Object Admin) may not read bucket metadata; listing works.
        blobs = self._client.list_blobs(
            self.bucket_name,
            prefix=self.prefix or None,
            max_results=1,
            timeout=self.timeout,
            retry=None,
        )
        next(iter(blobs), None)
        return f"bucket {self.bucket_name!r} found (objects listable; bucket metadata not readable)"

    async def _absent(self, op: str, key: str) -> None:
        """Called when an object was reported absent: raise if the bucket itself is missing."""
        if not self._bucket_seen:
            await self._call(op, key, self._probe_bucket)
            self._bucket_seen = True

    async def check(self) -> str:
        await self._bucket_handle()
        found: str = await self._call("health check", "/", self._probe_bucket, attempts=1)
        self._bucket_seen = True
        return found

    async def put(self, key: str, data: bytes, *, overwrite: bool, content_type: str) -> None:
        bucket = await self._bucket_handle()
        full = paths.join(self.prefix, key)
        checksum = sha256_hex(data)
        tries = 0

        def upload() -> None:
            nonlocal tries
            tries += 1
            blob = bucket.blob(full)
            blob.metadata = {SHA_KEY: checksum}
            if (
                not overwrite
                and self.check_before_create
                and tries == 1
                and blob.exists(timeout=self.timeout, retry=None)
            ):
                # GCS itself enforces if_generation_match=0 below (atomically); this early
                # check answers the same for the emulator, which ignores preconditions.
                raise _exists(key, self.bucket_name)
            try:
                blob.upload_from_string(
                    data,
                    content_type=content_type,
                    if_generation_match=None if overwrite else 0,
                    checksum="crc32c",
                    timeout=self.timeout,
                    retry=None,
                )
            except Exception as exc:
                if getattr(exc, "code", None) != 412:
                    raise
                # A retried create-only upload whose first try landed: same bytes, done.
                if tries > 1:
                    existing = bucket.get_blob(full, timeout=self.timeout, retry=None)
                    if existing is not None and (existing.metadata or {}).get(SHA_KEY) == checksum:
                        return
                raise _exists(key, self.bucket_name) from None

        await self._call("upload", key, upload)

    async def put_many(self, items: Sequence[tuple[str, bytes, str]], *, overwrite: bool) -> None:
        """Upload ``max_concurrency`` at a time; on a failure, report exactly what landed.

        After the first failure no new upload starts, and the ones in flight are let finish
        rather than cancelled: a cancelled task cannot stop its upload thread, whose object
        would then appear after we reported it missing. A failure that is not a refusal (a
        timeout, a 5xx that outlived the retries) may still have landed: the object's
        recorded sha256 is compared with ours, and a match counts as written.
        """
        await self._bucket_handle()
        gate = asyncio.Semaphore(self.max_concurrency)
        written: set[str] = set()
        failed: dict[str, BaseException] = {}
        unknown: set[str] = set()

        async def one(key: str, data: bytes, content_type: str) -> None:
            async with gate:
                if failed:
                    return  # not started: left as it was
                error, lost = await self.put_settled(
                    key, data, overwrite=overwrite, content_type=content_type
                )
                if error is None:
                    written.add(key)
                    return
                failed[key] = error
                if lost:
                    unknown.add(key)

        await asyncio.gather(*(one(key, data, content_type) for key, data, content_type in items))
        if failed:
            raise BatchFailed(written=written, failed=failed, unknown=unknown) from next(
                iter(failed.values())
            )

    async def landed(self, key: str, data: bytes) -> bool | None:
        bucket = await self._bucket_handle()
        full = paths.join(self.prefix, key)
        try:
            blob = await self._in_thread(
                lambda: bucket.get_blob(full, timeout=self.timeout, retry=None)
            )
        except Exception:
            return None
        return blob is not None and (blob.metadata or {}).get(SHA_KEY) == sha256_hex(data)

    async def get(self, key: str) -> bytes | None:
        bucket = await self._bucket_handle()
        full = paths.join(self.prefix, key)

        def download() -> tuple[bytes, str | None] | None:
            for _ in range(READ_ATTEMPTS):
                blob = bucket.get_blob(full, timeout=self.timeout, retry=None)
                if blob is None:
                    return None
                # Pinned to the generation whose metadata we read: bytes and checksum match.
                try:
                    data = blob.download_as_bytes(
                        if_generation_match=blob.generation,
                        checksum="auto",
                        timeout=self.timeout,
                        retry=None,
                    )
                except Exception as exc:
                    if getattr(exc, "code", None) not in (404, 412):
                        raise
                    continue  # replaced (412) or deleted (404) since its metadata was read: again
                return data, (blob.metadata or {}).get(SHA_KEY)
            raise VaultError(
                f"GCS object {key!r} in bucket {self.bucket_name!r} kept "
                f"changing during the read ({READ_ATTEMPTS} tries, each replaced "
                "between its metadata and its bytes); read it again later"
            )

        result = await self._call("download", key, download)
        if result is None:
            await self._absent("download", key)
            return None
        self._bucket_seen = True
        data, expected = result
        if expected:
            verify(key, data, algorithm="sha256", expected=expected, provider=self.name)
        return bytes(data)

    async def exists(self, key: str) -> bool:
        bucket = await self._bucket_handle()
        full = paths.join(self.prefix, key)
        found = bool(
            await self._call(
                "existence check",
                key,
                lambda: bucket.blob(full).exists(timeout=self.timeout, retry=None),
            )
        )
        if not found:
            await self._absent("existence check", key)
        return found

    async def list(self, prefix: str) -> list[str]:
        await self._bucket_handle()
        folder = paths.join(self.prefix, prefix)
        wanted = f"{folder}/" if folder else None

        def names() -> list[str]:
            blobs = self._client.list_blobs(
                self.bucket_name, prefix=wanted, timeout=self.timeout, retry=None
            )
            return [paths.strip(self.prefix, b.name) for b in blobs]

        found = sorted(await self._call("listing", prefix or "/", names))
        self._bucket_seen = True  # a listing of a missing bucket is a 404
        return found

    async def delete(self, key: str) -> bool:
        bucket = await self._bucket_handle()
        full = paths.join(self.prefix, key)

        def remove() -> bool:
            try:
                bucket.blob(full).delete(timeout=self.timeout, retry=None)
            except Exception as exc:
                if getattr(exc, "code", None) == 404:
                    return False
                raise
            return True

        removed = bool(await self._call("delete", key, remove))
        if not removed:
            await self._absent("delete", key)
        return removed

    async def aclose(self) -> None:
        client, self._client, self._bucket = self._client, None, None
        pool, self._pool = self._pool, None
        if client is not None:
            await asyncio.to_thread(client.close)
        if pool is not None:
            pool.shutdown(wait=False)
