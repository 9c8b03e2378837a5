"""The three Atlas blocks' forms in Prefect's UI, used the way an operator uses them.

Catalog, block type, create form; fill, save; then the saved block is loaded in Python from the
same server and every value checked. Bad values are tried too: what the form must refuse
(`test_refuses_*`) and, whatever the form lets through, a load that fails with an error naming
the field and never the secret.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import pytest
from prefect.blocks.core import Block
from prefect.client.orchestration import get_client
from pydantic import SecretStr, ValidationError

from prefect_atlas import DatabaseBlock, DiscordBlock, VaultBlock
from prefect_atlas.testing.gcp import service_account_info
from prefect_atlas.vault import GcsStorage
from tests.e2e._server import PrefectServer
from tests.ui._pages import Catalog, DatabaseForm, DiscordForm, V1VaultForm, VaultForm

if TYPE_CHECKING:
    from playwright.async_api import Page

GcpCredentials = pytest.importorskip("prefect_gcp").GcpCredentials

pytestmark = pytest.mark.ui

B = TypeVar("B", bound=Block)

ATLAS_BLOCKS = ["Atlas Database", "Atlas Discord", "Atlas Vault"]
WEBHOOK = "https://discord.com/api/webhooks/123456789012345678/ui-alerts-TOKEN_x1"
OPS_WEBHOOK = "https://discord.com/api/webhooks/223456789012345678/ui-ops-TOKEN_y2"
DB_URL = "postgresql://atlas:ui-s3cret@db.example.com:5432/atlas"
REPLICA_URL = "postgresql://atlas:ui-replica-s3cret@replica.example.com:5432/atlas"
OBFUSCATED = "********"


async def load(block_type: type[B], name: str) -> B:
    """``await block_type.aload(name)`` against the UI's server, typed."""
    loaded: object = await block_type.aload(name)
    assert isinstance(loaded, block_type), loaded
    return loaded


async def saved_data(slug: str, name: str, *, include_secrets: bool = False) -> dict[str, object]:
    """The data of the block document ``name`` of type ``slug`` as the API stores it."""
    async with get_client() as client:
        document = await client.read_block_document_by_name(
            name, block_type_slug=slug, include_secrets=include_secrets
        )
    return dict(document.data)


async def saved_names(slug: str) -> list[str]:
    """Names of every block document of type ``slug`` on the server."""
    async with get_client() as client:
        documents = await client.read_block_documents_by_type(block_type_slug=slug)
    return sorted(d.name for d in documents if d.name is not None)


# ---------------------------------------------------------------------- catalog


async def test_catalog_lists_the_atlas_blocks(
    page: Page, prefect_server: PrefectServer, shots: Path
) -> None:
    catalog = await Catalog.open(page, prefect_server.ui_url)
    await catalog.search("Atlas")
    assert await catalog.titles() == ATLAS_BLOCKS
    for name in ATLAS_BLOCKS:
        logo = catalog.card(name).locator("img")
        # the logo is the shipped file (the browser decoded it: non-zero natural width)
        assert await logo.evaluate("(img) => img.naturalWidth") > 0, name
    await catalog.screenshot(shots / "ui-catalog.png")


# ---------------------------------------------------------------------- saved as typed


async def test_database_form_saves_what_the_user_typed(
    page: Page, prefect_server: PrefectServer, shots: Path
) -> None:
    form = await DatabaseForm.open(page, prefect_server.ui_url)
    await form.name("ui-database")
    await form.fill(
        url=DB_URL,
        max_size=5,
        statement_timeout=30,
        application_name="atlas-ui",
        read_replica_urls=[REPLICA_URL],
    )
    await form.screenshot(shots / "ui-atlas-database-form.png")
    await form.save()

    block = await load(DatabaseBlock, "ui-database")
    assert block.url is not None and block.url.get_secret_value() == DB_URL
    assert (block.max_size, block.statement_timeout) == (5, 30.0)
    assert block.application_name == "atlas-ui"
    assert [r.get_secret_value() for r in block.read_replica_urls] == [REPLICA_URL]
    # untouched fields keep their defaults
    assert (block.min_size, block.timeout) == (0, 30.0)
    # stored as secrets: the API shows them obfuscated unless asked for secrets
    data = await saved_data("atlas-database", "ui-database")
    assert data["url"] == OBFUSCATED
    assert "s3cret" not in repr(data)


async def test_vault_form_saves_a_gcs_vault(
    page: Page, prefect_server: PrefectServer, shots: Path
) -> None:
    # the credentials: a saved GcpCredentials block the user picks
    key = service_account_info("http://127.0.0.1:9/token", project="atlas-prod")
    credentials = GcpCredentials(service_account_info=key)
    await credentials.asave("atlas-gcp")
    form = await VaultForm.open(page, prefect_server.ui_url)
    await form.name("ui-vault")
    await form.gcs(
        bucket="atlas-ui-vault",
        prefix="clips/2026/",
        project="atlas-prod",
        credentials_block="atlas-gcp",
    )
    await form.screenshot(shots / "ui-atlas-vault-form.png")
    await form.save()

    block = await load(VaultBlock, "ui-vault")
    assert isinstance(block.storage, GcsStorage), block.storage
    storage = block.storage
    assert (storage.provider, storage.bucket, storage.project) == (
        "gcs",
        "atlas-ui-vault",
        "atlas-prod",
    )
    assert storage.prefix == "clips/2026"  # normalised once, on load
    assert storage.max_concurrency == 4  # untouched: its default
    reference = {"$ref": {"block_document_id": str(credentials._block_document_id)}}
    assert storage.gcp_credentials == reference
    loaded = await storage.aload_credentials()
    assert isinstance(loaded, GcpCredentials)
    assert loaded.service_account_info is not None
    assert loaded.service_account_info.get_secret_value() == key
    # the flat attributes of 0.3.0 read the same settings
    assert (block.provider, block.bucket, block.project) == ("gcs", "atlas-ui-vault", "atlas-prod")
    assert (block.prefix, block.gcp_credentials) == ("clips/2026", reference)
    assert (block.root, block.dataset_id, block.token) == (None, None, None)
    assert block.describe() == "GCS gs://atlas-ui-vault/clips/2026"
    # the document holds the reference only, never the key
    data = await saved_data("atlas-vault", "ui-vault")
    assert data["storage"] == {
        "provider": "gcs",
        "bucket": "atlas-ui-vault",
        "prefix": "clips/2026/",
        "project": "atlas-prod",
        "gcp_credentials": reference,
        "max_concurrency": 4,
    }, data
    assert "PRIVATE KEY" not in repr(data)


async def test_discord_form_saves_webhooks_and_routing(
    page: Page, prefect_server: PrefectServer, shots: Path
) -> None:
    # the database that shares the rate-limit budget: a saved block the user picks
    await DatabaseBlock(url=SecretStr(DB_URL), max_size=2).asave("ui-discord-budget")
    form = await DiscordForm.open(page, prefect_server.ui_url)
    await form.name("ui-discord")
    await form.fill(
        webhooks={"alerts": WEBHOOK, "ops": OPS_WEBHOOK},
        env_tag="[ui]",
        username="Atlas UI",
        fallback_channel="ops",
        mention_role_id="123456789012345678",
        max_attempts=3,
        state_database="ui-discord-budget",
    )
    await form.screenshot(shots / "ui-atlas-discord-form.png")
    await form.save()

    block = await load(DiscordBlock, "ui-discord")
    assert block.alerts is not None and block.alerts.get_secret_value() == WEBHOOK
    assert block.ops is not None and block.ops.get_secret_value() == OPS_WEBHOOK
    # the channels left empty have no webhook
    assert [c.value for c in block.configured_channels] == ["alerts", "ops"]
    assert (block.env_tag, block.username) == ("[ui]", "Atlas UI")
    assert block.fallback_channel.value == "ops"
    assert block.mention_role_id == "123456789012345678"
    assert block.max_attempts == 3
    assert isinstance(block.state_database, DatabaseBlock)
    assert block.state_database.max_size == 2
    assert block.state_database.url is not None
    assert block.state_database.url.get_secret_value() == DB_URL
    data = await saved_data("atlas-discord", "ui-discord")
    assert (data["alerts"], data["ops"]) == (OBFUSCATED, OBFUSCATED)
    assert "TOKEN" not in repr(data)


# ---------------------------------------------------------------------- refused by the form
#
# What Prefect 3.9.1's form refuses by itself: a number outside its `ge`/`le` bounds (they
# become the input's min/max, and the browser will not submit). Its create page checks the
# values against the values themselves rather than the block's schema (`/ui/schemas/validate`
# with `schema` = the values), and the API saves block documents unchecked, so a `pattern`, a
# required field or a provider's required setting does not stop a save there. The
# `test_refuses_*` tests state what the form must refuse once it applies the schema: they run and
# are expected to fail on Prefect 3.9.1 (strict: the day the form refuses, they pass and the mark
# must go). The `*_never_loads` tests below hold today: such a block never loads.
UNCHECKED_BY_PREFECT_FORM = pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="Prefect 3.9.1's create form does not apply the block schema's patterns or required "
    "settings (it validates the values against themselves) and the API saves them unchecked",
)


async def test_form_refuses_a_number_out_of_bounds(
    page: Page, prefect_server: PrefectServer
) -> None:
    """Number bounds (`ge`, `le`) reach the inputs: the browser refuses to submit."""
    form = await DiscordForm.open(page, prefect_server.ui_url)
    await form.name("ui-discord-zero-attempts")
    await form.fill(webhooks={"alerts": WEBHOOK}, max_attempts=0)
    errors = await form.save_refused()
    assert any("greater than or equal to 1" in e for e in errors), errors
    assert "ui-discord-zero-attempts" not in await saved_names("atlas-discord")


async def _bad_vault(form: VaultForm) -> None:
    await form.gcs(bucket=None, prefix="clips")


async def _bad_webhook(form: DiscordForm) -> None:
    await form.fill(webhooks={"alerts": "https://example.com/not-a-webhook"})


async def _bad_role(form: DiscordForm) -> None:
    await form.fill(webhooks={"alerts": WEBHOOK}, mention_role_id="@ops")


@UNCHECKED_BY_PREFECT_FORM
async def test_refuses_a_gcs_vault_without_bucket(
    page: Page, prefect_server: PrefectServer
) -> None:
    form = await VaultForm.open(page, prefect_server.ui_url)
    await form.name("ui-vault-no-bucket")
    await _bad_vault(form)
    errors = await form.save_refused()
    assert errors, "the form shows no error"
    assert "ui-vault-no-bucket" not in await saved_names("atlas-vault")


@UNCHECKED_BY_PREFECT_FORM
async def test_refuses_a_webhook_that_is_not_discord(
    page: Page, prefect_server: PrefectServer
) -> None:
    form = await DiscordForm.open(page, prefect_server.ui_url)
    await form.name("ui-discord-bad-webhook")
    await _bad_webhook(form)
    errors = await form.save_refused()
    assert errors, "the form shows no error"
    assert "ui-discord-bad-webhook" not in await saved_names("atlas-discord")


@UNCHECKED_BY_PREFECT_FORM
async def test_refuses_a_role_id_that_is_not_a_snowflake(
    page: Page, prefect_server: PrefectServer
) -> None:
    form = await DiscordForm.open(page, prefect_server.ui_url)
    await form.name("ui-discord-bad-role")
    await _bad_role(form)
    errors = await form.save_refused()
    assert errors, "the form shows no error"
    assert "ui-discord-bad-role" not in await saved_names("atlas-discord")


# ---------------------------------------------------------------------- never loads


async def _load_error(block_type: type[Block], name: str) -> str:
    """The error loading the saved block ``name`` raises (it must raise)."""
    # Prefect: "Unable to load ... due to failed validation", from the block's ValidationError
    with pytest.raises(RuntimeError, match="failed validation") as raised:
        await block_type.aload(name)
    cause = raised.value.__cause__
    assert isinstance(cause, ValidationError), raised.value
    return f"{raised.value}\n{cause}"


async def test_a_gcs_vault_without_bucket_never_loads(
    page: Page, prefect_server: PrefectServer
) -> None:
    form = await VaultForm.open(page, prefect_server.ui_url)
    await form.name("ui-vault-no-bucket-load")
    await _bad_vault(form)
    if not await form.press_save():
        assert "ui-vault-no-bucket-load" not in await saved_names("atlas-vault")
        return
    error = await _load_error(VaultBlock, "ui-vault-no-bucket-load")
    # the error names the setting inside the chosen storage
    assert "storage.gcs.bucket\n  Field required" in error, error


async def test_a_webhook_that_is_not_discord_never_loads(
    page: Page, prefect_server: PrefectServer
) -> None:
    form = await DiscordForm.open(page, prefect_server.ui_url)
    await form.name("ui-discord-bad-webhook-load")
    await _bad_webhook(form)
    if not await form.press_save():
        assert "ui-discord-bad-webhook-load" not in await saved_names("atlas-discord")
        return
    error = await _load_error(DiscordBlock, "ui-discord-bad-webhook-load")
    assert "`alerts` is not a trusted Discord webhook URL" in error, error
    assert "not-a-webhook" not in error  # a webhook URL is a credential


async def test_a_role_id_that_is_not_a_snowflake_never_loads(
    page: Page, prefect_server: PrefectServer
) -> None:
    form = await DiscordForm.open(page, prefect_server.ui_url)
    await form.name("ui-discord-bad-role-load")
    await _bad_role(form)
    if not await form.press_save():
        assert "ui-discord-bad-role-load" not in await saved_names("atlas-discord")
        return
    error = await _load_error(DiscordBlock, "ui-discord-bad-role-load")
    assert "mention_role_id" in error, error


# ---------------------------------------------------------------------- the v1 form


async def test_v1_form_refuses_a_gcs_vault_without_bucket(
    page: Page, prefect_server: PrefectServer
) -> None:
    """Prefect's v1 form applies the schema's provider union and its required settings."""
    form = await V1VaultForm.open(page, prefect_server.ui_url)
    await form.name("ui-v1-vault-no-bucket")
    await form.storage(GcsStorage)
    errors = await form.create_refused()
    bucket = VaultForm.setting(GcsStorage, "bucket")
    assert f"{bucket} is required" in errors, errors
    assert "ui-v1-vault-no-bucket" not in await saved_names("atlas-vault")
