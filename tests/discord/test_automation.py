"""`prefect-atlas alerts install-automation` on the real Prefect test server."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from prefect.automations import Automation, EventTrigger, SendNotification
from prefect.blocks.notifications import DiscordWebhook
from pydantic import SecretStr

from prefect_atlas import DiscordBlock
from prefect_atlas.cli import main


def read(name: str) -> Automation:
    return asyncio.run(Automation.aread(name=name))


def test_install_automation_creates_crash_trigger(capsys: pytest.CaptureFixture[str]) -> None:
    name = f"prod-{uuid.uuid4().hex[:6]}"
    DiscordBlock(
        alerts=SecretStr("https://discord.com/api/webhooks/123456789/tok_en-SECRET"),
        env_tag="[prod]",
    ).save(name)

    assert main(["alerts", "install-automation", "--block", name]) == 0
    out = capsys.readouterr().out
    assert "prefect.flow-run.Crashed" in out and "tok_en-SECRET" not in out

    automation = read(f"atlas-alerts-{name}")
    trigger = automation.trigger
    assert isinstance(trigger, EventTrigger)
    assert trigger.expect == {"prefect.flow-run.Crashed"}
    assert trigger.posture == "Reactive"
    assert trigger.match.get("prefect.resource.id") == ["prefect.flow-run.*"]
    action = automation.actions[0]
    assert isinstance(action, SendNotification)
    notifier: object = asyncio.run(DiscordWebhook.aload(f"atlas-alerts-{name}"))
    assert isinstance(notifier, DiscordWebhook)
    assert notifier._block_document_id == action.block_document_id
    assert notifier.webhook_id.get_secret_value() == "123456789"
    assert notifier.webhook_token.get_secret_value() == "tok_en-SECRET"

    # Running it again replaces the automation (one per block), now with Failed too.
    assert main(["alerts", "install-automation", "--block", name, "--include-failed"]) == 0
    again = read(f"atlas-alerts-{name}")
    assert again.id != automation.id
    assert isinstance(again.trigger, EventTrigger)
    assert again.trigger.expect == {"prefect.flow-run.Crashed", "prefect.flow-run.Failed"}
    assert automation.id is not None
    with pytest.raises(ValueError, match="not found"):
        asyncio.run(Automation.aread(id=automation.id))


def test_install_automation_without_webhook_is_a_clear_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    name = f"empty-{uuid.uuid4().hex[:6]}"
    DiscordBlock().save(name)
    assert main(["alerts", "install-automation", "--block", name]) == 1
    assert "set the `alerts` field" in capsys.readouterr().err
