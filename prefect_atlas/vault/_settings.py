"""Where a :class:`~prefect_atlas.vault.VaultBlock` stores: one settings model per provider.

The block's ``storage`` field is a discriminated union of these models (on ``provider``), so
the Prefect UI offers a choice of three and shows only the chosen provider's fields, with
the required ones required in the block's JSON schema (the server checks only the schema
when a block is saved from the UI, never our Python validators).

Saved documents of 0.3.0 and keyword calls have the *flat* shape (``provider``, ``bucket``,
``dataset_id``... side by side on the block): :func:`from_flat` maps them onto the union.

``gcp_credentials`` refers to a saved prefect-gcp ``GcpCredentials`` block without importing
prefect-gcp (about 1.7 s with google-cloud-storage): its JSON schema is that of a
``gcp-credentials`` block reference (the UI shows its block picker with "create new"), its
value plain data, and :meth:`GcsStorage.aload_credentials` loads the real block only when the
GCS provider is built.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal
from uuid import UUID

from prefect.types import SecretDict
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from prefect_atlas._deprecation import warn_renamed
from prefect_atlas.vault import paths

Provider = Literal["local", "gcs", "huggingface"]

# ASCII classes on purpose: the UI checks the same pattern in JavaScript, where \w is ASCII.
BUCKET_PATTERN = r"^[a-z0-9][a-z0-9._-]{1,221}[a-z0-9]$"
DATASET_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$"
ENDPOINT_PATTERN = r"^https?://[^\s/?#]+(/[^\s?#]*)?$"

GCP_CREDENTIALS_SLUG = "gcp-credentials"

# The JSON schema of a reference to a saved GcpCredentials block, as Prefect's UI and its
# validation endpoint understand one: `block_type_slug` makes the v2 UI show a picker of saved
# `gcp-credentials` blocks; the value the UI sends is {"$ref": {"block_document_id": ...}}.
# Deliberately not a `$ref` to a definition carrying `block_type_slug`: the server drops such
# definitions from a stored schema unless the field is a top-level nested Block.
_REFERENCE_VALUE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "$ref": {
            "type": "object",
            "properties": {"block_document_id": {"type": "string", "format": "uuid"}},
            "required": ["block_document_id"],
        }
    },
    "required": ["$ref"],
}
GCP_CREDENTIALS_REF_SCHEMA: dict[str, Any] = {
    "block_type_slug": GCP_CREDENTIALS_SLUG,
    # a block name is what 0.3.0 saved; null (or no value) means default credentials
    # (the v2 UI shows the picker for `block_type_slug`; the v1 UI shows these choices, so a
    # block name can be typed there, as in 0.3.0)
    "anyOf": [
        {"title": "Saved block", **_REFERENCE_VALUE},
        {"title": "Block name", "type": "string", "minLength": 1},
        {"title": "Default credentials", "type": "null"},
    ],
}


def _provider_required(schema: dict[str, Any]) -> None:
    # Python fills `provider` from its default; the schema requires it so that the union is
    # told apart by it (jsonschema ignores OpenAPI's `discriminator`).
    required = schema.setdefault("required", [])
    if "provider" not in required:
        required.insert(0, "provider")


_MODEL_CONFIG = ConfigDict(
    hide_input_in_errors=True, extra="forbid", json_schema_extra=_provider_required
)


def credentials_reference(value: Any) -> Any:
    """``gcp_credentials`` as saved: ``{"$ref": {"block_document_id": "<uuid>"}}`` (what the UI
    saves), a block name (what 0.3.0 saved) or None; a saved ``GcpCredentials`` becomes its
    reference. Plain JSON on purpose: Prefect's secret rendering walks nested models."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip() or None
    if _is_block(value):
        if value.get_block_type_slug() != GCP_CREDENTIALS_SLUG:
            raise ValueError(
                f"`gcp_credentials` must be a GcpCredentials block, not a {type(value).__name__}"
            )
        if value._block_document_id is None:
            raise ValueError(
                "`gcp_credentials` is a GcpCredentials block that was never saved: save it first "
                "(creds.save('my-gcp')) so that the vault can refer to it"
            )
        value = {"$ref": {"block_document_id": value._block_document_id}}
    if isinstance(value, Mapping) and "$ref" in value:
        ref = value["$ref"]
        ref_id = ref.get("block_document_id") if isinstance(ref, Mapping) else ref
        try:
            block_id = UUID(str(ref_id))
        except ValueError:
            raise ValueError(
                "`gcp_credentials` must refer to a saved GcpCredentials block by its id"
            ) from None
        return {"$ref": {"block_document_id": str(block_id)}}
    raise ValueError("`gcp_credentials` must be a saved GcpCredentials block (or its name)")


async def load_gcp_credentials(reference: str | Mapping[str, Any]) -> Any:
    """The ``prefect_gcp.GcpCredentials`` block ``reference`` names (imports prefect-gcp)."""
    from prefect_atlas._extras import require

    gcp = require("prefect_gcp", extra="gcs", purpose="The GCS vault provider")
    if isinstance(reference, str):
        return await gcp.GcpCredentials.aload(reference)
    return await gcp.GcpCredentials.aload_from_ref(dict(reference["$ref"]))


def _is_block(value: object) -> bool:
    from prefect.blocks.core import Block

    return isinstance(value, Block)


class LocalStorage(BaseModel):
    """A folder on the machine that runs the flows."""

    model_config = ConfigDict(**_MODEL_CONFIG, title="Local folder")

    provider: Literal["local"] = Field(
        default="local",
        title="Provider",
        description="Objects are files in a folder of the machine that runs the flows.",
    )
    root: str = Field(
        default="",
        title="Folder",
        description=(
            "Absolute path of the folder, such as /srv/atlas/vault. Leave empty to use the "
            "vault folder inside Atlas's data folder."
        ),
    )

    @field_validator("root", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return "" if value is None else value


def _normalise_prefix(value: Any) -> Any:
    if value is None:
        return ""
    return paths.normalise_prefix(value) if isinstance(value, str) else value


def _check_endpoint(value: Any) -> Any:
    if isinstance(value, str):
        if not value.startswith(("http://", "https://")):
            raise ValueError("endpoint must be an http(s) URL such as https://huggingface.co")
        return value.rstrip("/")
    return value


class GcsStorage(BaseModel):
    """A Google Cloud Storage bucket."""

    model_config = ConfigDict(**_MODEL_CONFIG, title="Google Cloud Storage")

    provider: Literal["gcs"] = Field(
        default="gcs",
        title="Provider",
        description="Objects are stored in a Google Cloud Storage bucket.",
    )
    bucket: Annotated[str, WithJsonSchema({"type": "string", "pattern": BUCKET_PATTERN})] = Field(
        title="Bucket",
        description=(
            "Name of the bucket, such as atlas-vault: 3 to 63 lowercase letters, digits, "
            "dashes, underscores or dots."
        ),
    )
    prefix: str = Field(
        default="",
        max_length=512,
        title="Folder prefix",
        description=(
            "Folder inside the bucket or dataset that holds every object, such as runs/prod. "
            "Leave empty to store at the top."
        ),
    )
    gcp_credentials: Annotated[
        dict[str, Any] | str | None, WithJsonSchema(GCP_CREDENTIALS_REF_SCHEMA)
    ] = Field(
        default=None,
        title="GCP credentials",
        description=(
            "Saved GCP credentials block with access to the bucket. Leave empty to use the "
            "machine's default Google credentials."
        ),
    )
    project: str = Field(
        default="",
        max_length=30,
        title="GCP project",
        description="Project the bucket belongs to. Leave empty to use the credentials' project.",
    )
    max_concurrency: int = Field(
        default=4,
        ge=1,
        le=64,
        title="Parallel uploads",
        description="How many uploads run at once when many objects are stored together.",
    )
    _service_account_info: SecretDict | None = PrivateAttr(default=None)
    _credentials_block: Any = PrivateAttr(default=None)  # a saved GcpCredentials passed in

    @model_validator(mode="wrap")
    @classmethod
    def _take_service_account_info(cls, value: Any, handler: Any) -> Any:
        info = block = None
        if isinstance(value, Mapping) and "service_account_info" in value:
            value = dict(value)
            info = value.pop("service_account_info")
        if isinstance(value, Mapping) and _is_block(value.get("gcp_credentials")):
            block = value["gcp_credentials"]
        made = handler(value)
        made._credentials_block = block
        if info is not None:
            if not isinstance(info, SecretDict):
                # Not saved with the block (no secret dict editor in the UI): this instance
                # uses the key, a saved block keeps only `gcp_credentials`.
                warn_renamed(
                    "VaultBlock `service_account_info`",
                    "a saved prefect-gcp GcpCredentials block in `gcp_credentials`",
                )
                info = SecretDict(dict(info))
            made._service_account_info = info
        return made

    @field_validator("bucket", mode="after")
    @classmethod
    def _check_bucket(cls, value: str) -> str:
        if not re.fullmatch(BUCKET_PATTERN, value):
            raise ValueError(
                "`bucket` is not a GCS bucket name (3-63 lowercase letters, digits, '-', '_', '.')"
            )
        return value

    @field_validator("project", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return "" if value is None else value

    @field_validator("gcp_credentials", mode="before")
    @classmethod
    def _check_credentials(cls, value: Any) -> Any:
        return credentials_reference(value)

    async def aload_credentials(self) -> Any:
        """The GcpCredentials block to use, or None for Google's default credentials."""
        if self._credentials_block is not None:
            return self._credentials_block
        if self.gcp_credentials is None:
            return None
        return await load_gcp_credentials(self.gcp_credentials)

    _prefix = field_validator("prefix", mode="before")(_normalise_prefix)


class HuggingFaceStorage(BaseModel):
    """A Hugging Face dataset repository."""

    model_config = ConfigDict(**_MODEL_CONFIG, title="Hugging Face dataset")

    provider: Literal["huggingface"] = Field(
        default="huggingface",
        title="Provider",
        description="Objects are files in a Hugging Face dataset repository.",
    )
    dataset_id: Annotated[str, WithJsonSchema({"type": "string", "pattern": DATASET_PATTERN})] = (
        Field(
            title="Dataset",
            description="The dataset repository as owner/name, such as atlas-team/vault.",
        )
    )
    token: SecretStr = Field(
        default=SecretStr(""),
        title="Access token",
        description=(
            "Hugging Face access token with write access to the dataset. Leave empty for a "
            "public dataset that is only read."
        ),
    )
    prefix: str = Field(
        default="",
        max_length=512,
        title="Folder prefix",
        description=(
            "Folder inside the bucket or dataset that holds every object, such as runs/prod. "
            "Leave empty to store at the top."
        ),
    )
    revision: str = Field(
        default="main",
        min_length=1,
        max_length=255,
        title="Branch",
        description="Branch of the dataset that is read and committed to.",
    )
    endpoint: str = Field(
        default="https://huggingface.co",
        pattern=ENDPOINT_PATTERN,
        title="Hub address",
        description=("Address of the Hugging Face Hub, or of a compatible server your team runs."),
    )

    @field_validator("dataset_id", mode="after")
    @classmethod
    def _check_dataset(cls, value: str) -> str:
        if not re.fullmatch(DATASET_PATTERN, value):
            raise ValueError("`dataset_id` must look like owner/name, such as atlas-team/vault")
        return value

    @field_validator("token", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return SecretStr("") if value is None else value

    _prefix = field_validator("prefix", mode="before")(_normalise_prefix)

    _endpoint = field_validator("endpoint", mode="before")(_check_endpoint)


Storage = Annotated[LocalStorage | GcsStorage | HuggingFaceStorage, Field(discriminator="provider")]

# The flat (0.3.0) field names of each provider, as keyword arguments and saved documents.
FLAT_FIELDS: dict[str, tuple[str, ...]] = {
    "local": ("root",),
    "gcs": (
        "bucket",
        "prefix",
        "gcp_credentials",
        "service_account_info",
        "project",
        "max_concurrency",
    ),
    "huggingface": ("dataset_id", "token", "revision", "endpoint", "prefix"),
}
LEGACY_SECRET_FIELDS = ("token", "service_account_info.*")
FLAT_KEYS = frozenset({"provider", *(k for keys in FLAT_FIELDS.values() for k in keys)})

_DROPPED_CHECKS = {"prefix": _normalise_prefix, "endpoint": _check_endpoint}

_REQUIRED = {
    "gcs": ("bucket", "the name of the GCS bucket"),
    "huggingface": ("dataset_id", "the dataset as owner/name"),
}


def storage_fields(storage: BaseModel) -> dict[str, Any]:
    """The settings of ``storage`` as given (secrets and references unchanged)."""
    values = {name: getattr(storage, name) for name in type(storage).model_fields}
    info = getattr(storage, "_service_account_info", None)
    if info is not None:
        values["service_account_info"] = info
    return values


def _infer_provider(storage: Mapping[str, Any]) -> str:
    """The provider of settings that lack one (a form that sent no ``provider``)."""
    if "bucket" in storage:
        return "gcs"
    if "dataset_id" in storage:
        return "huggingface"
    return "local"


def from_flat(data: Mapping[str, Any], current: BaseModel | None = None) -> dict[str, Any]:
    """The block's data with flat provider fields moved into ``storage``.

    ``current`` (a storage model) is the base for the keys ``data`` does not give, as in
    ``model_copy(update=...)``. Fields of another provider than the chosen one are dropped:
    0.3.0 kept them when the provider was switched in the UI, and never used them.
    """
    out = {k: v for k, v in data.items() if k not in FLAT_KEYS}
    flat = {k: v for k, v in data.items() if k in FLAT_KEYS}
    given = out.get("storage")
    if isinstance(given, Mapping) and "provider" not in given:
        out["storage"] = {**given, "provider": _infer_provider(given)}
    if not flat:
        return out
    if out.get("storage") is not None:
        # A 0.3.0 document saved again keeps its flat keys beside `storage` (the server merges
        # data on update): `storage` is the truth.
        return out
    base = storage_fields(current) if current is not None else {}
    provider = flat.get("provider") or base.get("provider") or "local"
    if provider != base.get("provider"):
        base = {}
    storage: dict[str, Any] = {**base, "provider": provider}
    for key, value in flat.items():
        if key in FLAT_FIELDS.get(provider, ()):
            storage[key] = value
        elif key in _DROPPED_CHECKS and value is not None:
            _DROPPED_CHECKS[key](value)  # unused here, but a bad value is still an error
    if storage.get("service_account_info") is None:
        storage.pop("service_account_info", None)
    required = _REQUIRED.get(provider)
    if required is not None and not storage.get(required[0]):
        raise ValueError(f"provider {provider!r} needs `{required[0]}`: set it to {required[1]}")
    return {**out, "storage": storage}
