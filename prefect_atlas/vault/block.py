"""``VaultBlock``: one storage API over local disk, Google Cloud Storage and Hugging Face.

The block is configuration; the provider strategy (and its client) is built on first use
and reused by every later call, so a flow writing thousands of objects makes one client.

Where it stores is one field, ``storage``: a choice of provider settings models
(:mod:`~prefect_atlas.vault._settings`), so the Prefect UI shows only the chosen provider's
fields. The flat keyword arguments and attributes of 0.3.0 (``provider``, ``bucket``,
``dataset_id``...) still work. GCS credentials are a reference to a saved prefect-gcp
``GcpCredentials`` block, loaded when the GCS provider is first built, so that importing the
block never imports prefect-gcp (see docs/vault.md).
"""

from __future__ import annotations

import asyncio
import builtins
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Self, cast

import orjson
from prefect.filesystems import WritableFileSystem
from prefect.types import SecretDict
from pydantic import (
    ConfigDict,
    Field,
    HttpUrl,
    PrivateAttr,
    SecretStr,
    TypeAdapter,
    model_validator,
)

from prefect_atlas import metrics
from prefect_atlas._blocks import CopySafe, docs_url, logo_url
from prefect_atlas._deprecation import warn_renamed
from prefect_atlas._dispatch import sync_or_await
from prefect_atlas._health import Health
from prefect_atlas._paths import atlas_home
from prefect_atlas._redact import redact_text
from prefect_atlas.vault import _json, paths
from prefect_atlas.vault._aliases import ClassOrInstance
from prefect_atlas.vault._base import StorageProvider
from prefect_atlas.vault._batch import JSON_TYPE, BatchStore
from prefect_atlas.vault._batch import Paths as Paths
from prefect_atlas.vault._providers import build_provider
from prefect_atlas.vault._records import PARQUET_TYPE as PARQUET_TYPE
from prefect_atlas.vault._records import AtlasRecords
from prefect_atlas.vault._records import Rows as Rows
from prefect_atlas.vault._results import ResultFiles
from prefect_atlas.vault._settings import (
    FLAT_KEYS,
    LEGACY_SECRET_FIELDS,
    GcsStorage,
    HuggingFaceStorage,
    LocalStorage,
    Provider,
    Storage,
    from_flat,
)

_STORAGE: TypeAdapter[LocalStorage | GcsStorage | HuggingFaceStorage] = TypeAdapter(Storage)


def _when_provider(provider: str, definition: str) -> dict[str, Any]:
    """A JSON-schema rule: when ``storage.provider`` is ``provider``, check ``definition``."""
    chosen = {"properties": {"provider": {"const": provider}}, "required": ["provider"]}
    return {
        "if": {"properties": {"storage": chosen}, "required": ["storage"]},
        "then": {"properties": {"storage": {"$ref": f"#/definitions/{definition}"}}},
    }


class VaultHealth(Health):
    """What :meth:`VaultBlock.ahealth` found: the container itself, not one object.

    ``ok`` is True when the folder, bucket or dataset (at its revision) is usable.
    """

    model_config = ConfigDict(frozen=True)


# WritableFileSystem types read_path/write_path as coroutines; ours are sync faces (Prefect
# calls them with ``_sync=True``) next to aread_path/awrite_path, as prefect-gcp's GcsBucket.
class VaultBlock(CopySafe, AtlasRecords, BatchStore, ResultFiles, WritableFileSystem):  # type: ignore[misc]
    """Atlas's vault of metadata, transcripts and visual evidence, on a switchable provider.

    ``storage`` picks where objects live: ``LocalStorage`` (a folder, by default
    ``$ATLAS_HOME/vault``), ``GcsStorage`` (a bucket, extra ``[gcs]``) or
    ``HuggingFaceStorage`` (a dataset repository, extra ``[hf]``); the 0.3.0 flat keywords
    (``VaultBlock(provider="gcs", bucket=...)``) and attributes (``vault.bucket``) still work.
    Every method has an async original (``astore_json``) and a sync face (``store_json``).

    Example:
        Store and read back a video's metadata in a flow:
        ```python
        from prefect_atlas import VaultBlock

        vault = VaultBlock.load("BLOCK_NAME")
        path = vault.store_metadata("dQw4w9WgXcQ", {"title": "..."})
        data = vault.fetch_json(path)
        ```

        In async code use the ``a``-prefixed methods:
        ```python
        from prefect_atlas import VaultBlock

        vault = await VaultBlock.aload("BLOCK_NAME")
        await vault.astore_batch([("notes/a.json", {"n": 1}), ("notes/b.json", {"n": 2})])
        ```
    """

    _block_type_name: ClassVar[str] = "Atlas Vault"
    _block_type_slug: ClassVar[str] = "atlas-vault"
    _logo_url: ClassVar[HttpUrl | None] = logo_url("atlas-vault.png")
    _documentation_url: ClassVar[HttpUrl | None] = docs_url("vault.md")
    _description: ClassVar[str] = (
        "Where Atlas keeps video metadata, transcripts and visual evidence: a folder, a "
        "Google Cloud Storage bucket or a Hugging Face dataset. Every object is checksummed "
        "and read back verified."
    )

    # Validation errors must not echo the input: it may hold a token or a private key.
    model_config = ConfigDict(hide_input_in_errors=True)

    storage: Storage = Field(
        default_factory=LocalStorage,
        title="Storage",
        description=(
            "Where the vault keeps its objects: a local folder, a Google Cloud Storage bucket "
            "or a Hugging Face dataset, with that choice's settings."
        ),
    )
    timeout: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        title="Request timeout (s)",
        description="Seconds one request to Google Cloud Storage or Hugging Face may take.",
    )
    retry_attempts: int = Field(
        default=5,
        ge=1,
        le=20,
        title="Attempts per request",
        description=(
            "How many times a request that failed for a passing reason (busy service, "
            "timeout) is tried before the vault gives up."
        ),
    )

    _provider: StorageProvider | None = PrivateAttr(default=None)
    # Clients hold sockets, locks and thread pools: copies and pickles never carry (or share)
    # them; each copy builds its own provider on first use.
    _fresh_on_copy: ClassVar[Mapping[str, Callable[[], object]]] = {"_provider": lambda: None}

    # ------------------------------------------------------------------ validation

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The block's schema; the secret fields of 0.3.0 stay secret; the storage choice is
        an ``anyOf``.

        A 0.3.0 document saved again keeps its flat keys (the server merges data on update),
        and the server hides only the fields this schema lists: so its old ``token`` and
        ``service_account_info`` are listed too, never shown in the UI.
        """
        schema = super().model_json_schema(*args, **kwargs)
        schema["secret_fields"] = [*schema["secret_fields"], *LEGACY_SECRET_FIELDS]
        # The v1 UI reads `anyOf` only (v2 reads both); with `provider` required and constant
        # in each choice, at most one choice matches, so `anyOf` means what `oneOf` did.
        storage = schema["properties"]["storage"]
        if "oneOf" in storage:
            storage["anyOf"] = storage.pop("oneOf")
        # A failed `anyOf` is one vague error on `storage`; these rules name the field
        # (`storage.bucket` is required) for the chosen provider.
        schema.update(_when_provider("gcs", "GcsStorage"))
        schema["else"] = _when_provider("huggingface", "HuggingFaceStorage")
        return schema

    @model_validator(mode="before")
    @classmethod
    def _flat_fields(cls, data: Any) -> Any:
        # Keyword calls and 0.3.0 documents give the provider's fields flat on the block.
        return from_flat(data) if isinstance(data, Mapping) else data

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy; flat provider fields in ``update`` (``token=...``) go into ``storage``."""
        if update and FLAT_KEYS.intersection(update):
            data = from_flat(update, current=self.storage)
            data["storage"] = _STORAGE.validate_python(data["storage"])
            update = data
        return super().model_copy(update=update, deep=deep)

    # The flat attribute names of 0.3.0, read-only: None when the provider has no such field.

    @property
    def provider(self) -> Provider:  # type: ignore[override]  # a field in 0.3.0
        """``local``, ``gcs`` or ``huggingface``."""
        return self.storage.provider

    def _setting(self, name: str) -> Any:
        return getattr(self.storage, name, None)

    @property
    def root(self) -> str | None:
        """The local folder (None: the default one, or not the local provider)."""
        return self._setting("root") or None

    @property
    def bucket(self) -> str | None:
        """The GCS bucket."""
        return cast("str | None", self._setting("bucket"))

    @property
    def project(self) -> str | None:
        """The GCP project (None: the credentials' own)."""
        return self._setting("project") or None

    @property
    def gcp_credentials(self) -> str | dict[str, Any] | None:
        """The GcpCredentials block of the GCS provider: its name (as 0.3.0 saved it) or
        ``{"$ref": {"block_document_id": ...}}``; None: Google's default credentials."""
        return cast("str | dict[str, Any] | None", self._setting("gcp_credentials"))

    @property
    def service_account_info(self) -> SecretDict | None:
        """Deprecated: a service-account key given to this instance (never saved)."""
        return cast("SecretDict | None", self._setting("_service_account_info"))

    @property
    def max_concurrency(self) -> int:
        """Uploads in flight at once on GCS (4 elsewhere, unused)."""
        return cast(int, self._setting("max_concurrency") or 4)

    @property
    def prefix(self) -> str:
        """Folder inside the bucket or dataset (empty for the local provider)."""
        return cast(str, self._setting("prefix") or "")

    @property
    def dataset_id(self) -> str | None:
        """The Hugging Face dataset, as owner/name."""
        return cast("str | None", self._setting("dataset_id"))

    @property
    def token(self) -> SecretStr | None:
        """The Hugging Face token (None when empty)."""
        token = self._setting("token")
        return token if token is not None and token.get_secret_value() else None

    @property
    def revision(self) -> str:
        """The Hugging Face branch."""
        return cast(str, self._setting("revision") or "main")

    @property
    def endpoint(self) -> str:
        """The Hugging Face Hub's address."""
        return cast(str, self._setting("endpoint") or "https://huggingface.co")

    # ------------------------------------------------------------------ provider

    def local_root(self) -> Path:
        """The folder of the local provider."""
        return Path(self.root).expanduser() if self.root else atlas_home() / "vault"

    def describe(self) -> str:
        """Where the vault stores, without secrets."""
        if self.provider == "local":
            return f"local folder {self.local_root()}"
        if self.provider == "gcs":
            return f"GCS gs://{self.bucket}/{self.prefix}".rstrip("/")
        return f"Hugging Face dataset {self.dataset_id}@{self.revision} on {self.endpoint}"

    async def _get_provider(self) -> StorageProvider:
        if self._provider is None:
            self._provider = await self._build_provider()
        return self._provider

    async def _build_provider(self) -> StorageProvider:
        return await build_provider(self)

    async def aclose(self) -> None:
        """Close the provider's client (a later call opens a new one)."""
        provider, self._provider = self._provider, None
        if provider is not None:
            await provider.aclose()

    def close(self) -> None:
        """Sync face of :meth:`aclose`."""
        return sync_or_await(self.aclose())

    async def ahealth(self, timeout: float | None = None) -> VaultHealth:
        """Check the container itself, never raising: ``ok`` False says why.

        Object calls cannot tell a missing object from a missing bucket or dataset
        (``Blob.exists`` and ``file_exists`` answer False for both), so this checks the
        local root (exists or can be created, and is writable), the GCS bucket's metadata,
        or the Hugging Face dataset at ``revision``. ``timeout`` defaults to the block's.
        """
        limit = self.timeout if timeout is None else timeout
        where = f"{self.provider} vault ({self.describe()})"
        started = time.perf_counter()

        def report(ok: bool, detail: str) -> VaultHealth:
            latency_ms = round((time.perf_counter() - started) * 1000, 3)
            return VaultHealth(ok=ok, latency_ms=latency_ms, detail=detail)

        try:
            async with asyncio.timeout(limit):
                found = await (await self._get_provider()).check()
        except TimeoutError:
            return report(False, f"{where}: no answer within {limit:g} s")
        except Exception as exc:
            secrets = [self.token.get_secret_value()] if self.token else []
            return report(False, redact_text(f"{where}: {exc}", secrets))
        return report(True, f"{where} reachable: {found}")

    def health(self, timeout: float | None = None) -> VaultHealth:
        """Sync face of :meth:`ahealth`."""
        return sync_or_await(self.ahealth(timeout))

    def __repr__(self) -> str:
        if "storage" not in self.__dict__:  # a half-built instance (in a validation error)
            return f"{type(self).__name__}(<invalid>)"
        return f"{type(self).__name__}(provider={self.provider!r}, target={self.describe()!r})"

    # ------------------------------------------------------------------ bytes

    def _count(self, operation: str, outcome: str) -> None:
        metrics.VAULT_OPERATIONS.labels(self.provider, operation, outcome).inc()

    async def _counted_read(self, read: Awaitable[bytes | None]) -> bytes | None:
        """Await a provider read, counting its outcome and the bytes it brought in."""
        try:
            data = await read
        except Exception:
            self._count("fetch", "error")
            raise
        self._count("fetch", "ok" if data is not None else "absent")
        if data is not None:
            metrics.VAULT_BYTES.labels(self.provider, "in").inc(len(data))
        return data

    async def _counted_write(self, write: Awaitable[None], size: int) -> None:
        """Await a provider write of ``size`` bytes, counting its outcome and the bytes."""
        try:
            await write
        except Exception:
            self._count("store", "error")
            raise
        self._count("store", "ok")
        metrics.VAULT_BYTES.labels(self.provider, "out").inc(size)

    async def astore_bytes(
        self,
        path: str,
        data: bytes,
        *,
        overwrite: bool = True,
        content_type: str = "application/octet-stream",
    ) -> str:
        """Store ``data`` at ``path`` and return the normalised path.

        With ``overwrite=False`` the write is create-only on every provider and raises
        :class:`~prefect_atlas.VaultObjectExistsError` when the path is taken.
        """
        key = paths.normalise(path)
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(
                f"data for {key!r} must be bytes, got "
                f"{type(data).__name__}; use store_json for objects"
            )
        provider = await self._get_provider()
        write = provider.put(key, bytes(data), overwrite=overwrite, content_type=content_type)
        await self._counted_write(write, len(data))
        return key

    def store_bytes(
        self,
        path: str,
        data: bytes,
        *,
        overwrite: bool = True,
        content_type: str = "application/octet-stream",
    ) -> str:
        """Sync face of :meth:`astore_bytes`."""
        return sync_or_await(
            self.astore_bytes(path, data, overwrite=overwrite, content_type=content_type)
        )

    async def afetch_bytes(self, path: str) -> bytes | None:
        """The bytes at ``path`` (checksum verified), or None when absent."""
        key = paths.normalise(path)
        provider = await self._get_provider()
        return await self._counted_read(provider.get(key))

    def fetch_bytes(self, path: str) -> bytes | None:
        """Sync face of :meth:`afetch_bytes`."""
        return sync_or_await(self.afetch_bytes(path))

    async def aexists(self, path: str) -> bool:
        """Whether an object is stored at ``path``."""
        return await (await self._get_provider()).exists(paths.normalise(path))

    def exists(self, path: str) -> bool:
        """Sync face of :meth:`aexists`."""
        return sync_or_await(self.aexists(path))

    async def alist_objects(self, prefix: str = "") -> builtins.list[str]:
        """Sorted paths under folder ``prefix`` ('' for all), relative to the vault.

        The paths are exactly what the fetch methods take: the block's own ``prefix`` is
        never part of them.
        """
        folder = paths.normalise(prefix, field="prefix", allow_empty=True)
        return await (await self._get_provider()).list(folder)

    def list_objects(self, prefix: str = "") -> builtins.list[str]:
        """Sync face of :meth:`alist_objects`."""
        return sync_or_await(self.alist_objects(prefix))

    async def adelete_object(self, path: str) -> bool:
        """Delete the object at ``path``; True if it existed."""
        removed = await (await self._get_provider()).delete(paths.normalise(path))
        self._count("delete", "ok" if removed else "absent")
        return removed

    def delete_object(self, path: str) -> bool:
        """Sync face of :meth:`adelete_object`."""
        return sync_or_await(self.adelete_object(path))

    async def alist(self, prefix: str = "") -> builtins.list[str]:
        """Deprecated alias of :meth:`alist_objects` (``list`` shadowed the builtin)."""
        warn_renamed("VaultBlock.alist()", "VaultBlock.alist_objects()")
        return await self.alist_objects(prefix)

    def list(self, prefix: str = "") -> builtins.list[str]:
        """Deprecated alias of :meth:`list_objects` (``list`` shadowed the builtin)."""
        warn_renamed("VaultBlock.list()", "VaultBlock.list_objects()")
        return self.list_objects(prefix)

    # ``Block.delete``/``adelete`` are classmethods deleting a *saved block document*, and stay
    # so on the class; on an instance they are deprecated aliases of ``*_object``.
    adelete: ClassVar[Any] = ClassOrInstance(adelete_object, "adelete_object")
    """On the class, Prefect's deletion of a saved block document; on an instance, a
    deprecated alias of :meth:`adelete_object`."""
    delete: ClassVar[Any] = ClassOrInstance(delete_object, "delete_object")
    """On the class, Prefect's deletion of a saved block document; on an instance, a
    deprecated alias of :meth:`delete_object`."""

    # ------------------------------------------------------------------ JSON

    async def astore_json(self, path: str, obj: Any, *, overwrite: bool = True) -> str:
        """Store ``obj`` as JSON at ``path`` and return the normalised path.

        NaN, ±Infinity, a lone surrogate or an integer beyond 64 bits raise ``ValueError``
        naming the key path (``$["scores"][2]``): JSON cannot hold them, and orjson alone
        would store NaN as ``null`` without a word. Nothing is written then.
        """
        data = _json.dumps(obj, what=f"object for {path!r}")
        return await self.astore_bytes(path, data, overwrite=overwrite, content_type=JSON_TYPE)

    def store_json(self, path: str, obj: Any, *, overwrite: bool = True) -> str:
        """Sync face of :meth:`astore_json`."""
        return sync_or_await(self.astore_json(path, obj, overwrite=overwrite))

    async def afetch_json(self, path: str) -> Any:
        """The JSON object at ``path``, or None when absent."""
        data = await self.afetch_bytes(path)
        return None if data is None else orjson.loads(data)

    def fetch_json(self, path: str) -> Any:
        """Sync face of :meth:`afetch_json`."""
        return sync_or_await(self.afetch_json(path))
