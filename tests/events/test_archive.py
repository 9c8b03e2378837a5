"""Retention with an archive: whole partitions to the vault as Parquet, verified, then dropped.

Real parts only: the embedded PostgreSQL with the partitioned log, a local vault folder and
the GCS emulator, the Prefect test server for the maintenance flow and the Discord-like
server for its alert. Old partitions are made the way old events are: events emitted through
the store, then their recorded_at moved into past days by SQL in the test (PostgreSQL moves
the rows into those days' partitions, ids, positions, xids and versions as they were).
"""

from __future__ import annotations

import asyncio
import io
import itertools
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pyarrow.parquet as pq
import pytest
from pydantic import SecretStr

from prefect_atlas import DatabaseBlock, DiscordBlock, VaultBlock
from prefect_atlas.events import EventStore, NewEvent, StoredEvent
from prefect_atlas.events import archive as archive_module
from prefect_atlas.events.archive import aarchive_partition, archive_keys
from prefect_atlas.events.partitions import Partition, aensure_partitions, alist_partitions
from prefect_atlas.exceptions import ArchiveError, ArchiveIntegrityError
from prefect_atlas.hooks import BLOCK_ENV
from prefect_atlas.testing.discord import DiscordServer
from tests.vault.conftest import gcs_env, make_vault

__all__ = ["gcs_env"]  # the session fixture of the GCS emulator, shared with the vault tests

ROOT = Path(__file__).resolve().parents[2]
DAY = timedelta(days=1)
# Which past day (days ago) each emitted batch lands in: batches are emitted in this order, so
# their xids grow along the list while their partitions go back and forth, and the partitions'
# xid ranges interleave (as a transaction that began before midnight and wrote after it does).
BATCH_DAYS = [39, 40, 39, 40, 38, 40, 38, 39, 38]
ODD_IDS = ['a,"b"', "line\nbreak", "cr\rhere", "ünï ✓", "x" * 200]


def midnight(days_ago: int) -> datetime:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - days_ago * DAY


def _payload(index: int) -> dict[str, Any]:
    return {
        "n": index,
        "text": 'quote " comma , newline \n tab \t and ✓',
        "nested": {"list": [1, 2.5, None, True], "big": 2**62},
    }


def _occurred(index: int) -> datetime:
    edges = [
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2026, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
        datetime(2026, 6, 1, 12, 30, 0, 500000, tzinfo=UTC),
    ]
    return edges[index] if index < len(edges) else datetime(2026, 3, 1, tzinfo=UTC) + index * DAY


async def seed(store: EventStore, db: DatabaseBlock, *, per_batch: int = 20) -> list[str]:
    """Old events in three past days' partitions (interleaved xids) and a few live ones today."""
    async with db.connection() as conn:
        await aensure_partitions(conn, ahead=2 * DAY, now=midnight(max(BATCH_DAYS)))
    index = 0
    for batch, days_ago in enumerate(BATCH_DAYS):
        events = []
        for _ in range(per_batch):
            entity = ODD_IDS[index % len(ODD_IDS)] if index % 3 == 0 else f"video-{index % 11}"
            kind = "video.ingested" if index % 2 else "video.seen"
            events.append(NewEvent(kind, entity, _payload(index), occurred_at=_occurred(index)))
            index += 1
        ids = await store.aemit_many(events)
        await db.aexecute(
            "UPDATE atlas.events SET recorded_at = %s + (position %% 7200) * interval '1 second' "
            "WHERE event_id = ANY(%s)",
            [midnight(days_ago) + batch * timedelta(hours=1), ids],
        )
    await store.aemit_many(
        [NewEvent("video.seen", f"video-{i % 11}", {"live": i}) for i in range(15)]
    )
    async with db.connection() as conn:
        return [p.name for p in await alist_partitions(conn)]


async def collect(events: AsyncIterator[StoredEvent]) -> list[StoredEvent]:
    return [event async for event in events]


def key(events: list[StoredEvent]) -> list[tuple[int, int]]:
    return [(e.xid, e.position) for e in events]


async def old_partitions(db: DatabaseBlock) -> list[Partition]:
    async with db.connection() as conn:
        partitions = await alist_partitions(conn)
    cutoff = midnight(30)
    return [p for p in partitions if p.upper <= cutoff]


@pytest.fixture
def local_vault(tmp_path: Path) -> VaultBlock:
    return VaultBlock(provider="local", root=str(tmp_path / "archive-vault"))


@pytest.fixture(params=["local", "gcs"])
async def any_vault(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[VaultBlock]:
    block = make_vault(request.param, request, tmp_path)
    try:
        yield block
    finally:
        await block.aclose()


FILTERS: list[dict[str, Any]] = [
    {},
    {"event_types": ["video.ingested"]},
    {"entity_id": "line\nbreak"},
    {"entity_id": "video-3", "event_types": ["video.seen", "video.ingested"]},
    {"since": datetime(2026, 3, 20, tzinfo=UTC), "until": datetime(2026, 5, 1, tzinfo=UTC)},
    {"until": datetime(2026, 1, 2, tzinfo=UTC)},
    {"batch_size": 7},
    {"recorded_since": midnight(39) + timedelta(hours=2), "recorded_until": midnight(38)},
    {"recorded_since": midnight(38) + timedelta(hours=5)},
]


async def test_archive_verify_drop_and_replay_reads_the_archive(
    store: EventStore,
    db: DatabaseBlock,
    any_vault: VaultBlock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Three old partitions archived (several row groups each) and dropped; replay with the
    archive gives the same events in the same order, with every filter and cursor."""
    monkeypatch.setattr(archive_module, "ROW_GROUP_ROWS", 25)  # several row groups per file
    await seed(store, db)
    total = 20 * len(BATCH_DAYS) + 15
    before = await collect(store.replay())
    assert len(before) == total
    filtered_before = [await collect(store.replay(**f)) for f in FILTERS]
    # Every position of the log as a cursor: archived ones, the live ones, the boundaries.
    cursors = [e.position for e in before[::9]] + [before[-1].position]
    after_before = [await collect(store.replay(after_position=p)) for p in cursors]

    due = await old_partitions(db)
    assert [p.lower for p in due] == [midnight(40), midnight(39), midnight(38)]
    store.archive_vault = any_vault
    results = [await store.aarchive_partition(p) for p in due]
    assert [r.steps for r in results] == [
        ("exported", "stored", "verified", "recorded", "dropped")
    ] * 3
    assert sum(r.rows for r in results) == 20 * len(BATCH_DAYS)

    async with db.connection() as conn:
        left = {p.name for p in await alist_partitions(conn)}
    assert not left & {p.name for p in due}
    live = await collect(store.replay())
    assert len(live) == 15  # the table now holds only today's events

    after = await collect(store.replay(include_archive=True))
    assert after == before  # event by event: every field, the same order
    assert [type(e.event_id) for e in after] == [uuid.UUID] * total
    assert [e.occurred_at.utcoffset() for e in after] == [e.occurred_at.utcoffset() for e in before]
    for options, expected in zip(FILTERS, filtered_before, strict=True):
        assert await collect(store.replay(include_archive=True, **options)) == expected, options
    for position, expected in zip(cursors, after_before, strict=True):
        got = await collect(store.replay(include_archive=True, after_position=position))
        assert got == expected, position
    with pytest.raises(ValueError, match="not the position of a stored event"):
        await collect(store.replay(include_archive=True, after_position=10**9))

    # The files: zstd Parquet, row groups of ROW_GROUP_ROWS, a manifest that says what they hold.
    records = {r.partition_name: r for r in await store.alist_archives()}
    for partition, result in zip(due, results, strict=True):
        parquet_key, manifest_key = archive_keys(partition)
        assert parquet_key == f"events-archive/{partition.lower:%Y/%m/%d}/{partition.name}.parquet"
        assert (result.parquet_key, result.manifest_key) == (parquet_key, manifest_key)
        data = await any_vault.afetch_bytes(parquet_key)
        assert data is not None
        meta = pq.ParquetFile(io.BytesIO(data)).metadata
        assert meta.num_rows == result.rows
        assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [25] * (
            result.rows // 25
        ) + ([result.rows % 25] if result.rows % 25 else [])
        assert meta.row_group(0).column(0).compression == "ZSTD"
        manifest = await any_vault.afetch_json(manifest_key)
        record = records[partition.name]
        assert record.status == "dropped" and record.dropped_at is not None
        assert manifest == record.manifest()
        assert manifest["rows"] == result.rows and manifest["parquet"]["sha256"] == result.sha256
        assert manifest["range"] == {
            "lower": partition.lower.isoformat(),
            "upper": partition.upper.isoformat(),
        }
        in_file = pq.read_table(io.BytesIO(data)).to_pylist()
        firsts = (in_file[0]["xid"], in_file[0]["position"])
        lasts = (in_file[-1]["xid"], in_file[-1]["position"])
        assert (record.first, record.last) == (firsts, lasts)
    # The partitions' xid ranges interleave: the merge really had to interleave them.
    spans = sorted((r.first, r.last) for r in records.values() if r.first and r.last)
    assert len(spans) == 3 and any(a[1] > b[0] for a, b in itertools.pairwise(spans))

    # Running it again is a no-op that says so; a replay without the archive is unchanged.
    again = await store.aarchive_partition(due[0])
    assert again.steps == ("already dropped",) and again.dropped
    # Ids and versions stay exact after the drop: the same id stores nothing new.
    await store.aemit(
        before[0].event_type, before[0].entity_id, before[0].payload, event_id=before[0].event_id
    )
    assert len(await collect(store.replay())) == 15


async def test_empty_partition_is_archived_and_dropped(
    store: EventStore, db: DatabaseBlock, local_vault: VaultBlock
) -> None:
    async with db.connection() as conn:
        await aensure_partitions(conn, ahead=timedelta(0), now=midnight(45))
    (empty,) = await old_partitions(db)
    result = await aarchive_partition(db, local_vault, empty)
    assert result.rows == 0 and result.dropped
    (record,) = await store.alist_archives()
    assert (record.row_count, record.first, record.status) == (0, None, "dropped")
    store.archive_vault = local_vault
    assert await collect(store.replay(include_archive=True)) == []


class CorruptingVault(VaultBlock):
    """A vault whose Parquet writes are damaged: in transit, or on disk after the write."""

    # A block type of its own: the real VaultBlock stays the one saved blocks load as.
    _block_type_name = "Atlas Vault Corrupting Test"
    _block_type_slug = "atlas-vault-corrupting-test"

    def corrupt_in_transit(self) -> None:
        self.__dict__["_fault"] = "transit"

    def rot_on_disk(self) -> None:
        self.__dict__["_fault"] = "disk"

    async def astore_bytes(
        self,
        path: str,
        data: bytes,
        *,
        overwrite: bool = True,
        content_type: str = "application/octet-stream",
    ) -> str:
        """Store, damaging Parquet files as the chosen fault does."""
        fault = self.__dict__.get("_fault")
        parquet = path.endswith(".parquet")
        if parquet and fault == "transit":  # the vault gets bad bytes with a good checksum
            data = data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]
        key = await super().astore_bytes(path, data, overwrite=overwrite, content_type=content_type)
        if parquet and fault == "disk":  # bit rot after the write (the vault's checksum stays)
            file = self.local_root() / key
            raw = bytearray(file.read_bytes())
            raw[len(raw) // 2] ^= 0x01
            with open(file, "r+b") as handle:
                handle.write(raw)
        return key


@pytest.mark.parametrize("fault", ["transit", "disk"])
async def test_an_archive_that_does_not_verify_drops_nothing(
    store: EventStore, db: DatabaseBlock, tmp_path: Path, fault: str
) -> None:
    await seed(store, db)
    before = await collect(store.replay())
    due = await old_partitions(db)
    vault = CorruptingVault(provider="local", root=str(tmp_path / "bad-vault"))
    vault.corrupt_in_transit() if fault == "transit" else vault.rot_on_disk()
    with pytest.raises(ArchiveIntegrityError, match=due[0].name):
        await aarchive_partition(db, vault, due[0])
    async with db.connection() as conn:
        assert [p.name for p in await alist_partitions(conn)][:3] == [p.name for p in due]
    assert await store.alist_archives() == []
    assert await collect(store.replay()) == before
    # Once the fault is gone, the same partition archives and drops.
    good = VaultBlock(provider="local", root=str(tmp_path / "bad-vault"))
    result = await aarchive_partition(db, good, due[0])
    assert result.steps == ("exported", "stored", "verified", "recorded", "dropped")
    store.archive_vault = good
    assert await collect(store.replay(include_archive=True)) == before


async def test_corrupted_archive_is_refused_by_replay(
    store: EventStore, db: DatabaseBlock, local_vault: VaultBlock
) -> None:
    await seed(store, db)
    due = await old_partitions(db)
    store.archive_vault = local_vault
    result = await store.aarchive_partition(due[0])
    file = local_vault.local_root() / result.parquet_key
    damaged = file.read_bytes()[:-10] + b"0123456789"
    file.write_bytes(damaged)  # in place: the vault's own checksum catches it
    with pytest.raises(ArchiveIntegrityError, match="is corrupt"):
        await collect(store.replay(include_archive=True))
    copy = file.with_name("copy.tmp")
    copy.write_bytes(damaged)
    os.replace(copy, file)  # a new file without the vault's checksum: the recorded sha256 does
    with pytest.raises(ArchiveIntegrityError, match="recorded"):
        await collect(store.replay(include_archive=True))


def _wait_for(predicate: Any, what: str, timeout: float = 120.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _waiting_on_lock(url: str, app: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
            "AND wait_event_type = 'Lock'",
            [app],
        ).fetchone()
        return bool(row and row[0])


def _terminate(url: str, app: str) -> None:
    """The server ends the killed child's sessions (an orphan keeps waiting otherwise)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            [app],
        )


@pytest.fixture
def child_env() -> dict[str, str]:
    app = f"atlas-archive-child-{uuid.uuid4().hex[:8]}"
    return {**os.environ, "PYTHONPATH": str(ROOT), "PGAPPNAME": app}


@pytest.mark.parametrize("blocked", ["record", "drop"])
async def test_a_killed_archive_resumes(
    store: EventStore,
    db: DatabaseBlock,
    database_url: str,
    local_vault: VaultBlock,
    child_env: dict[str, str],
    blocked: str,
) -> None:
    """SIGKILL of the archiving process after its upload and before its drop; the next run
    resumes: files without a record are archived again, a recorded archive is re-verified."""
    await seed(store, db)
    before = await collect(store.replay())
    target = (await old_partitions(db))[1]
    app = child_env["PGAPPNAME"]
    holder = psycopg.connect(database_url)
    # A lock the step after the upload needs: the record's INSERT (SHARE on the archive
    # table), or the drop's DETACH (SHARE on the parent table only).
    statement = (
        "LOCK TABLE atlas.event_archives IN SHARE MODE"
        if blocked == "record"
        else "LOCK TABLE ONLY atlas.events IN SHARE MODE"
    )
    holder.execute(statement)
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.events._archive_child",
            database_url,
            str(local_vault.local_root()),
            target.name,
        ],
        env=child_env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:

        def blocked_or_gone() -> bool:
            if child.poll() is not None:
                out, err = child.communicate()
                raise AssertionError(f"the child ended early ({child.returncode}): {out!r} {err!r}")
            return _waiting_on_lock(database_url, app)

        await asyncio.to_thread(_wait_for, blocked_or_gone, "the child to wait on the lock")
        parquet_key, manifest_key = archive_keys(target)
        assert await local_vault.aexists(parquet_key) and await local_vault.aexists(manifest_key)
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=60) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
        _terminate(database_url, app)
        holder.rollback()
        holder.close()
    records = await store.alist_archives()
    async with db.connection() as conn:
        assert target.name in {p.name for p in await alist_partitions(conn)}
    if blocked == "record":
        assert records == []  # stored, never recorded
    else:
        assert [(r.partition_name, r.status) for r in records] == [(target.name, "verified")]
    assert await collect(store.replay()) == before  # nothing lost, nothing dropped

    result = await aarchive_partition(db, local_vault, target)
    expected = (
        ("exported", "stored", "verified", "recorded", "dropped")
        if blocked == "record"
        else ("reverified", "dropped")
    )
    assert result.steps == expected
    store.archive_vault = local_vault
    assert await collect(store.replay(include_archive=True)) == before


async def test_replay_during_a_recorded_but_not_dropped_archive_has_no_duplicates(
    store: EventStore, db: DatabaseBlock, local_vault: VaultBlock
) -> None:
    await seed(store, db)
    before = await collect(store.replay())
    store.archive_vault = local_vault
    for partition in await old_partitions(db):
        result = await store.aarchive_partition(partition, drop=False)
        assert result.steps == ("exported", "stored", "verified", "recorded")
    assert {r.status for r in await store.alist_archives()} == {"verified"}
    assert await collect(store.replay(include_archive=True)) == before
    assert await collect(store.replay()) == before


async def test_a_partition_written_after_its_archive_is_archived_again(
    store: EventStore, db: DatabaseBlock, local_vault: VaultBlock
) -> None:
    await seed(store, db)
    target = (await old_partitions(db))[0]
    first = await aarchive_partition(db, local_vault, target, drop=False)
    extra = await store.aemit("video.seen", "late", {"late": True})
    await db.aexecute(
        "UPDATE atlas.events SET recorded_at = %s WHERE event_id = %s",
        [target.lower + timedelta(hours=5), extra],
    )
    second = await aarchive_partition(db, local_vault, target)
    assert second.steps == (
        "stale record",
        "exported",
        "stored",
        "verified",
        "recorded",
        "dropped",
    )
    assert second.rows == first.rows + 1


async def test_a_partition_an_open_transaction_may_still_write_is_refused(
    store: EventStore, db: DatabaseBlock, database_url: str, local_vault: VaultBlock
) -> None:
    await seed(store, db)
    target = (await old_partitions(db))[0]
    with psycopg.connect(database_url) as old:
        old.execute("SELECT 1")
        # An open transaction whose start is before the partition's end (as if it began then).
        row = old.execute("SELECT now()").fetchone()
        assert row is not None
        refused = Partition(target.name, target.lower, row[0] + timedelta(seconds=1))
        with pytest.raises(ArchiveError, match="not closed"):
            await aarchive_partition(db, local_vault, refused)
        old.rollback()
    assert await store.alist_archives() == []


# ---------------------------------------------------------------------------- the flow


@pytest.fixture
async def alerts(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Any]:
    server = DiscordServer().start()
    hook = server.add_webhook()
    name = f"alerts-{uuid.uuid4().hex[:8]}"
    await DiscordBlock(
        allowed_hosts=["127.0.0.1"], alerts=SecretStr(server.url(hook)), env_tag="[test]"
    ).asave(name)
    monkeypatch.setenv(BLOCK_ENV, name)
    try:
        yield hook
    finally:
        server.stop()


async def test_maintenance_flow_archives_old_partitions_and_alerts_on_failure(
    store: EventStore,
    db: DatabaseBlock,
    database_url: str,
    tmp_path: Path,
    alerts: Any,
) -> None:
    from prefect_atlas.flows import event_maintenance

    await seed(store, db)
    before = await collect(store.replay())
    due_names = [p.name for p in await old_partitions(db)]
    name = f"maint-{uuid.uuid4().hex[:8]}"
    await DatabaseBlock(url=SecretStr(database_url)).asave(name, overwrite=True)
    broken_root = tmp_path / "broken-vault"
    broken_root.mkdir()
    (broken_root / "events-archive").write_text("a file where the archive folder must be")
    await VaultBlock(provider="local", root=str(broken_root)).asave(name, overwrite=True)

    state = await event_maintenance(database=name, vault=name, retention_days=30, return_state=True)
    assert state.is_failed()
    assert len(alerts.received) == 1
    embed = alerts.received[0]["embeds"][0]
    print("alert:", embed["title"], embed["description"], sep="\n")
    assert embed["title"].startswith("[test] Flow event-maintenance failed")
    assert "ArchiveError" in embed["description"] and due_names[0] in embed["description"]
    due = await old_partitions(db)
    assert len(due) == 3  # everything in place
    assert await store.alist_archives() == []
    assert await collect(store.replay()) == before

    good_root = tmp_path / "good-vault"
    await VaultBlock(provider="local", root=str(good_root)).asave(name, overwrite=True)
    summary = await event_maintenance(database=name, vault=name, retention_days=30)
    assert [a["partition"] for a in summary["archived"]] == [p.name for p in due]
    assert sum(a["rows"] for a in summary["archived"]) == 20 * len(BATCH_DAYS)
    assert await old_partitions(db) == []
    async with db.connection() as conn:
        partitions = await alist_partitions(conn)
    assert partitions[-1].lower >= midnight(-7)  # a week ahead exists
    assert [e["embeds"][0]["title"] for e in alerts.received][1].startswith("[test] Resolved")
    store.archive_vault = VaultBlock(provider="local", root=str(good_root))
    assert await collect(store.replay(include_archive=True)) == before

    # Nothing due: the next run only makes sure partitions exist ahead.
    again = await event_maintenance(database=name, vault=name, retention_days=30)
    assert again["archived"] == [] and again["created"] == []


async def test_a_running_archive_replay_holds_off_the_drop(
    store: EventStore, db: DatabaseBlock, local_vault: VaultBlock
) -> None:
    """A replay reading archives holds the archive lock: a drop meanwhile waits, gives up after
    its lock timeout with the archive recorded, and the next run drops; the replay sees every
    event once."""
    await seed(store, db)
    before = await collect(store.replay())
    store.archive_vault = local_vault
    target = (await old_partitions(db))[0]
    reading = store.replay(include_archive=True, batch_size=5)
    first = [await anext(reading)]  # the replay is under way: it holds the lock now
    with pytest.raises(ArchiveError, match="not dropped"):
        await aarchive_partition(db, local_vault, target, lock_timeout=1.0)
    (record,) = await store.alist_archives()
    assert record.status == "verified"
    rest = [event async for event in reading]
    assert first + rest == before
    result = await aarchive_partition(db, local_vault, target)
    assert result.steps == ("reverified", "dropped")
    assert await collect(store.replay(include_archive=True)) == before


async def test_one_archiver_per_partition(
    store: EventStore, db: DatabaseBlock, database_url: str, local_vault: VaultBlock
) -> None:
    await seed(store, db)
    target = (await old_partitions(db))[0]
    with psycopg.connect(database_url) as other:  # another run, mid-way through this partition
        other.execute(
            "SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
            [archive_module._PARTITION_LOCK_CLASS, target.name],
        )
        with pytest.raises(ArchiveError, match="being archived by another run"):
            await aarchive_partition(db, local_vault, target)
        other.rollback()
    assert await store.alist_archives() == []
    assert (await aarchive_partition(db, local_vault, target)).dropped


async def test_rows_parquet_cannot_hold_stop_the_archive(
    store: EventStore, db: DatabaseBlock, local_vault: VaultBlock
) -> None:
    """A value written by SQL that the archive's types cannot hold ('infinity') stops the
    export before anything is stored; the partition stays."""
    await seed(store, db)
    target = (await old_partitions(db))[0]
    await db.aexecute(
        "UPDATE atlas.events SET occurred_at = 'infinity' WHERE position = "
        "(SELECT min(position) FROM atlas.events WHERE recorded_at < %s)",
        [target.upper],
    )
    with pytest.raises(ArchiveError, match=f"partition {target.name} holds rows that cannot"):
        await aarchive_partition(db, local_vault, target)
    assert await local_vault.alist_objects("events-archive") == []
    assert await store.alist_archives() == []
    assert target in await old_partitions(db)


def test_retention_days_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from prefect_atlas.settings import AtlasSettings

    for name in ("ATLAS_EVENT_RETENTION_DAYS", "COMPLIANCE_MODE"):
        monkeypatch.delenv(name, raising=False)
    assert AtlasSettings().retention_days is None
    monkeypatch.setenv("COMPLIANCE_MODE", "true")
    assert AtlasSettings().retention_days == 30
    monkeypatch.setenv("ATLAS_EVENT_RETENTION_DAYS", "7")
    assert AtlasSettings().retention_days == 7
    monkeypatch.setenv("ATLAS_EVENT_RETENTION_DAYS", "90")
    with pytest.raises(ValidationError, match="longer than COMPLIANCE_MODE allows"):
        AtlasSettings()
    monkeypatch.setenv("COMPLIANCE_MODE", "false")
    assert AtlasSettings().retention_days == 90
    monkeypatch.setenv("ATLAS_EVENT_RETENTION_DAYS", "0")
    with pytest.raises(ValidationError, match="atlas_event_retention_days"):
        AtlasSettings()
