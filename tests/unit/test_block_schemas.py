"""The blocks' JSON schemas are what guides a person in the Prefect UI.

The server runs no Python validator when the UI saves a block: the UI checks the values
against the block's JSON schema (through the server's ``/ui/schemas/validate``, which is
``prefect.utilities.schema_tools.validation.validate``). So whatever must be refused is in the
schema, and these tests check the schema itself and what that validation accepts.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from importlib import resources
from typing import Any

import pytest
from PIL import Image
from prefect.blocks.core import Block
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import BlockDocumentCreate
from prefect.utilities.schema_tools.validation import build_error_obj, validate
from pydantic import SecretStr

from prefect_atlas import DatabaseBlock, DiscordBlock, VaultBlock
from prefect_atlas._blocks import resolve_block

BLOCKS: list[type[Block]] = [DatabaseBlock, DiscordBlock, VaultBlock]
SNOWFLAKE = "112233445566778899"
TOKEN = "tok_EN-secret.42"
HOOK = f"https://discord.com/api/webhooks/{SNOWFLAKE}/{TOKEN}"


def _schema(block: type[Block]) -> dict[str, Any]:
    """The schema as registered with the server (what the UI receives)."""
    fields: dict[str, Any] = block._to_block_schema().fields
    return fields


def _errors(block: type[Block], values: dict[str, Any]) -> list[str]:
    """What the UI's validation says of ``values`` (empty: the UI would save them)."""
    return [e.message for e in validate(values, _schema(block), raise_on_error=False)]


def _properties(schema: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    found = [(name, prop) for name, prop in schema["properties"].items()]
    for key, definition in schema.get("definitions", {}).items():
        if definition.get("block_type_slug"):
            continue  # a nested block's own schema (DatabaseBlock in DiscordBlock)
        found += [(f"{key}.{n}", p) for n, p in definition.get("properties", {}).items()]
    return found


# ---------------------------------------------------------------------- texts


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.__name__)
def test_every_field_everywhere_has_a_title_and_a_sentence(block: type[Block]) -> None:
    for name, prop in _properties(_schema(block)):
        assert prop.get("title"), f"{block.__name__}.{name} has no title"
        description = prop.get("description", "")
        assert description.endswith("."), f"{block.__name__}.{name}: {description!r}"


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.__name__)
def test_texts_speak_to_the_person_in_the_ui(block: type[Block]) -> None:
    schema = _schema(block)
    texts = [schema["description"]] + [p["description"] for _, p in _properties(schema)]
    assert schema["description"].endswith(".")
    developer_words = re.compile(
        r"make demo|\$ATLAS|ATLAS_[A-Z]|astore|store_batch|connection\(|HikariCP"
        r"|\b(429|5xx)\b|liveness|round trip|`"
    )
    for text in texts:
        assert not developer_words.search(text), f"{block.__name__}: {text!r}"


def test_fallback_channel_has_its_own_label() -> None:
    prop = _schema(DiscordBlock)["properties"]["fallback_channel"]
    assert "$ref" not in prop and "allOf" not in prop
    assert prop["title"] == "Fallback channel"
    assert "A Discord channel of Atlas" not in prop["description"]
    assert prop["enum"] == ["alerts", "hunt", "surveillance", "ops"]
    assert prop["default"] == "alerts"


# ---------------------------------------------------------------------- secrets are inputs


@pytest.mark.parametrize(
    ("block", "field"),
    [
        (DatabaseBlock, "url"),
        (DiscordBlock, "alerts"),
        (DiscordBlock, "hunt"),
        (DiscordBlock, "surveillance"),
        (DiscordBlock, "ops"),
    ],
)
def test_secrets_to_type_are_inputs_from_the_start(block: type[Block], field: str) -> None:
    prop = _schema(block)["properties"][field]
    assert "anyOf" not in prop and prop["type"] == "string"  # no "None" toggle
    assert prop["format"] == "password" and prop["default"] == ""
    assert field in _schema(block)["secret_fields"]


def test_hugging_face_token_is_an_input_too() -> None:
    token = _schema(VaultBlock)["definitions"]["HuggingFaceStorage"]["properties"]["token"]
    assert "anyOf" not in token and token["type"] == "string" and token["default"] == ""
    # and 0.3.0's flat secrets, still in documents saved again, stay hidden
    assert _schema(VaultBlock)["secret_fields"] == [
        "storage.token",
        "token",
        "service_account_info.*",
    ]


def test_unset_secrets_keep_their_python_meaning() -> None:
    db = DatabaseBlock()
    assert db.embedded and db.url.get_secret_value() == ""
    assert DatabaseBlock(url=None).embedded  # as 0.3.0 saved it
    assert DatabaseBlock(url=SecretStr("  ")).embedded
    discord = DiscordBlock(hunt=None)
    assert discord.webhook(discord.fallback_channel) is None and discord.configured_channels == []
    assert DiscordBlock(mention_role_id=None).mention_role_id == ""


# ---------------------------------------------------------------------- vault


def test_vault_storage_is_a_discriminated_union() -> None:
    schema = _schema(VaultBlock)
    storage = schema["properties"]["storage"]
    assert storage["discriminator"]["propertyName"] == "provider"
    assert set(storage["discriminator"]["mapping"]) == {"local", "gcs", "huggingface"}
    assert len(storage["anyOf"]) == 3 and "oneOf" not in storage  # v1 reads anyOf only
    assert set(schema["properties"]) == {"storage", "timeout", "retry_attempts"}
    defs = schema["definitions"]
    assert defs["GcsStorage"]["required"] == ["provider", "bucket"]
    assert defs["HuggingFaceStorage"]["required"] == ["provider", "dataset_id"]
    assert set(defs["LocalStorage"]["properties"]) == {"provider", "root"}
    assert "pattern" in defs["GcsStorage"]["properties"]["bucket"]
    assert "pattern" in defs["HuggingFaceStorage"]["properties"]["dataset_id"]
    form = repr((schema["properties"], defs))
    assert "service_account_info" not in form  # no editor in the UI: not in the form


def test_gcs_credentials_are_a_gcp_credentials_block_picker() -> None:
    schema = _schema(VaultBlock)
    creds = schema["definitions"]["GcsStorage"]["properties"]["gcp_credentials"]
    assert creds["block_type_slug"] == "gcp-credentials"
    # inline, not a $ref to a definition: the server drops nested-block definitions that are
    # not top-level block fields, which would leave the UI a dangling reference
    assert "$ref" not in repr({k: v for k, v in creds.items() if k != "anyOf"})
    assert not any(d.get("block_type_slug") for d in schema["definitions"].values())
    ref = {"$ref": {"block_document_id": str(uuid.uuid4())}}
    gcs = {"provider": "gcs", "bucket": "atlas-vault", "gcp_credentials": ref}
    assert _errors(VaultBlock, {"storage": gcs}) == []


@pytest.mark.parametrize(
    "storage",
    [
        {"provider": "gcs"},
        {"provider": "gcs", "bucket": "Bad Bucket!"},
        {"provider": "gcs", "bucket": "ab"},
        {"provider": "huggingface"},
        {"provider": "huggingface", "dataset_id": "no-owner"},
        {"provider": "huggingface", "dataset_id": "a/b", "endpoint": "huggingface.co"},
        {"provider": "s3", "bucket": "atlas-vault"},
        {"root": "/srv/vault"},  # no provider: the union is told apart by it
    ],
)
def test_the_ui_refuses_incomplete_or_bad_vaults(storage: dict[str, Any]) -> None:
    assert _errors(VaultBlock, {"storage": storage})


@pytest.mark.parametrize(
    ("storage", "field"),
    [
        ({"provider": "gcs"}, "bucket"),
        ({"provider": "gcs", "bucket": "Bad Bucket!"}, "bucket"),
        ({"provider": "huggingface", "prefix": "x"}, "dataset_id"),
        ({"provider": "huggingface", "dataset_id": "no-owner"}, "dataset_id"),
    ],
)
def test_the_ui_error_names_the_field(storage: dict[str, Any], field: str) -> None:
    errors = validate({"storage": storage}, _schema(VaultBlock), raise_on_error=False)
    tree = build_error_obj(errors)["errors"]
    storage_errors = [e for e in tree if isinstance(e, dict) and e.get("property") == "storage"]
    assert storage_errors, tree
    named = [e for e in storage_errors[0]["errors"] if isinstance(e, dict)]
    assert field in {e.get("property") for e in named}, tree


@pytest.mark.parametrize(
    "storage",
    [
        {"provider": "local"},
        {"provider": "local", "root": "/srv/vault"},
        {"provider": "gcs", "bucket": "atlas-vault", "prefix": "runs/prod"},
        {"provider": "gcs", "bucket": "atlas-vault", "gcp_credentials": None},
        {"provider": "huggingface", "dataset_id": "atlas-team/vault", "token": "hf_x"},
    ],
)
def test_the_ui_accepts_complete_vaults(storage: dict[str, Any]) -> None:
    assert _errors(VaultBlock, {"storage": storage}) == []
    assert VaultBlock(storage=storage).provider == storage["provider"]


def test_bad_vault_sizes_are_refused() -> None:
    assert _errors(VaultBlock, {"retry_attempts": 0})
    gcs = {"provider": "gcs", "bucket": "atlas-vault", "max_concurrency": 65}
    assert _errors(VaultBlock, {"storage": gcs})


def test_flat_keywords_and_attributes_still_work() -> None:
    vault = VaultBlock(provider="gcs", bucket="atlas-b", prefix="/a//b/", gcp_credentials="creds")
    assert (vault.provider, vault.bucket, vault.prefix, vault.gcp_credentials) == (
        "gcs",
        "atlas-b",
        "a/b",
        "creds",
    )
    assert vault.dataset_id is None and vault.root is None and vault.token is None
    hf = VaultBlock(provider="huggingface", dataset_id="a/b", token=SecretStr("hf_one"))
    other = hf.model_copy(update={"token": SecretStr("hf_two")})
    assert other.token is not None and other.token.get_secret_value() == "hf_two"
    assert hf.token is not None and hf.token.get_secret_value() == "hf_one"
    # beside `storage`, flat keys are leftovers of a 0.3.0 document saved again
    assert VaultBlock(storage={"provider": "local"}, root="/x", bucket=None).root is None


def test_service_account_info_is_accepted_deprecated_and_never_saved() -> None:
    info = {"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----x"}
    with pytest.warns(DeprecationWarning, match="service_account_info"):
        vault = VaultBlock(provider="gcs", bucket="atlas-b", service_account_info=info)
    assert vault.service_account_info is not None
    assert vault.service_account_info.get_secret_value()["private_key"].startswith("-----")
    dumped = repr(vault.model_dump(mode="json", context={"include_secrets": True}))
    assert "PRIVATE KEY" not in dumped and "service_account_info" not in dumped
    copy = vault.model_copy(update={"prefix": "other"})
    assert copy.service_account_info is not None and copy.prefix == "other"


# ---------------------------------------------------------------------- discord


@pytest.mark.parametrize(
    "values",
    [
        {"alerts": "https://example.com/not-a-webhook"},
        {"alerts": f"https://example.com/api/webhooks/{SNOWFLAKE}/{TOKEN}"},  # not Discord's
        {"alerts": f"https://discord.com/api/webhooks/123/{TOKEN}"},  # not a snowflake
        {"alerts": f"http://discord.com/api/webhooks/{SNOWFLAKE}/{TOKEN}"},
        {"ops": f"{HOOK}#fragment"},
        {"hunt": f"https://user:pw@discord.com/api/webhooks/{SNOWFLAKE}/{TOKEN}"},
        {"mention_role_id": "@ops"},
        {"mention_role_id": "12345"},
        {"fallback_channel": "general"},
        {"max_attempts": 0},
        {"timeout": 301},
        {"username": ""},
    ],
)
def test_the_ui_refuses_bad_discord_values(values: dict[str, Any]) -> None:
    assert _errors(DiscordBlock, values)


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"alerts": HOOK, "hunt": "", "mention_role_id": SNOWFLAKE},
        {"alerts": HOOK.replace("discord.com", "canary.discordapp.com")},
        {"alerts": HOOK.replace("/api/", "/api/v10/") + "?thread_id=42"},
        {"alerts": "********"},  # what the UI shows for a saved webhook, sent back unchanged
        # a host listed in allowed_hosts: the schema checks the path, the validator the host
        {
            "alerts": f"http://127.0.0.1:8080/api/webhooks/{SNOWFLAKE}/{TOKEN}",
            "allowed_hosts": ["127.0.0.1"],
        },
    ],
)
def test_the_ui_accepts_good_discord_values(values: dict[str, Any]) -> None:
    assert _errors(DiscordBlock, values) == []


def test_the_validator_still_checks_hosts_the_schema_lets_through() -> None:
    url = f"https://proxy.example/api/webhooks/{SNOWFLAKE}/{TOKEN}"
    assert _errors(DiscordBlock, {"alerts": url, "allowed_hosts": ["other.example"]}) == []
    with pytest.raises(ValueError, match="allowed_hosts"):
        DiscordBlock(alerts=SecretStr(url), allowed_hosts=["other.example"])


def test_bad_database_sizes_are_refused() -> None:
    assert _errors(DatabaseBlock, {"min_size": -1})
    assert _errors(DatabaseBlock, {"max_size": 0})
    assert _errors(DatabaseBlock, {"url": ""}) == []


# ---------------------------------------------------------------------- saved data


@pytest.mark.parametrize(
    "block",
    [
        DatabaseBlock(),
        DiscordBlock(alerts=SecretStr(HOOK), mention_role_id=SNOWFLAKE),
        VaultBlock(),
        VaultBlock(provider="gcs", bucket="atlas-b", gcp_credentials="creds"),
        VaultBlock(provider="huggingface", dataset_id="a/b", token=SecretStr("hf_x")),
    ],
    ids=repr,
)
def test_what_python_saves_passes_the_ui_checks(block: Block) -> None:
    data = block.model_dump(mode="json", context={"include_secrets": True})
    data.pop("block_type_slug", None)
    assert _errors(type(block), data) == []


# ---------------------------------------------------------------------- on a real server


async def test_the_server_keeps_what_the_ui_needs() -> None:
    """Registered and read back, the vault schema still has the union and the picker."""
    await VaultBlock.aregister_type_and_schema()
    async with get_client() as client:
        block_type = await client.read_block_type_by_slug("atlas-vault")
        stored = await client.get_most_recent_block_schema_for_block_type(block_type.id)
    assert stored is not None
    fields = stored.fields
    assert set(fields["definitions"]) == {"LocalStorage", "GcsStorage", "HuggingFaceStorage"}
    creds = fields["definitions"]["GcsStorage"]["properties"]["gcp_credentials"]
    assert creds["block_type_slug"] == "gcp-credentials"
    assert fields["secret_fields"] == ["storage.token", "token", "service_account_info.*"]

    await DiscordBlock.aregister_type_and_schema()
    async with get_client() as client:
        block_type = await client.read_block_type_by_slug("atlas-discord")
        discord = await client.get_most_recent_block_schema_for_block_type(block_type.id)
    assert discord is not None
    assert discord.fields["if"] == {"properties": {"allowed_hosts": {"maxItems": 0}}}
    assert set(discord.fields["then"]["properties"]) == {"alerts", "hunt", "surveillance", "ops"}
    bad = {"alerts": f"https://example.com/api/webhooks/{SNOWFLAKE}/{TOKEN}"}
    assert validate(bad, discord.fields, raise_on_error=False)


async def _save_flat(name: str, data: dict[str, Any]) -> None:
    """A block document in 0.3.0's flat shape, as that release saved it."""
    probe = VaultBlock()
    await probe.asave(f"{name}-probe", overwrite=True)
    assert probe._block_schema_id is not None and probe._block_type_id is not None
    async with get_client() as client:
        await client.create_block_document(
            BlockDocumentCreate(
                name=name,
                data=data,
                block_schema_id=probe._block_schema_id,
                block_type_id=probe._block_type_id,
            )
        )


FLAT_030 = {
    "root": None,
    "bucket": None,
    "prefix": "",
    "gcp_credentials": None,
    "service_account_info": None,
    "project": None,
    "dataset_id": None,
    "token": None,
    "revision": "main",
    "endpoint": "https://huggingface.co",
    "max_concurrency": 4,
    "timeout": 60.0,
    "retry_attempts": 5,
}


async def test_flat_030_documents_still_load(tmp_path: Any) -> None:
    suffix = uuid.uuid4().hex[:8]
    await _save_flat(
        f"flat-local-{suffix}", {**FLAT_030, "provider": "local", "root": str(tmp_path)}
    )
    await _save_flat(
        f"flat-gcs-{suffix}",
        {
            **FLAT_030,
            "provider": "gcs",
            "bucket": "atlas-b",
            "prefix": "runs",
            "gcp_credentials": "c",
        },
    )
    await _save_flat(
        f"flat-hf-{suffix}",
        {
            **FLAT_030,
            "provider": "huggingface",
            "dataset_id": "a/b",
            "token": "hf_saved",
            "timeout": 9,
        },
    )
    local = await resolve_block(VaultBlock, f"flat-local-{suffix}")
    assert local.provider == "local" and local.local_root() == tmp_path
    assert await local.astore_json("x.json", {"ok": 1}) == "x.json"
    assert await local.afetch_json("x.json") == {"ok": 1}
    gcs = await resolve_block(VaultBlock, f"flat-gcs-{suffix}")
    assert (gcs.provider, gcs.bucket, gcs.prefix, gcs.gcp_credentials) == (
        "gcs",
        "atlas-b",
        "runs",
        "c",
    )
    hf = await resolve_block(VaultBlock, f"flat-hf-{suffix}")
    assert hf.token is not None and hf.token.get_secret_value() == "hf_saved"
    assert (hf.dataset_id, hf.timeout) == ("a/b", 9)
    # saved again, it takes the new shape and loads the same
    await hf.asave(f"flat-hf-{suffix}", overwrite=True)
    again = await resolve_block(VaultBlock, f"flat-hf-{suffix}")
    assert again.storage == hf.storage


async def test_flat_030_document_with_a_key_loads_with_a_warning() -> None:
    name = f"flat-key-{uuid.uuid4().hex[:8]}"
    info = {"type": "service_account", "private_key": "k", "client_email": "a@b.c"}
    await _save_flat(
        name, {**FLAT_030, "provider": "gcs", "bucket": "atlas-b", "service_account_info": info}
    )
    with pytest.warns(DeprecationWarning, match="GcpCredentials"):
        vault = await resolve_block(VaultBlock, name)
    assert vault.service_account_info is not None
    assert vault.service_account_info.get_secret_value()["client_email"] == "a@b.c"


# ---------------------------------------------------------------------- logos


def test_logos_are_distinct_squares_of_catalog_size() -> None:
    digests = set()
    for block in BLOCKS:
        name = str(block._logo_url).rsplit("/", 1)[-1]
        shipped = resources.files("prefect_atlas.assets") / name
        data = shipped.read_bytes()
        digests.add(hashlib.sha256(data).hexdigest())
        with shipped.open("rb") as fh:
            img = Image.open(fh)
            img.load()
        assert img.format == "PNG" and img.width == img.height and 45 < img.width < 1000
    assert len(digests) == len(BLOCKS)


async def test_the_ui_sees_saved_secrets_hidden_and_nothing_else_breaks() -> None:
    """Read as the UI reads (no secrets): the nested token is hidden, a local vault has none."""
    suffix = uuid.uuid4().hex[:8]
    hf = VaultBlock(provider="huggingface", dataset_id="a/b", token=SecretStr("hf_hidden_42"))
    await hf.asave(f"ui-hf-{suffix}")
    await VaultBlock().asave(f"ui-local-{suffix}")
    await DiscordBlock(alerts=SecretStr(HOOK)).asave(f"ui-discord-{suffix}")
    async with get_client() as client:
        seen_hf = await client.read_block_document_by_name(
            f"ui-hf-{suffix}", "atlas-vault", include_secrets=False
        )
        seen_local = await client.read_block_document_by_name(
            f"ui-local-{suffix}", "atlas-vault", include_secrets=False
        )
        seen_discord = await client.read_block_document_by_name(
            f"ui-discord-{suffix}", "atlas-discord", include_secrets=False
        )
    assert "hf_hidden_42" not in repr(seen_hf.data)
    assert seen_hf.data["storage"]["dataset_id"] == "a/b"
    assert seen_local.data["storage"] == {"provider": "local", "root": ""}
    assert TOKEN not in repr(seen_discord.data)
    # what the UI holds and would send back unchanged passes the UI's own checks
    for block, seen in (
        (VaultBlock, seen_hf),
        (VaultBlock, seen_local),
        (DiscordBlock, seen_discord),
    ):
        assert _errors(block, dict(seen.data)) == []


def test_importing_the_package_stays_light() -> None:
    import subprocess
    import sys

    code = (
        "import sys, prefect_atlas\n"
        "heavy = ('prefect_atlas.events', 'prefect_gcp', 'google.cloud.storage', 'pyarrow',\n"
        "         'huggingface_hub', 'pgserver', 'aiohttp', 'stamina', 'psycopg',\n"
        "         'psycopg_pool')\n"
        "print([m for m in heavy if m in sys.modules])\n"
        "from prefect_atlas import DatabaseBlock, VaultBlock, DiscordBlock\n"
        "DatabaseBlock.model_json_schema(); VaultBlock.model_json_schema()\n"
        "print([m for m in heavy if m in sys.modules])\n"
        "print(prefect_atlas.EventStore.__name__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.split() == ["[]", "[]", "EventStore"], out.stderr[-2000:]
