"""Relay the event log into Prefect's events, so automations can react to Atlas events.

The ``prefect-relay`` consumer (:class:`~prefect_atlas.events.relay.PrefectRelay`) publishes
every event not relayed yet, confirms Prefect stored it, and commits its checkpoint; then,
with ``follow_for`` > 0, keeps relaying new events as they commit for that many seconds.
The ``atlas-relay`` deployment runs it every five minutes following for four: automations
see an event within seconds, and a lost worker delays them by one schedule at most. The
relay publishes through the flow run's own Prefect client (the server it runs on).
"""

from __future__ import annotations

import asyncio
from contextlib import suppress
from typing import Any

from prefect import flow, get_run_logger

from prefect_atlas import DatabaseBlock, EventStore
from prefect_atlas._blocks import resolve_block
from prefect_atlas.events.relay import PrefectRelay


@flow(name="relay-events", log_prints=True)
async def relay_events(
    database: str = "default",
    batch_size: int = 200,
    follow_for: float = 0.0,
    event_types: list[str] | None = None,
) -> dict[str, Any]:
    """Publish new Atlas events to Prefect (at least once); returns what was relayed.

    ``follow_for`` seconds after catching up it keeps following the log (0: return once
    caught up). Fails when the relay parked events Prefect refused (they wait as the
    consumer's dead letters).
    """
    logger = get_run_logger()
    db = await resolve_block(DatabaseBlock, database)
    async with db:
        await db.asetup()
        relay = PrefectRelay(
            EventStore(db, mode="strict"), batch_size=batch_size, event_types=event_types
        )
        stats = await relay.arun()
        relayed, parked, batches = stats.relayed, stats.dead_lettered, stats.batches
        if follow_for > 0:
            stop = asyncio.Event()
            following = asyncio.ensure_future(relay.arun(follow=True, stop=stop))
            with suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(following), follow_for)
            stop.set()
            more = await following
            relayed, parked = relayed + more.relayed, parked + more.dead_lettered
            batches += more.batches
    logger.info(
        "relayed %d event(s) to Prefect in %d batch(es); %d parked as dead letters",
        relayed,
        batches,
        parked,
    )
    if parked:
        raise RuntimeError(
            f"Prefect refused {parked} event(s); they wait as dead letters of the "
            f"{relay.name!r} consumer: inspect them with `prefect-atlas events consumers "
            f"--name {relay.name} --dead-letters`"
        )
    return {"relayed": relayed, "batches": batches, "dead_lettered": parked}
