"""`prefect block register -m prefect_atlas` against the real test server: the UI's view."""

from __future__ import annotations

import os
import subprocess
import sys

from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL

import prefect_atlas

EXPECTED = {
    "atlas-database": {"url", "read_replica_urls"},
    "atlas-vault": {"storage.token"},
    "atlas-discord": {"alerts", "hunt", "surveillance", "ops"},
}


async def test_block_types_register_with_help_on_every_field() -> None:
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    out = subprocess.run(
        [sys.executable, "-m", "prefect", "block", "register", "-m", "prefect_atlas"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    async with get_client() as client:
        for slug, secrets in EXPECTED.items():
            block_type = await client.read_block_type_by_slug(slug)
            assert block_type.name.startswith("Atlas ")
            assert block_type.logo_url is not None and block_type.documentation_url is not None
            assert block_type.description
            schema = await client.get_most_recent_block_schema_for_block_type(block_type.id)
            assert schema is not None
            fields = schema.fields
            for name, prop in fields["properties"].items():
                assert prop.get("title"), f"{slug}.{name} has no title"
                assert prop.get("description"), f"{slug}.{name} has no description"
            secret_fields = set(fields.get("secret_fields", []))
            assert secrets <= secret_fields, f"{slug}: {secrets - secret_fields} not marked secret"
    # the package re-exports every block it registers
    exported = {
        getattr(prefect_atlas, n).get_block_type_slug()
        for n in ("DatabaseBlock", "VaultBlock", "DiscordBlock")
    }
    assert exported == set(EXPECTED)
