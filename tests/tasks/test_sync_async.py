"""Every shipped task runs from a ``def`` flow and from an ``async def`` flow.

Each task is called directly, with ``.submit()`` and with ``.map()`` in both kinds of flow;
the tests check what the calls did (rows in PostgreSQL, events in the log, objects on disk,
task runs in the Prefect API), not only what they returned.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, cast

import psycopg
import pytest
from prefect import Task, flow, get_client, unmapped
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import TERMINAL_STATES as TERMINAL
from prefect.client.schemas.objects import StateType
from prefect.runtime import flow_run
from pydantic import SecretStr

from prefect_atlas import DatabaseBlock, VaultBlock
from prefect_atlas.tasks import (
    emit_event,
    emit_events,
    store_batch,
    store_json,
    system_health_check,
    upsert_rows,
)
from prefect_atlas.tasks._dual import DualTask, dual_task

Kind = Literal["def", "async def"]
KINDS: list[Kind] = ["def", "async def"]
SHIPPED = [emit_event, emit_events, upsert_rows, store_json, store_batch, system_health_check]


def run_in_flow(
    kind: Kind, direct: Callable[[], Any], fanout: Callable[[], list[Any]]
) -> tuple[Any, list[Any], uuid.UUID]:
    """Run ``direct()`` (one direct task call) and ``fanout()`` (``.submit()``/``.map()``) in a
    ``def`` or an ``async def`` flow; returns their results and the flow run's id.

    In the ``def`` flow the direct call must return the result itself; in the ``async def``
    flow it must return an awaitable (never run on, and block, the flow's loop).
    """
    if kind == "def":

        @flow(name="sync-caller")
        def sync_caller() -> tuple[Any, list[Any], uuid.UUID]:
            result = direct()
            assert not inspect.isawaitable(result), "a def flow got a coroutine"
            return result, fanout(), uuid.UUID(str(flow_run.get_id()))

        return sync_caller()

    @flow(name="async-caller")
    async def async_caller() -> tuple[Any, list[Any], uuid.UUID]:
        pending = direct()
        assert inspect.isawaitable(pending), "an async def flow must get an awaitable"
        return await pending, fanout(), uuid.UUID(str(flow_run.get_id()))

    return asyncio.run(async_caller())


def task_runs(flow_run_id: uuid.UUID) -> Counter[tuple[str, StateType | None]]:
    """The flow run's task runs, counted by (name, state type).

    Task-run states reach the API as events, a moment after the run: wait (60 s at most)
    until none is still pending or running.
    """
    deadline = time.monotonic() + 60
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
            counts = Counter((run.name, run.state.type if run.state else None) for run in runs)
            if time.monotonic() > deadline or all(state in TERMINAL for _, state in counts):
                return counts
            time.sleep(0.2)


def names(counts: Counter[tuple[str, StateType | None]]) -> Counter[str]:
    assert {state for _, state in counts} == {StateType.COMPLETED}, counts
    out: Counter[str] = Counter()
    for (name, _), n in counts.items():
        out[name] += n
    return out


@pytest.fixture
def block(database_url: str) -> Iterator[DatabaseBlock]:
    """A migrated database; the pools every loop opened on it are closed afterwards."""
    db = DatabaseBlock(url=SecretStr(database_url), timeout=10)
    db.setup()
    try:
        yield db
    finally:
        db.close()


def events_in_log(database_url: str) -> list[tuple[str, str, str]]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT event_id::text, event_type, entity_id FROM atlas.events ORDER BY position"
        ).fetchall()
    return [(str(a), str(b), str(c)) for a, b, c in rows]


# -- the task objects ------------------------------------------------------------------------


@pytest.mark.parametrize("shipped", SHIPPED, ids=lambda t: t.name)
def test_each_shipped_task_is_one_dual_prefect_task(shipped: Task[Any, Any]) -> None:
    assert isinstance(shipped, DualTask) and isinstance(shipped, Task)
    assert shipped.isasync and inspect.iscoroutinefunction(shipped.fn)
    assert shipped.cache_policy is NO_CACHE


def test_options_survive_and_with_options_stays_dual() -> None:
    assert (store_json.name, store_json.retries, store_json.retry_delay_seconds) == (
        "atlas-vault-store-json",
        3,
        [1, 5, 15],
    )
    assert (upsert_rows.name, upsert_rows.retries, upsert_rows.task_run_name) == (
        "upsert-rows",
        0,
        "upsert into {table}",
    )
    renamed = emit_event.with_options(name="emit-renamed", retries=2)
    assert isinstance(renamed, DualTask)
    assert (renamed.name, renamed.retries, renamed.task_run_name) == (
        "emit-renamed",
        2,
        "emit {event_type}",
    )
    assert renamed.cache_policy is NO_CACHE and renamed.fn is emit_event.fn


def test_dual_task_refuses_a_sync_function() -> None:
    def plain() -> None:
        return None

    with pytest.raises(TypeError, match="async def"):
        dual_task(name="x")(plain)  # type: ignore[arg-type]


# -- events ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_emit_event_direct_submit_and_map(
    kind: Kind, block: DatabaseBlock, database_url: str
) -> None:
    result, fanned, run_id = run_in_flow(
        kind,
        lambda: emit_event("video.seen", "direct", {"how": "direct"}, database=block),
        lambda: [
            emit_event.submit(
                "video.seen", "submitted", {"how": "submit"}, database=block
            ).result(),
            *emit_event.map(
                "video.seen",
                ["m1", "m2", "m3"],
                [{"i": i} for i in range(3)],
                database=unmapped(block),
            ).result(),
        ],
    )
    ids = [str(result), *map(str, fanned)]
    log = events_in_log(database_url)
    assert len(log) == 5 and len({row[0] for row in log}) == 5
    assert sorted(row[0] for row in log) == sorted(ids)
    assert sorted(row[2] for row in log) == ["direct", "m1", "m2", "m3", "submitted"]
    assert names(task_runs(run_id)) == Counter({"emit video.seen": 5})


@pytest.mark.parametrize("kind", KINDS)
def test_emit_events_direct_submit_and_map(
    kind: Kind, block: DatabaseBlock, database_url: str
) -> None:
    def batch(tag: str, n: int) -> list[dict[str, Any]]:
        return [{"event_type": "video.tagged", "entity_id": f"{tag}-{i}"} for i in range(n)]

    result, fanned, run_id = run_in_flow(
        kind,
        lambda: emit_events(batch("direct", 3), database=block),
        lambda: [
            emit_events.submit(batch("submit", 2), database=block).result(),
            *emit_events.map(
                [batch("map-a", 2), batch("map-b", 1)], database=unmapped(block)
            ).result(),
        ],
    )
    returned = [str(i) for ids in [result, *fanned] for i in ids]
    log = events_in_log(database_url)
    assert len(log) == 8 and len({row[0] for row in log}) == 8
    assert sorted(row[0] for row in log) == sorted(returned)
    assert Counter(row[2].rsplit("-", 1)[0] for row in log) == Counter(
        {"direct": 3, "submit": 2, "map-a": 2, "map-b": 1}
    )
    counts = names(task_runs(run_id))
    assert sum(counts.values()) == 4
    assert all(name.startswith("emit-events") for name in counts)


def test_a_def_flow_can_emit_the_same_event_id_twice_and_store_it_once(
    block: DatabaseBlock, database_url: str
) -> None:
    event_id = uuid.uuid4()
    event = {"event_type": "video.ingested", "entity_id": "v1", "event_id": event_id}

    @flow
    def twice() -> list[list[uuid.UUID]]:
        first = cast(list[uuid.UUID], emit_events([event], database=block))
        return [first, cast(list[uuid.UUID], emit_events([event], database=block))]

    assert twice() == [[event_id], [event_id]]
    assert events_in_log(database_url) == [(str(event_id), "video.ingested", "v1")]


# -- rows ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_upsert_rows_direct_submit_and_map(
    kind: Kind, block: DatabaseBlock, database_url: str
) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.seen (k TEXT PRIMARY KEY, v INT NOT NULL)")

    def rows(*pairs: tuple[str, int]) -> list[dict[str, Any]]:
        return [{"k": k, "v": v} for k, v in pairs]

    result, fanned, run_id = run_in_flow(
        kind,
        lambda: upsert_rows(
            "public.seen", rows(("a", 1), ("b", 2)), key_columns=["k"], database=block
        ),
        lambda: [
            upsert_rows.submit(
                "public.seen", rows(("b", 20), ("c", 3)), key_columns=["k"], database=block
            ).result(),
            *upsert_rows.map(
                "public.seen",
                [rows(("d", 4)), rows(("e", 5), ("a", 10))],
                key_columns=unmapped(["k"]),
                database=unmapped(block),
            ).result(),
        ],
    )
    assert [result, *fanned] == [2, 2, 1, 2]
    with psycopg.connect(database_url) as conn:
        stored = conn.execute("SELECT k, v FROM public.seen ORDER BY k").fetchall()
    assert stored == [("a", 10), ("b", 20), ("c", 3), ("d", 4), ("e", 5)]
    assert names(task_runs(run_id)) == Counter({"upsert into public.seen": 4})


def test_a_def_flow_sees_a_task_error(block: DatabaseBlock) -> None:
    @flow
    def bad() -> int:
        # type checkers see the async signature; in a def flow the call returns the result
        return cast(int, upsert_rows("t", [{"k": 1}], key_columns=["nope"], database=block))

    with pytest.raises(ValueError, match=r"key_columns \['nope'\]"):
        bad()


# -- vault -----------------------------------------------------------------------------------


def on_disk(root: Path) -> dict[str, Any]:
    return {
        str(p.relative_to(root)): json.loads(p.read_text())
        for p in root.rglob("*.json")
        if ".atlas" not in p.parts
    }


@pytest.mark.parametrize("kind", KINDS)
def test_store_json_and_store_batch_direct_submit_and_map(kind: Kind, tmp_path: Path) -> None:
    root = tmp_path / "vault"
    vault = VaultBlock(root=str(root))
    result, fanned, run_id = run_in_flow(
        kind,
        lambda: store_json(vault, "direct/a.json", {"a": 1}),
        lambda: [
            store_json.submit(vault, "submit/b.json", {"b": 2}).result(),
            *store_json.map(
                unmapped(vault), ["map/c.json", "map/d.json"], [{"c": 3}, {"d": 4}]
            ).result(),
            store_batch.submit(vault, [("batch/e.json", {"e": 5})]).result(),
            *store_batch.map(
                unmapped(vault), [[("batch/f.json", {"f": 6})], [("batch/g.json", {"g": 7})]]
            ).result(),
        ],
    )
    assert [result, *fanned] == [
        "direct/a.json",
        "submit/b.json",
        "map/c.json",
        "map/d.json",
        ["batch/e.json"],
        ["batch/f.json"],
        ["batch/g.json"],
    ]
    assert on_disk(root) == {
        "direct/a.json": {"a": 1},
        "submit/b.json": {"b": 2},
        "map/c.json": {"c": 3},
        "map/d.json": {"d": 4},
        "batch/e.json": {"e": 5},
        "batch/f.json": {"f": 6},
        "batch/g.json": {"g": 7},
    }
    counts = names(task_runs(run_id))
    assert sum(counts.values()) == 7
    assert sum(n for name, n in counts.items() if name.startswith("atlas-vault-store-json")) == 4
    assert sum(n for name, n in counts.items() if name.startswith("atlas-vault-store-batch")) == 3


# -- health ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_system_health_check_direct_and_submit(
    kind: Kind, block: DatabaseBlock, tmp_path: Path
) -> None:
    from prefect_atlas import DiscordBlock
    from prefect_atlas.health import SystemHealth
    from tests.discord._server import DiscordServer

    server = DiscordServer().start()
    try:
        hook = server.add_webhook()
        discord = DiscordBlock(allowed_hosts=["127.0.0.1"], alerts=SecretStr(server.url(hook)))
        vault = VaultBlock(root=str(tmp_path / "v"))
        result, fanned, run_id = run_in_flow(
            kind,
            lambda: system_health_check(block, vault, discord),
            lambda: [system_health_check.submit(block, vault, discord).result()],
        )
        discord.close()
    finally:
        server.stop()
    for report in (result, *fanned):
        assert isinstance(report, SystemHealth)
        assert report.ok, report.table()
        assert [c.component for c in report.components] == [
            "database",
            "event spool",
            "vault",
            "discord",
        ]
    assert hook.received == []
    counts = names(task_runs(run_id))
    assert sum(counts.values()) == 2
    assert all(name.startswith("atlas-system-health-check") for name in counts)
