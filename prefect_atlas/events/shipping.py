"""The vault tier of the spool: ship spooled events to the spool vault, claim them back.

A worker whose disk goes away with it ships what PostgreSQL could not take at exit into
the vault as segments (``segments.py``); any drain with that vault claims them: stores
their events, then deletes the segment. Functions of the store's ``Draining`` base.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import suppress
from typing import TYPE_CHECKING

import psycopg

from prefect_atlas import metrics
from prefect_atlas.events import segments
from prefect_atlas.resilience import within

if TYPE_CHECKING:
    from prefect_atlas.events.draining import Draining
    from prefect_atlas.vault import VaultBlock

logger = logging.getLogger("prefect_atlas.events")

# Listing the vault's segments, and claiming one (fetch, store up to 10,000 events, delete).
SEGMENT_SECONDS = 120.0


async def vault_block(store: Draining) -> VaultBlock | None:
    """The spool vault as a block (a name is loaded once); None when unset or unloadable."""
    rt = store._rt()
    target = store.spool_vault if store.spool_vault is not None else rt.spool_vault
    if isinstance(target, str):
        from prefect_atlas._blocks import resolve_block
        from prefect_atlas.vault import VaultBlock

        try:
            target = await resolve_block(VaultBlock, target)
        except Exception as exc:
            logger.warning(
                "cannot load the spool vault block %r (%s: %s); spooled events stay local",
                target,
                type(exc).__name__,
                exc,
            )
            return None
        if rt.spool_vault is None or isinstance(rt.spool_vault, str):
            rt.spool_vault = target
    return target


async def ship(store: Draining, vault: VaultBlock, budget: float) -> int:
    """Move the spooled events into the vault as segments (create-only), within ``budget``
    seconds in all; returns how many."""
    rt = store._rt()
    shipped = 0
    deadline = time.monotonic() + budget
    async with rt.drain_lock(min(2.0, budget)) as locked:
        if not locked:
            return 0
        spool = rt.spool()
        while batch := await asyncio.to_thread(spool.peek, segments.SEGMENT_EVENTS):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            path = segments.new_path(store._target_digest())
            data = segments.encode(batch)
            await within(
                vault.astore_bytes(
                    path, data, overwrite=False, content_type="application/x-ndjson"
                ),
                left,
            )
            await asyncio.to_thread(spool.remove, [e.event_id for e in batch])
            shipped += len(batch)
    if shipped:
        metrics.SPOOL_SIZE.set(await asyncio.to_thread(rt.count))
        logger.warning(
            "PostgreSQL (%s) unreachable at exit: %d spooled event(s) shipped to the vault %s "
            "under %s/; any drain with that vault stores them",
            store.db.describe(),
            shipped,
            vault.describe(),
            segments.folder(store._target_digest()),
        )
    return shipped


async def claim_segments(store: Draining, vault: VaultBlock) -> tuple[int, int]:
    """Store the events of every segment of this target found in the vault, then delete it.

    Each segment is claimed under a PostgreSQL advisory lock named after it, so two
    drains never store one segment at once; ids are idempotent besides. Each segment is
    handled within a deadline. Returns (stored, parked).
    """
    stored = parked = 0
    names = await within(
        vault.alist_objects(segments.folder(store._target_digest())), SEGMENT_SECONDS
    )
    for name in names:
        claimed = await within(claim_segment(store, vault, name), SEGMENT_SECONDS)
        if claimed is not None:
            stored += claimed[0]
            parked += claimed[1]
    return stored, parked


async def claim_segment(store: Draining, vault: VaultBlock, name: str) -> tuple[int, int] | None:
    """Claim one segment: store its events and delete it; None when another drain has it."""
    async with store._connection() as conn:
        await conn.set_autocommit(True)  # each batch commits before its segment is deleted
        cur = await conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 1))", [name])
        row = await cur.fetchone()
        if not (row and row[0]):
            return None  # another drain holds it
        try:
            data = await vault.afetch_bytes(name)
            if data is None:
                return None  # stored and deleted by another drain meanwhile
            try:
                events = segments.decode(data, name)
            except segments.SegmentError as exc:
                logger.error("%s; it is left in the vault for inspection", exc)
                return None
            ok, dead = await store._store_spooled(conn, events)
            await vault.adelete_object(name)
        finally:
            with suppress(psycopg.Error):
                await conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 1))", [name])
                await conn.set_autocommit(False)
    metrics.EVENTS_DRAINED.inc(ok)
    logger.info("stored %d event(s) of the vault segment %s", ok, name)
    return ok, dead
