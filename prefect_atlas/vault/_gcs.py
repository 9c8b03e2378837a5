"""Google Cloud Storage provider: one reused client, bounded-concurrency uploads.

prefect-gcp's ``GcsBucket.write_path`` builds a client, resolves credentials and GETs the
bucket on every call; here the client and the bucket handle are made once per block and
uploads run ``max_concurrency`` at a time. Create-only writes use ``if_generation_match=0``
(which also makes a retried upload safe), the client checks crc32c on the wire, and the
sha256 we record in the object's metadata is verified on every read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from prefect_atlas.vault import paths
from prefect_atlas.vault._base import VaultProvider
from prefect_atlas.vault._retry import parse_retry_after, retrying
from prefect_atlas.vault.errors import VaultAccessError, VaultObjectExistsError
from prefect_atlas.vault.integrity import sha256_hex, verify

SHA_KEY = "atlas-sha256"
TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}


def classify(exc: BaseException) -> bool | float:
    """Transient (retry) or permanent, from a google-api-core / requests exception."""
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        if code not in TRANSIENT_STATUS:
            return False
        response = getattr(exc, "response", None)
        headers = getattr(response, "headers", None) or {}
        after = parse_retry_after(headers.get("Retry-After"))
        return after if after is not None else True
    name = type(exc).__name__
    module = type(exc).__module__
    if module.startswith(("requests", "urllib3", "google.auth")) and (
        "Timeout" in name or "Connection" in name or "TransportError" in name
    ):
        return True
    return isinstance(exc, TimeoutError | ConnectionError)


def _exists(key: str, bucket: str) -> VaultObjectExistsError:
    return VaultObjectExistsError(
        f"GCS object {key!r} already exists in bucket {bucket!r} and overwrite=False; "
        "pass overwrite=True to replace it"
    )


class GcsProvider(VaultProvider):
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
        self.max_concurrency = max_concurrency
        self.timeout = timeout
        self.attempts = attempts

    def describe(self) -> str:
        where = f"gs://{self.bucket_name}/{self.prefix}" if self.prefix else f"gs://{self.bucket_name}"
        return f"GCS {where}"

    async def _bucket_handle(self) -> Any:
        if self._bucket is None:
            client = await asyncio.to_thread(self._client_factory)
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
            return VaultAccessError(f"GCS bucket {self.bucket_name!r} was not found during the {where}: check `bucket`")
        return None

    async def _call(self, op: str, key: str, fn: Callable[[], Any]) -> Any:
        try:
            return await retrying(
                lambda: asyncio.to_thread(fn), classify=classify, attempts=self.attempts, budget=self.timeout * 4
            )
        except Exception as exc:
            mapped = self._permanent(exc, op, key)
            if mapped is not None:
                raise mapped from exc
            raise

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
            if not overwrite and tries == 1 and blob.exists(timeout=self.timeout, retry=None):
                # GCS itself enforces if_generation_match=0 below (atomically); this early
                # check answers the same for servers that ignore preconditions (the emulator).
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
        await self._bucket_handle()
        gate = asyncio.Semaphore(self.max_concurrency)

        async def one(key: str, data: bytes, content_type: str) -> None:
            async with gate:
                await self.put(key, data, overwrite=overwrite, content_type=content_type)

        try:
            async with asyncio.TaskGroup() as group:
                for key, data, content_type in items:
                    group.create_task(one(key, data, content_type))
        except BaseExceptionGroup as failed:
            # Callers catch our errors, not groups: raise the first, note how many failed.
            first = failed.exceptions[0]
            if len(failed.exceptions) > 1:
                first.add_note(f"{len(failed.exceptions) - 1} other upload(s) of this batch failed too")
            raise first from None

    async def get(self, key: str) -> bytes | None:
        bucket = await self._bucket_handle()
        full = paths.join(self.prefix, key)

        def download() -> tuple[bytes, str | None] | None:
            blob = bucket.get_blob(full, timeout=self.timeout, retry=None)
            if blob is None:
                return None
            # Pinned to the generation whose metadata we read: bytes and checksum match.
            data = blob.download_as_bytes(
                if_generation_match=blob.generation, checksum="auto", timeout=self.timeout, retry=None
            )
            return data, (blob.metadata or {}).get(SHA_KEY)

        result = await self._call("download", key, download)
        if result is None:
            return None
        data, expected = result
        if expected:
            verify(key, data, algorithm="sha256", expected=expected, provider=self.name)
        return bytes(data)

    async def exists(self, key: str) -> bool:
        bucket = await self._bucket_handle()
        full = paths.join(self.prefix, key)
        return bool(
            await self._call("existence check", key, lambda: bucket.blob(full).exists(timeout=self.timeout, retry=None))
        )

    async def list(self, prefix: str) -> list[str]:
        await self._bucket_handle()
        folder = paths.join(self.prefix, prefix)
        wanted = f"{folder}/" if folder else None

        def names() -> list[str]:
            blobs = self._client.list_blobs(self.bucket_name, prefix=wanted, timeout=self.timeout, retry=None)
            return [paths.strip(self.prefix, b.name) for b in blobs]

        return sorted(await self._call("listing", prefix or "/", names))

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

        return bool(await self._call("delete", key, remove))

    async def aclose(self) -> None:
        client, self._client, self._bucket = self._client, None, None
        if client is not None:
            await asyncio.to_thread(client.close)
