"""Flow hooks on a real Prefect test server posting to the local Discord-like server."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import pytest
from prefect import flow, task
from prefect.client.schemas.objects import State
from pydantic import SecretStr

from prefect_atlas import Channel, DiscordBlock
from prefect_atlas.hooks import (
    BLOCK_ENV,
    AlertMemory,
    alert_on_cancellation,
    alert_on_completion,
    alert_on_crashed,
    alert_on_failure,
    alert_on_state,
    alert_on_task_failure,
    discord_hook,
)
from tests.discord._server import DiscordServer, Webhook


@pytest.fixture
async def saved_block(discord_server: DiscordServer, monkeypatch: pytest.MonkeyPatch) -> Webhook:
    """A saved DiscordBlock (alerts channel) named by ATLAS_DISCORD_BLOCK."""
    hook = discord_server.add_webhook()
    name = f"alerts-{uuid.uuid4().hex[:8]}"
    await DiscordBlock(
        allowed_hosts=["127.0.0.1"], alerts=SecretStr(discord_server.url(hook)), env_tag="[test]"
    ).asave(name)
    monkeypatch.setenv(BLOCK_ENV, name)
    return hook


def titles(hook: Webhook) -> list[str]:
    return [m["embeds"][0]["title"] for m in hook.received]


@task
async def parse(raw: dict[str, Any]) -> Any:
    return raw["missing"]


async def test_failure_alert_once_then_suppressed_then_resolved(saved_block: Webhook) -> None:
    name = f"ingest-{uuid.uuid4().hex[:6]}"
    should_fail = {"value": True}

    @flow(name=name, on_failure=[alert_on_failure], on_completion=[alert_on_completion])
    async def ingest(api_token: str = "tok-123") -> str:
        if should_fail["value"]:
            try:
                await parse({})
            except KeyError as exc:
                raise RuntimeError("ingest failed") from exc
        return "ok"

    state = await ingest(return_state=True)
    assert state.is_failed()
    assert len(saved_block.received) == 1
    message = saved_block.received[0]
    embed = message["embeds"][0]
    assert embed["title"] == f"[test] Flow {name} failed: KeyError"
    assert "KeyError" in embed["description"] and "missing" in embed["description"]
    assert "raised as RuntimeError: ingest failed" in embed["description"]
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["Flow"] == name and fields["State"] == "Failed"
    assert "tok-123" not in fields["Parameters"] and "api_token" in fields["Parameters"]

    await ingest(return_state=True)  # same failure inside the repeat interval
    assert len(saved_block.received) == 1

    should_fail["value"] = False
    assert (await ingest(return_state=True)).is_completed()
    assert len(saved_block.received) == 2
    resolved = saved_block.received[1]["embeds"][0]
    assert resolved["title"] == f"[test] Resolved: flow {name}"
    assert "KeyError" in resolved["description"] and "2 failure(s)" in resolved["description"]

    assert (await ingest(return_state=True)).is_completed()
    assert len(saved_block.received) == 2  # resolved once only


async def test_next_alert_after_interval_counts_suppressed(saved_block: Webhook) -> None:
    name = f"hunt-{uuid.uuid4().hex[:6]}"
    # An interval a loaded machine cannot overrun between two back-to-back runs.
    hook = discord_hook(repeat_interval=4.0)

    @flow(name=name, on_failure=[hook])
    async def hunt() -> None:
        raise ValueError("quota exceeded")

    await hunt(return_state=True)
    await hunt(return_state=True)
    await asyncio.sleep(4.2)
    await hunt(return_state=True)
    assert len(saved_block.received) == 2
    assert "1 similar failure(s) suppressed" in saved_block.received[1]["embeds"][0]["description"]


async def test_root_exception_from_failed_task_runs(saved_block: Webhook) -> None:
    """Prefect #14775: a flow returning a failed task state; the alert names the task's error."""
    name = f"states-{uuid.uuid4().hex[:6]}"

    @flow(name=name, on_failure=[alert_on_failure])
    async def returns_states() -> State[Any]:
        state: State[Any] = await parse({}, return_state=True)  # type: ignore[misc]
        return state

    state = await returns_states(return_state=True)
    assert state.is_failed()
    assert len(saved_block.received) == 1
    embed = saved_block.received[0]["embeds"][0]
    assert embed["title"].endswith(": KeyError"), embed["title"]


async def test_task_failure_hook(saved_block: Webhook) -> None:
    name = f"fetch-{uuid.uuid4().hex[:6]}"

    @task(name=name, on_failure=[alert_on_task_failure])
    async def fetch() -> None:
        raise ConnectionError("upstream refused")

    @flow(name=f"flow-{name}")
    async def pipeline() -> None:
        await fetch()

    await pipeline(return_state=True)
    assert titles(saved_block) == [f"[test] Task {name} failed: ConnectionError"]


async def test_hook_never_raises_and_logs_without_block(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(BLOCK_ENV, f"missing-{uuid.uuid4().hex[:6]}")
    name = f"lonely-{uuid.uuid4().hex[:6]}"

    @flow(name=name, on_failure=[alert_on_failure])
    async def lonely() -> None:
        raise KeyError("gone")

    with caplog.at_level(logging.INFO):
        state = await lonely(return_state=True)
    assert state.is_failed()
    messages = [r.getMessage() for r in caplog.records]
    assert any("could not be loaded" in m for m in messages)
    assert any("Discord alert not delivered" in m and "KeyError" in m for m in messages)
    assert not any("An error was encountered while running hook" in m for m in messages)


def test_memory_is_shared_across_processes(tmp_path: Any) -> None:
    """A failure claimed in this process is suppressed, then resolved, in another one."""
    import subprocess
    import sys

    path = tmp_path / "a.sqlite3"
    first = AlertMemory(path)
    assert first.claim("fp", "flow:x|", "KeyError", 3600).send
    code = (
        "import sys\n"
        "from prefect_atlas.hooks import AlertMemory\n"
        "memory = AlertMemory(sys.argv[1])\n"
        "print(memory.claim('fp', 'flow:x|', 'KeyError', 3600).send)\n"
        "print([(r.exc_type, r.total) for r in memory.resolve('flow:x|')])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["False", "[('KeyError', 2)]"]
    assert first.resolve("flow:x|") == []


async def test_token_never_in_flow_logs(
    saved_block: Webhook, caplog: pytest.LogCaptureFixture
) -> None:
    name = f"leak-{uuid.uuid4().hex[:6]}"

    @flow(name=name, on_failure=[discord_hook(channel=Channel.HUNT)])
    async def leak() -> None:
        raise ValueError("x")

    with caplog.at_level(logging.DEBUG):
        await leak(return_state=True)
    assert len(saved_block.received) == 1  # hunt has no webhook: fallback alerts
    assert caplog.records
    for record in caplog.records:
        assert saved_block.token not in record.getMessage()
        assert saved_block.token not in str(record.args)


async def test_secrets_in_exception_messages_and_parameters_never_reach_discord(
    saved_block: Webhook,
) -> None:
    name = f"leaky-{uuid.uuid4().hex[:6]}"

    @flow(name=name, on_failure=[alert_on_failure])
    async def leaky(targets: list[str] | None = None) -> None:
        raise RuntimeError(
            "could not reach postgresql://atlas:pg-Pa55word@db.internal/atlas nor "
            "https://youtube.googleapis.com/youtube/v3/videos?part=id&key=AIzaLeakedKey123&alt=json"
        )

    state = await leaky(targets=["postgresql://ro:replica-Pa55@replica/atlas"], return_state=True)
    assert state.is_failed()
    assert len(saved_block.received) == 1
    text = str(saved_block.received[0])
    assert "db.internal" in text  # the useful part stays
    for secret in ("pg-Pa55word", "AIzaLeakedKey123", "replica-Pa55"):
        assert secret not in text


async def test_state_specific_hooks_ignore_other_states(saved_block: Webhook) -> None:
    name = f"narrow-{uuid.uuid4().hex[:6]}"
    should_fail = {"value": True}

    @flow(
        name=name,
        on_failure=[alert_on_completion, alert_on_crashed, alert_on_cancellation],
        on_completion=[alert_on_failure, alert_on_crashed],
    )
    async def narrow() -> None:
        if should_fail["value"]:
            raise ValueError("wrong hook list")

    assert (await narrow(return_state=True)).is_failed()
    should_fail["value"] = False
    assert (await narrow(return_state=True)).is_completed()
    assert saved_block.received == [], "a hook acts only on the states its name says"


async def test_alert_on_state_acts_on_every_state(saved_block: Webhook) -> None:
    name = f"every-{uuid.uuid4().hex[:6]}"
    should_fail = {"value": True}

    @flow(name=name, on_failure=[alert_on_state], on_completion=[alert_on_state])
    async def every() -> None:
        if should_fail["value"]:
            raise ValueError("boom")

    assert (await every(return_state=True)).is_failed()
    should_fail["value"] = False
    assert (await every(return_state=True)).is_completed()
    assert titles(saved_block) == [
        f"[test] Flow {name} failed: ValueError",
        f"[test] Resolved: flow {name}",
    ]


async def test_discord_hook_with_states_logs_what_it_ignores(
    discord_server: DiscordServer, caplog: pytest.LogCaptureFixture
) -> None:
    from types import SimpleNamespace

    from prefect.client.schemas.objects import StateType
    from prefect.states import Completed

    webhook = discord_server.add_webhook()
    block = DiscordBlock(allowed_hosts=["127.0.0.1"], alerts=SecretStr(discord_server.url(webhook)))
    hook = discord_hook(block=block, states={StateType.FAILED}, name="failed_only")
    caplog.set_level(logging.WARNING, logger="prefect_atlas.hooks")
    # objects the run logger cannot use: the hook logs on its fallback logger
    await hook(SimpleNamespace(), SimpleNamespace(), Completed())  # type: ignore[arg-type, misc]
    assert webhook.received == []
    assert any("failed_only acts on Failed states only" in r.getMessage() for r in caplog.records)
