"""Versioned schema migrations, applied once each, in order, safely under concurrency.

Migrations are the SQL files ``NNNN_name.sql`` shipped in ``prefect_atlas/database/sql``.
``apply_migrations`` holds a PostgreSQL advisory lock for the whole run, so two workers
calling ``setup()`` at the same moment serialize: the second finds everything applied and
does nothing. Each migration runs in its own transaction together with the row that records
it, so a failure leaves no half-applied migration behind. The checksum of every applied
migration is compared with the shipped file: an edited migration is an error, not a silent
divergence between databases.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from prefect_atlas.exceptions import MigrationError

if TYPE_CHECKING:
    from psycopg import AsyncConnection

    from prefect_atlas.database.block import DatabaseBlock

logger = logging.getLogger("prefect_atlas.database")

SCHEMA = "atlas"
# An arbitrary, stable 64-bit key: "ATLAS" in ASCII. Shared by every prefect-atlas version.
ADVISORY_LOCK_KEY = 0x41544C4153
_FILE_RE = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    """One shipped migration file."""

    version: int
    """The schema version it brings the database to (the file's number)."""
    name: str
    """The name after the number, such as ``core`` for ``0001_core.sql``."""
    sql: str
    """The SQL it runs, in one transaction."""

    @property
    def checksum(self) -> str:
        """SHA-256 of the SQL, recorded when applied: a shipped file changed since fails setup."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


def shipped_migrations() -> list[Migration]:
    """The migrations shipped with the package, ordered by version."""
    found: list[Migration] = []
    for entry in resources.files("prefect_atlas.database.sql").iterdir():
        match = _FILE_RE.match(entry.name)
        if match:
            found.append(
                Migration(int(match["version"]), match["name"], entry.read_text(encoding="utf-8"))
            )
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two shipped migrations share a version number: {versions}")
    return found


async def apply_migrations(
    conn: AsyncConnection[Any], *, _up_to: int | None = None
) -> list[Migration]:
    """Bring the schema up to date on ``conn`` (an autocommit connection).

    Returns the migrations applied by this call; an empty list means the schema was
    already current. Then the event log's partitions are created ahead (see
    ``docs/events.md``, "Partitions"), on every call. ``_up_to`` (tests of migrations only)
    stops after that version, as an older release would have left the database.
    """
    from psycopg import sql  # on first use: psycopg is heavy to import

    if not conn.autocommit:
        raise MigrationError("apply_migrations needs an autocommit connection")
    migrations = shipped_migrations()
    if _up_to is not None:
        migrations = [m for m in migrations if m.version <= _up_to]
    await conn.execute("SELECT pg_advisory_lock(%s)", [ADVISORY_LOCK_KEY])
    try:
        await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(SCHEMA)))
        await conn.execute(
            sql.SQL(
                """
                CREATE TABLE IF NOT EXISTS {}.schema_migrations (
                    version    INTEGER PRIMARY KEY,
                    name       TEXT NOT NULL,
                    checksum   TEXT NOT NULL,
                    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
                )
                """
            ).format(sql.Identifier(SCHEMA))
        )
        cur = await conn.execute(
            sql.SQL("SELECT version, checksum FROM {}.schema_migrations").format(
                sql.Identifier(SCHEMA)
            )
        )
        applied = {int(version): str(checksum) for version, checksum in await cur.fetchall()}
        shipped = {m.version: m for m in migrations}
        for version, checksum in sorted(applied.items()):
            migration = shipped.get(version)
            if migration is None:
                raise MigrationError(
                    f"the database has migration {version:04d} applied, which this version of "
                    "prefect-atlas does not ship: the database was set up by a newer release. "
                    "Upgrade prefect-atlas."
                )
            if migration.checksum != checksum:
                raise MigrationError(
                    f"migration {version:04d}_{migration.name} was changed after it was applied "
                    "(checksum mismatch). Ship schema changes as a new migration file instead."
                )
        newest = max(applied, default=0)
        late = [m for m in migrations if m.version not in applied and m.version < newest]
        if late:
            names = ", ".join(f"{m.version:04d}_{m.name}" for m in late)
            raise MigrationError(
                f"migration(s) {names} are older than the newest applied one ({newest:04d}) but "
                "were never applied: applying them out of order could break the schema. Renumber "
                "them after the newest applied migration."
            )
        done: list[Migration] = []
        for migration in migrations:
            if migration.version in applied:
                continue
            try:
                async with conn.transaction():
                    await conn.execute(migration.sql.encode())
                    await conn.execute(
                        sql.SQL(
                            "INSERT INTO {}.schema_migrations (version, name, checksum) "
                            "VALUES (%s, %s, %s)"
                        ).format(sql.Identifier(SCHEMA)),
                        [migration.version, migration.name, migration.checksum],
                    )
            except MigrationError:
                raise
            except Exception as exc:
                raise MigrationError(
                    f"migration {migration.version:04d}_{migration.name} failed and was rolled "
                    f"back: {exc}"
                ) from exc
            done.append(migration)
        await _ensure_event_partitions(conn)
        return done
    finally:
        if not conn.closed:
            await conn.execute("SELECT pg_advisory_unlock(%s)", [ADVISORY_LOCK_KEY])


async def _ensure_event_partitions(conn: AsyncConnection[Any]) -> None:
    """Create the event log's partitions ahead (from migration 0008 on; a no-op before)."""
    cur = await conn.execute("SELECT to_regproc('atlas.ensure_event_partitions') IS NOT NULL")
    row = await cur.fetchone()
    if not (row and row[0]):
        return
    try:
        async with conn.transaction():
            # Waits at most 5 s for the locks of an attach: the DEFAULT partition takes the
            # rows of a missing day meanwhile, and the next setup() or maintenance run retries.
            await conn.execute("SET LOCAL lock_timeout = '5s'")
            await conn.execute("SELECT count(*) FROM atlas.ensure_event_partitions()")
    except psycopg.errors.LockNotAvailable as exc:
        logger.warning("event log partitions not created ahead this time (%s)", exc)


async def setup_database(db: DatabaseBlock) -> list[Migration]:
    """``db.asetup()``: apply pending migrations over a direct autocommit connection to the
    primary; returns those applied (empty when up to date)."""
    import psycopg

    conninfo = (await db._loop_pools()).primary.conninfo
    try:
        conn = await psycopg.AsyncConnection.connect(str(conninfo), autocommit=True)
    except psycopg.OperationalError as exc:
        raise db._connection_error(str(conninfo), exc) from None
    async with conn:
        applied = await apply_migrations(conn)
    if applied:
        logger.info(
            "applied %d migration(s) to %s: %s",
            len(applied),
            db.describe(),
            ", ".join(f"{m.version:04d}_{m.name}" for m in applied),
        )
    return applied
