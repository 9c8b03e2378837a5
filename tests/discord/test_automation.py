"""`prefect-atlas alerts install-automation` on the real Prefect test server."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from prefect.automations import (
    Automation,
    ChangeFlowRunState,
    EventTrigger,
    Posture,
    SendNotification,
)
from prefect.blocks.notifications import DiscordWebhook
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.exceptions import ObjectNotFound
from pydantic import SecretStr

from prefect_atlas import DiscordBlock
from prefect_atlas.cli import main

WEBHOOK = "https://discord.com/api/webhooks/123456789/tok_en-SECRET"


def by_name(name: str) -> list[Any]:
    async def read() -> list[Any]:
        async with get_client() as client:
            return list(await client.read_automations_by_name(name))

    return asyncio.run(read())


def one(name: str) -> Any:
    found = by_name(name)
    assert len(found) == 1, found
    return found[0]


_BLOCKS: list[str] = []


@pytest.fixture(autouse=True)
def _remove_automations() -> Iterator[None]:
    """The test server is shared by the session: no automation of these tests outlives them
    (a crashed automation would otherwise race the hook tests for their runs' dedup keys)."""
    yield

    async def remove() -> None:
        async with get_client() as client:
            for block in _BLOCKS:
                for prefix in ("atlas-crashed-", "atlas-zombie-", "atlas-alerts-"):
                    for automation in await client.read_automations_by_name(prefix + block):
                        await client.delete_automation(automation.id)

    asyncio.run(remove())
    _BLOCKS.clear()


def saved_block(prefix: str, **kwargs: Any) -> tuple[str, uuid.UUID]:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    _BLOCKS.append(name)
    block_id: uuid.UUID = asyncio.run(DiscordBlock(alerts=SecretStr(WEBHOOK), **kwargs).asave(name))
    return name, block_id


def test_install_creates_crashed_and_zombie_automations_on_the_block(
    capsys: pytest.CaptureFixture[str],
) -> None:
    name, block_id = saved_block("prod", env_tag="[prod]")

    args = ["alerts", "install-automation", "--block", name, "--heartbeat-frequency", "60"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "prefect.flow-run.Crashed" in out and "no heartbeat for 180 s" in out
    assert "tok_en-SECRET" not in out

    crashed = one(f"atlas-crashed-{name}")
    trigger = crashed.trigger
    assert isinstance(trigger, EventTrigger)
    assert trigger.expect == {"prefect.flow-run.Crashed"}
    assert trigger.posture == Posture.Reactive
    assert trigger.match.get("prefect.resource.id") == ["prefect.flow-run.*"]
    (action,) = crashed.actions
    assert isinstance(action, SendNotification)
    assert action.block_document_id == block_id  # the DiscordBlock itself, no copy of the URL
    assert "atlas-alert: channel=alerts level=critical run={{ flow_run.id }}" in action.body
    assert "state={{ flow_run.state.type.value }}" in action.body

    zombie = one(f"atlas-zombie-{name}")
    ztrigger = zombie.trigger
    assert isinstance(ztrigger, EventTrigger)
    assert ztrigger.posture == Posture.Proactive
    assert ztrigger.after == {"prefect.flow-run.heartbeat"}
    assert {"prefect.flow-run.heartbeat", "prefect.flow-run.Completed"} <= ztrigger.expect
    assert "prefect.flow-run.Crashed" in ztrigger.expect
    assert ztrigger.for_each == {"prefect.resource.id"}
    assert ztrigger.within == dt.timedelta(seconds=180)
    notify, mark = zombie.actions
    assert isinstance(notify, SendNotification) and notify.block_document_id == block_id
    assert "state=CRASHED" in notify.body  # the key the crashed automation then finds claimed
    assert isinstance(mark, ChangeFlowRunState) and mark.state == StateType.CRASHED

    # No Prefect DiscordWebhook copy of the token is made any more.
    with pytest.raises(ValueError, match="Unable to find block document"):
        asyncio.run(DiscordWebhook.aload(f"atlas-alerts-{name}"))

    # Running it again updates both in place (same ids, no duplicates), now with Failed too.
    assert main([*args, "--include-failed", "--missed-heartbeats", "4", "--no-mark-crashed"]) == 0
    again = one(f"atlas-crashed-{name}")
    assert again.id == crashed.id
    assert isinstance(again.trigger, EventTrigger)
    assert again.trigger.expect == {"prefect.flow-run.Crashed", "prefect.flow-run.Failed"}
    zombie_again = one(f"atlas-zombie-{name}")
    assert zombie_again.id == zombie.id
    assert isinstance(zombie_again.trigger, EventTrigger)
    assert zombie_again.trigger.within == dt.timedelta(seconds=240)
    assert [type(a) for a in zombie_again.actions] == [SendNotification]

    # --no-zombie removes the zombie automation.
    assert main([*args, "--no-zombie"]) == 0
    assert by_name(f"atlas-zombie-{name}") == []
    assert len(by_name(f"atlas-crashed-{name}")) == 1


def test_install_replaces_the_earlier_discordwebhook_setup(
    capsys: pytest.CaptureFixture[str],
) -> None:
    name, _ = saved_block("legacy")
    legacy_block: uuid.UUID = asyncio.run(
        DiscordWebhook(
            webhook_id=SecretStr("123456789"), webhook_token=SecretStr("tok_en-SECRET")
        ).asave(f"atlas-alerts-{name}")
    )
    Automation(
        name=f"atlas-alerts-{name}",
        trigger=EventTrigger(expect={"prefect.flow-run.Crashed"}, posture=Posture.Reactive),
        actions=[SendNotification(block_document_id=legacy_block, body="{{ flow_run.name }}")],
    ).create()
    # a duplicate of the new name (a concurrent install, say) is folded into one
    for _ in range(2):
        Automation(
            name=f"atlas-crashed-{name}",
            trigger=EventTrigger(expect={"prefect.flow-run.Crashed"}, posture=Posture.Reactive),
            actions=[SendNotification(block_document_id=legacy_block, body="x")],
        ).create()

    assert main(["alerts", "install-automation", "--block", name, "--no-zombie"]) == 0
    assert "removed 2 object(s)" in capsys.readouterr().out
    assert by_name(f"atlas-alerts-{name}") == []

    async def legacy_document_exists() -> bool:
        async with get_client() as client:
            try:
                await client.read_block_document(legacy_block)
            except ObjectNotFound:
                return False
            return True

    assert not asyncio.run(legacy_document_exists())
    (action,) = one(f"atlas-crashed-{name}").actions
    assert isinstance(action, SendNotification) and action.block_document_id != legacy_block


def test_install_automation_without_webhook_is_a_clear_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    name = f"empty-{uuid.uuid4().hex[:6]}"
    _BLOCKS.append(name)
    DiscordBlock().save(name)
    assert main(["alerts", "install-automation", "--block", name]) == 1
    assert "set the `alerts` field" in capsys.readouterr().err
    assert by_name(f"atlas-crashed-{name}") == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--heartbeat-frequency", "10"], "at least 30 s"),
        (["--missed-heartbeats", "1"], "--missed-heartbeats must be at least 2"),
    ],
)
def test_zombie_window_errors_name_the_option(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    name, _ = saved_block("window")
    assert main(["alerts", "install-automation", "--block", name, *args]) == 1
    assert message in capsys.readouterr().err
