"""One failure of one flow run, one alert: flow hooks and the server's automations share a key.

The automation side is what the Prefect server runs: the `install-automation` templates,
rendered by the server's own Jinja renderer with the run as the API returns it, handed to
`DiscordBlock.notify` the way the "send notification" action calls it.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import State, StateType
from prefect.runtime import flow_run as current_run
from prefect.states import Crashed
from pydantic import SecretStr

from prefect_atlas import DatabaseBlock, DiscordBlock
from prefect_atlas._blocks import resolve_block
from prefect_atlas.cli.alerts import CRASHED_SUBJECT, crashed_body
from prefect_atlas.discord.enums import Channel
from prefect_atlas.discord.notify import options_line
from prefect_atlas.hooks import (
    BLOCK_ENV,
    AlertMemory,
    DatabaseAlertMemory,
    alert_on_crashed,
    alert_on_failure,
)
from prefect_atlas.hooks.memory import run_key, run_key_state
from tests.discord._server import DiscordServer, Webhook


@pytest.fixture
async def saved(
    discord_server: DiscordServer, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, Webhook]:
    """A saved DiscordBlock named by ATLAS_DISCORD_BLOCK (the hooks use it) and its webhook."""
    hook = discord_server.add_webhook()
    name = f"dedup-{uuid.uuid4().hex[:8]}"
    await DiscordBlock(
        allowed_hosts=["127.0.0.1"], alerts=SecretStr(discord_server.url(hook))
    ).asave(name)
    monkeypatch.setenv(BLOCK_ENV, name)
    return name, hook


async def rendered(flow_run_id: uuid.UUID) -> tuple[str, str]:
    """The crashed automation's subject and body for this run, as the server renders them."""
    from prefect.server.events.jinja_filters import all_filters
    from prefect.server.schemas.core import Flow
    from prefect.server.schemas.responses import FlowRunResponse
    from prefect.server.utilities.user_templates import (
        register_user_template_filters,
        render_user_template,
    )

    register_user_template_filters(all_filters)
    async with get_client() as client:
        run = await client.read_flow_run(flow_run_id)
        owner = await client.read_flow(run.flow_id)
    context: dict[str, Any] = {
        "flow_run": FlowRunResponse.model_validate(run.model_dump(mode="json")),
        "flow": Flow.model_validate(owner.model_dump(mode="json")),
        "deployment": None,
    }
    subject = await render_user_template(CRASHED_SUBJECT, context)
    body = await render_user_template(crashed_body(Channel.ALERTS), context)
    return subject, body


async def automation_notifies(block_name: str, flow_run_id: uuid.UUID) -> bool:
    block = await resolve_block(DiscordBlock, block_name)
    subject, body = await rendered(flow_run_id)
    async with block:
        with block.raise_on_failure():
            delivery = await block.notify(subject=subject, body=body)
    return bool(delivery.delivered)


async def test_hook_first_then_the_automation_stays_quiet(saved: tuple[str, Webhook]) -> None:
    block_name, hook = saved

    @flow(name=f"fails-{uuid.uuid4().hex[:6]}", on_failure=[alert_on_failure])
    async def fails() -> None:
        raise RuntimeError("boom")

    state = await fails(return_state=True)
    assert state.is_failed() and len(hook.received) == 1
    run_id = state.state_details.flow_run_id
    assert run_id is not None

    _, body = await rendered(run_id)
    assert f"run={run_id} state=FAILED" in body  # the server's template names run and state
    assert not await automation_notifies(block_name, run_id)
    assert len(hook.received) == 1


async def test_automation_first_then_the_hook_stays_quiet(saved: tuple[str, Webhook]) -> None:
    block_name, hook = saved

    @flow(name=f"fails-{uuid.uuid4().hex[:6]}", on_failure=[alert_on_failure])
    async def fails() -> None:
        # the server was quicker: its automation announced this run's failure already
        block = await resolve_block(DiscordBlock, block_name)
        async with block:
            delivery = await block.anotify(
                "Run ended in state Failed\n"
                + options_line(run=str(current_run.id), state="FAILED"),
                "Flow failed (from the automation)",
            )
        assert delivery.delivered
        raise RuntimeError("boom")

    state = await fails(return_state=True)
    assert state.is_failed()
    assert [m["embeds"][0]["title"] for m in hook.received] == ["Flow failed (from the automation)"]


async def test_crash_seen_in_process_and_by_the_server_is_announced_once(
    saved: tuple[str, Webhook],
) -> None:
    block_name, hook = saved

    @flow(name=f"crashes-{uuid.uuid4().hex[:6]}")
    def crashes() -> None:
        pass

    async with get_client() as client:
        run = await client.create_flow_run(crashes)
        crashed: State[Any] = Crashed(message="Execution was aborted by an interrupt signal.")
        await client.set_flow_run_state(run.id, crashed, force=True)
        run = await client.read_flow_run(run.id)
    hooked = alert_on_crashed(crashes, run, crashed)
    assert hooked is not None
    await hooked
    assert len(hook.received) == 1
    assert "crashed" in hook.received[0]["embeds"][0]["title"]
    assert not await automation_notifies(block_name, run.id)
    assert len(hook.received) == 1


async def test_undelivered_hook_alert_leaves_the_run_to_the_automation(
    saved: tuple[str, Webhook], discord_server: DiscordServer
) -> None:
    block_name, hook = saved
    discord_server.set_fault(hook, "404", count=1)  # the hook's one try finds the webhook gone
    name = f"fails-{uuid.uuid4().hex[:6]}"

    @flow(name=name, on_failure=[alert_on_failure])
    async def fails() -> None:
        raise RuntimeError("boom")

    state = await fails(return_state=True)
    assert hook.received == [] and hook.faults_served == 1
    run_id = state.state_details.flow_run_id
    assert run_id is not None
    assert await automation_notifies(block_name, run_id)
    async with get_client() as client:
        run = await client.read_flow_run(run_id)
    assert [m["embeds"][0]["title"] for m in hook.received] == [
        f"Flow {name} failed: run {run.name}"
    ]


@pytest.mark.parametrize("backend", ["sqlite", "database"])
async def test_run_keys_are_kept_apart_from_failures_and_pruned(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    memory: AlertMemory | DatabaseAlertMemory = AlertMemory(tmp_path / "memory.sqlite3")
    database: DatabaseBlock | None = None
    if backend == "database":
        database = DatabaseBlock(url=SecretStr(request.getfixturevalue("database_url")))
        memory = DatabaseAlertMemory(database, fallback=AlertMemory(tmp_path / "fallback.db"))
    try:
        old, new = run_key(uuid.uuid4(), "CRASHED"), run_key(uuid.uuid4(), StateType.FAILED)
        assert new.endswith("|FAILED") and run_key_state(old) == "CRASHED"
        assert (await memory.aclaim(old, old, "CRASHED", 0.2)).send
        await memory.aclaim("flow:x||Failed:KeyError", "flow:x|", "KeyError", 3600)
        await asyncio.sleep(0.4)
        assert (await memory.aclaim(new, new, "FAILED", 0.2)).send  # prunes the expired key
        assert not (await memory.aclaim(new, new, "FAILED", 0.2)).send
        # a run key is never "resolved" by a later success of the flow
        assert [r.exc_type for r in await memory.aresolve("flow:x|")] == ["KeyError"]
        assert (await memory.aclaim(old, old, "CRASHED", 3600)).suppressed == 0  # pruned: anew
    finally:
        if database is not None:
            await database.aclose()
