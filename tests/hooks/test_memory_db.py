"""Alert memory in the Atlas database: one dedup for every worker host, SQLite when it's down."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from prefect import flow
from pydantic import SecretStr

from prefect_atlas import DatabaseBlock, DiscordBlock
from prefect_atlas.hooks import (
    BLOCK_ENV,
    MEMORY_DATABASE_ENV,
    AlertMemory,
    DatabaseAlertMemory,
    alert_on_failure,
)
from tests.discord._server import DiscordServer


async def test_two_hosts_share_one_memory(database_url: str, tmp_path: Path) -> None:
    # two blocks = two pools, as two worker hosts would have
    host_a = DatabaseAlertMemory(
        DatabaseBlock(url=SecretStr(database_url)), fallback=AlertMemory(tmp_path / "a.db")
    )
    host_b = DatabaseAlertMemory(
        DatabaseBlock(url=SecretStr(database_url)), fallback=AlertMemory(tmp_path / "b.db")
    )
    assert (await host_a.aclaim("fp", "flow:x|", "KeyError", 3600)).send
    second = await host_b.aclaim("fp", "flow:x|", "KeyError", 3600)
    assert not second.send and second.suppressed == 1
    resolved = await host_b.aresolve("flow:x|")
    assert [(r.exc_type, r.total) for r in resolved] == [("KeyError", 2)]
    assert await host_a.aresolve("flow:x|") == []


async def test_concurrent_failures_on_many_hosts_send_one_alert(
    database_url: str, tmp_path: Path
) -> None:
    hosts = [
        DatabaseAlertMemory(
            DatabaseBlock(url=SecretStr(database_url)), fallback=AlertMemory(tmp_path / f"{i}.db")
        )
        for i in range(8)
    ]
    await hosts[0].aclaim("warm-up", "s", "X", 1)  # create the schema once
    claims = await asyncio.gather(
        *(h.aclaim("fp-race", "flow:y|", "ValueError", 3600) for h in hosts)
    )
    assert sum(c.send for c in claims) == 1
    assert sorted(c.suppressed for c in claims if not c.send) == list(range(1, 8))


async def test_unreachable_database_falls_back_to_local_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dead = DatabaseBlock(url=SecretStr("postgresql://u:mem-secret@127.0.0.1:1/x"), timeout=2)
    memory = DatabaseAlertMemory(dead, fallback=AlertMemory(tmp_path / "local.db"))
    assert (await memory.aclaim("fp", "flow:z|", "OSError", 3600)).send
    assert not (await memory.aclaim("fp", "flow:z|", "OSError", 3600)).send
    assert [r.total for r in await memory.aresolve("flow:z|")] == [2]
    assert any("unavailable" in r.getMessage() for r in caplog.records)
    assert all("mem-secret" not in r.getMessage() for r in caplog.records)


async def test_hooks_use_the_database_memory_when_configured(
    database_url: str, discord_server: DiscordServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = discord_server.add_webhook()
    name = f"mem-{uuid.uuid4().hex[:8]}"
    await DiscordBlock(
        allowed_hosts=["127.0.0.1"], alerts=SecretStr(discord_server.url(hook))
    ).asave(name)
    await DatabaseBlock(url=SecretStr(database_url)).asave(name)
    monkeypatch.setenv(BLOCK_ENV, name)
    monkeypatch.setenv(MEMORY_DATABASE_ENV, name)
    flow_name = f"shared-{uuid.uuid4().hex[:6]}"

    @flow(name=flow_name, on_failure=[alert_on_failure])
    async def failing() -> None:
        raise LookupError("gone")

    await failing(return_state=True)
    await failing(return_state=True)
    assert len(hook.received) == 1
    async with DatabaseBlock(url=SecretStr(database_url)) as db:
        row = await db.afetch_one(
            "SELECT exc_type, total FROM atlas.open_alerts WHERE scope LIKE %s", [f"%{flow_name}%"]
        )
    assert row == ("LookupError", 2)
