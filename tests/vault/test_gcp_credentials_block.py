"""The GCS vault refers to a saved prefect-gcp ``GcpCredentials`` block, as the UI's picker does.

The UI saves ``{"$ref": {"block_document_id": ...}}`` inside ``storage``; the vault loads the
block only when the GCS provider is first built. Against gcp-storage-emulator, with the
service account's token from the local token endpoint.
"""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest

from prefect_atlas import VaultBlock
from prefect_atlas._blocks import resolve_block
from prefect_atlas.vault._settings import GcsStorage
from tests.vault.conftest import BUCKET, GcsEnv


async def _credentials_id(env: GcsEnv) -> str:
    from prefect_gcp import GcpCredentials

    creds = await GcpCredentials.aload(env.credentials_block)
    assert creds._block_document_id is not None
    return str(creds._block_document_id)


async def test_a_vault_saved_with_a_credentials_reference_loads_and_stores(
    request: pytest.FixtureRequest,
) -> None:
    env: GcsEnv = request.getfixturevalue("gcs_env")
    ref = {"$ref": {"block_document_id": await _credentials_id(env)}}
    name = f"vault-ref-{uuid.uuid4().hex[:8]}"
    prefix = f"ref/{uuid.uuid4().hex[:8]}"
    storage = {"provider": "gcs", "bucket": BUCKET, "prefix": prefix, "gcp_credentials": ref}
    await VaultBlock(storage=storage).asave(name)

    vault = await resolve_block(VaultBlock, name)
    assert vault.gcp_credentials is not None and vault.gcp_credentials != env.credentials_block
    before = env.token_server.requests
    try:
        await vault.astore_json("ref.json", {"via": "reference"})
        assert await vault.afetch_json("ref.json") == {"via": "reference"}
    finally:
        await vault.aclose()
    assert env.token_server.requests > before  # the referenced block's service account was used
    blob = env.raw_bucket().blob(f"{prefix}/ref.json")
    assert blob.exists()


async def test_a_credentials_block_instance_is_saved_as_a_reference(
    request: pytest.FixtureRequest,
) -> None:
    from prefect_gcp import GcpCredentials

    env: GcsEnv = request.getfixturevalue("gcs_env")
    creds = await GcpCredentials.aload(env.credentials_block)
    vault = VaultBlock(provider="gcs", bucket=BUCKET, gcp_credentials=creds)
    ref = {"$ref": {"block_document_id": str(creds._block_document_id)}}
    assert vault.model_dump(mode="json")["storage"]["gcp_credentials"] == ref
    secrets = vault.model_dump(mode="json", context={"include_secrets": True})
    assert secrets["storage"]["gcp_credentials"] == ref
    assert isinstance(vault.storage, GcsStorage)
    assert await vault.storage.aload_credentials() is creds  # no reload for this instance
    never_saved = GcpCredentials.model_construct()
    with pytest.raises(ValueError, match="never saved"):
        VaultBlock(provider="gcs", bucket=BUCKET, gcp_credentials=never_saved)


def test_importing_the_package_does_not_import_prefect_gcp() -> None:
    code = (
        "import sys, prefect_atlas\n"
        "from prefect_atlas import VaultBlock\n"
        "v = VaultBlock(provider='gcs', bucket='atlas-b', gcp_credentials='creds')\n"
        "v.model_json_schema()\n"
        "bad = [m for m in ('prefect_gcp', 'google.cloud.storage') if m in sys.modules]\n"
        "print(bad)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]", out.stderr[-2000:]
