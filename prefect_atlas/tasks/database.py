"""Prefect tasks that write rows to PostgreSQL.

Why a task and not only the block: a pipeline step that writes rows that must land shows up
in the Prefect UI with a readable name, and takes "a block name or a block" so a flow can pass
either. Writes are never cached (``NO_CACHE``): a cached result would skip the write on the
next run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from prefect.cache_policies import NO_CACHE
from psycopg import sql

from prefect_atlas._blocks import resolve_block
from prefect_atlas.database import DatabaseBlock
from prefect_atlas.resilience import retrying
from prefect_atlas.tasks._dual import dual_task

UPSERT_BATCH = 1000


def _check_identifier(name: object, what: str) -> str:
    """A column or table name we can quote safely, or an error naming it and the fix.

    Why refuse NUL: PostgreSQL truncates an identifier at a NUL, so ``"a\x00zzz"`` would
    write column ``a``. Why refuse ``%``: psycopg reads it as a placeholder in the composed
    statement. Neither belongs in a real column name.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"{what} must be a non-empty string, got {name!r}")
    if "\x00" in name:
        raise ValueError(
            f"{what} {name!r} contains a NUL character, which PostgreSQL identifiers cannot hold"
        )
    if "%" in name:
        raise ValueError(
            f"{what} {name!r} contains '%', which is not "
            "allowed in identifiers here: rename the column"
        )
    if len(name.encode()) > 63:
        raise ValueError(f"{what} {name!r} is longer than PostgreSQL's 63-byte identifier limit")
    return name


def _table_identifier(table: str) -> sql.Identifier:
    parts = table.split(".") if isinstance(table, str) else [table]
    if not 1 <= len(parts) <= 2 or not all(parts):
        raise ValueError(f"table must be 'name' or 'schema.name', got {table!r}")
    return sql.Identifier(*(_check_identifier(p, "table name part") for p in parts))


@dual_task(
    name="upsert-rows", task_run_name="upsert into {table}", cache_policy=NO_CACHE, retries=0
)
async def upsert_rows(
    table: str,
    rows: Sequence[Mapping[str, Any]],
    *,
    key_columns: Sequence[str],
    database: str | DatabaseBlock = "default",
) -> int:
    """``INSERT … ON CONFLICT (key_columns) DO UPDATE`` in batches; returns the rows written.

    Identifiers are quoted; each batch of 1,000 rows is one transaction, retried with
    exponential backoff and jitter on transient errors only (connection loss, serialization
    failure, deadlock) — never on constraint violations or bad SQL, which fail at once.
    """
    if isinstance(key_columns, str | bytes):
        raise TypeError(
            "key_columns must be a list of column names, not "
            f"a string: write key_columns=[{key_columns!r}]"
        )
    if not rows:
        return 0
    if not key_columns:
        raise ValueError(
            "key_columns must name the unique or primary key columns, for example ['video_id']"
        )
    columns = [_check_identifier(c, "column") for c in rows[0]]
    for column in key_columns:
        _check_identifier(column, "key column")
    for index, row in enumerate(rows):
        if list(row) != columns and set(row) != set(columns):
            raise ValueError(
                f"rows[{index}] has columns {sorted(row)}, expected {sorted(columns)} like rows[0]"
            )
    missing = [c for c in key_columns if c not in columns]
    if missing:
        raise ValueError(f"key_columns {missing} are not columns of the rows ({columns})")
    updates = [c for c in columns if c not in key_columns]
    action = (
        sql.SQL("DO UPDATE SET {}").format(
            sql.SQL(", ").join(
                sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in updates
            )
        )
        if updates
        else sql.SQL("DO NOTHING")
    )
    statement = sql.SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) {}").format(
        _table_identifier(table),
        sql.SQL(", ").join(map(sql.Identifier, columns)),
        sql.SQL(", ").join(sql.Placeholder() * len(columns)),
        sql.SQL(", ").join(map(sql.Identifier, key_columns)),
        action,
    )
    db = await resolve_block(DatabaseBlock, database)

    @retrying(attempts=5, wait_initial=0.1, wait_max=5.0)
    async def write(batch: Sequence[Mapping[str, Any]]) -> None:
        await db.aexecute_many(statement, [[row[c] for c in columns] for row in batch])

    for start in range(0, len(rows), UPSERT_BATCH):
        await write(rows[start : start + UPSERT_BATCH])
    return len(rows)
