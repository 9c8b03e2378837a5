"""Atlas 0.2.1's "Basic Usage" snippet, word for word but for its import line, on prefect-atlas.

The snippet is the one in Atlas 0.2.1's release summary. It runs as a module body with
top-level ``await`` (as it reads), against this test's PostgreSQL, a local vault folder and
the local Discord-like server; then the effects are checked where they landed.
"""

from __future__ import annotations

import ast
import difflib
import logging
from typing import Any

import orjson
import pytest
from psycopg import AsyncConnection
from psycopg.conninfo import conninfo_to_dict
from pydantic import SecretStr

from prefect_atlas import DatabaseBlock, Delivery, VaultBlock
from prefect_atlas.testing.discord import DiscordServer
from tests.compat.conftest import CompatEnv

SEED_SNIPPET = """\
from atlas import db, vault, events, notifier, AlertLevel

# Database
async with db.get_connection() as conn:
    await conn.execute("SELECT 1")

# Storage
vault.store_json("path.json", {"key": "value"})
data = vault.fetch_json("path.json")

# Events
await events.emit("event.type", "entity_id", payload)

# Notifications
await notifier.send("Title", "Description", level=AlertLevel.INFO)
"""

OLD_IMPORT = "from atlas import db, vault, events, notifier, AlertLevel"
NEW_IMPORT = "from prefect_atlas.compat import db, vault, events, notifier, AlertLevel"
PAYLOAD = {"video_id": "dQw4w9WgXcQ", "views": 1000}


def ported_snippet() -> str:
    ported = SEED_SNIPPET.replace(OLD_IMPORT, NEW_IMPORT)
    changed = [
        line
        for line in difflib.unified_diff(SEED_SNIPPET.splitlines(), ported.splitlines(), n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    assert changed == [f"-{OLD_IMPORT}", f"+{NEW_IMPORT}"], changed
    return ported


async def run_snippet() -> dict[str, Any]:
    """Run the ported snippet; returns its namespace (``conn``, ``data``...)."""
    code = compile(ported_snippet(), "basic_usage.py", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    namespace: dict[str, Any] = {"payload": PAYLOAD}  # the snippet's own undefined name
    result = eval(code, namespace)  # our own constant: running it is the point of the test
    if result is not None:
        await result
    return namespace


async def event_rows(database_url: str) -> list[tuple[Any, ...]]:
    block = DatabaseBlock(url=SecretStr(database_url))
    try:
        return await block.afetch_all(
            "SELECT event_type, entity_id, payload, version FROM atlas.events ORDER BY position"
        )
    finally:
        await block.aclose()


async def check_common_effects(compat_env: CompatEnv, namespace: dict[str, Any]) -> None:
    # Database: the connection the snippet used is a psycopg connection to *this* database.
    conn = namespace["conn"]
    assert isinstance(conn, AsyncConnection)
    assert conn.info.dbname == conninfo_to_dict(compat_env.database_url)["dbname"]
    # Storage: the object is in the vault folder, and the snippet read it back.
    stored = compat_env.vault_root / "path.json"
    assert orjson.loads(stored.read_bytes()) == {"key": "value"}
    assert namespace["data"] == {"key": "value"}
    fresh = VaultBlock(provider="local", root=str(compat_env.vault_root))
    assert await fresh.afetch_json("path.json") == {"key": "value"}
    # Events: exactly one row in the event log.
    assert await event_rows(compat_env.database_url) == [("event.type", "entity_id", PAYLOAD, 1)]


async def test_basic_usage_with_a_discord_webhook(
    compat_env: CompatEnv, discord_server: DiscordServer
) -> None:
    hook = discord_server.add_webhook()
    compat_env.set("DISCORD_WEBHOOK_ALERTS", discord_server.url(hook))
    compat_env.set("ATLAS_DISCORD_ALLOWED_HOSTS", "127.0.0.1")

    namespace = await run_snippet()

    await check_common_effects(compat_env, namespace)
    assert len(hook.received) == 1
    embed = hook.received[0]["embeds"][0]
    assert embed["title"] == "[dev] Title"
    assert embed["description"] == "Description"


async def test_basic_usage_without_a_webhook_logs_the_alert(
    compat_env: CompatEnv, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="prefect_atlas"):
        namespace = await run_snippet()

    await check_common_effects(compat_env, namespace)
    logged = [r.getMessage() for r in caplog.records if "Title" in r.getMessage()]
    assert len(logged) == 1, [r.getMessage() for r in caplog.records]
    assert "Description" in logged[0]


async def test_notifier_send_says_what_became_of_the_alert(
    compat_env: CompatEnv, discord_server: DiscordServer
) -> None:
    from prefect_atlas.compat import AlertChannel, AlertLevel, notifier

    hook = discord_server.add_webhook()
    compat_env.set("DISCORD_WEBHOOK_ALERTS", discord_server.url(hook))
    compat_env.set("ATLAS_DISCORD_ALLOWED_HOSTS", "127.0.0.1")

    # HUNT has no webhook: 0.2.1's automatic fallback to ALERTS.
    delivery = await notifier.send(
        "Anomaly", "Unusual velocity", AlertChannel.HUNT, AlertLevel.WARNING, {"delta": "+500%"}
    )
    assert isinstance(delivery, Delivery)
    assert delivery.delivered and delivery.used_fallback
    assert len(hook.received) == 1
    embed = hook.received[0]["embeds"][0]
    assert embed["color"] == AlertLevel.WARNING.colour
    assert [(f["name"], f["value"]) for f in embed["fields"]] == [("delta", "+500%")]
