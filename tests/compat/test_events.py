"""``events.emit``: non-blocking as in Atlas 0.2.1, but an outage no longer loses the event."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest

from prefect_atlas import DatabaseBlock, compat
from prefect_atlas.compat import events
from tests._proxy import TcpProxy
from tests.compat.conftest import CompatEnv


@pytest.fixture
def proxy(database_url: str) -> Iterator[TcpProxy]:
    server = TcpProxy(database_url)
    try:
        yield server
    finally:
        server.close()


async def test_an_outage_spools_the_event_and_the_drainer_stores_it(
    compat_env: CompatEnv, proxy: TcpProxy, db: DatabaseBlock
) -> None:
    compat_env.set("DATABASE_URL", proxy.url)
    first = await events.emit("video.discovered", "v1", {"n": 1})  # also applies the schema

    proxy.refuse()
    try:
        async with asyncio.timeout(60):  # a hang bound, not a speed claim
            second = await events.emit("video.discovered", "v1", {"n": 2})
        store = await events.store()
        assert store.spool_size() == 1
        assert await db.afetch_all("SELECT event_id FROM atlas.events") == [(first,)]
    finally:
        proxy.heal()

    async with asyncio.timeout(90):  # the background drainer, backing off, gets there
        while store.spool_size():
            await asyncio.sleep(0.2)
    rows = await db.afetch_all(
        "SELECT event_id, payload, version FROM atlas.events ORDER BY version"
    )
    assert rows == [(first, {"n": 1}, 1), (second, {"n": 2}, 2)]


async def test_emit_returns_the_event_id_and_accepts_0_2_1_keywords(
    compat_env: CompatEnv, db: DatabaseBlock
) -> None:
    event_id = await events.emit(
        event_type="video.discovered", entity_id="dQw4w9WgXcQ", payload={"views": 1000}
    )
    assert isinstance(event_id, uuid.UUID)
    assert await db.afetch_all("SELECT event_id, payload FROM atlas.events") == [
        (event_id, {"views": 1000})
    ]


@pytest.mark.parametrize(
    ("event_type", "payload", "match"),
    [
        ("Video Discovered", {}, "event_type"),
        ("video.discovered", {"score": float("nan")}, "NaN"),
    ],
)
async def test_an_invalid_event_raises_instead_of_vanishing(
    compat_env: CompatEnv, db: DatabaseBlock, event_type: str, payload: dict[str, float], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        await events.emit(event_type, "v1", payload)
    await compat.events.emit("probe.ok", "v1", {})  # the bus still works afterwards
    assert await db.afetch_all("SELECT event_type FROM atlas.events") == [("probe.ok",)]
