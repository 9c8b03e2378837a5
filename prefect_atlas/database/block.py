"""``DatabaseBlock``: Atlas's PostgreSQL hot index as a Prefect block.

The block is configuration (what the Prefect UI edits and what is saved on the server);
the connection pools are runtime state owned by the process runtime (``prefect_atlas._runtime``),
keyed by the block's settings and created lazily per event loop (see ``_pools``); they are never
saved, pickled or copied, and every instance with the same settings shares them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, LiteralString, Self, Union

from prefect.blocks.abstract import DatabaseBlock as AbstractDatabaseBlock
from pydantic import (
    ConfigDict,
    Field,
    HttpUrl,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)

from prefect_atlas import _runtime
from prefect_atlas._blocks import CopySafe, docs_url, logo_url
from prefect_atlas._dispatch import in_async_context, run_sync, sync_or_await
from prefect_atlas._loops import PerLoop
from prefect_atlas._redact import describe_conninfo, redact_text
from prefect_atlas.database import _cursors, _embedded
from prefect_atlas.database._conninfo import (
    build_conninfo,
    check_conninfo,
    connection_error,
    conninfo_secrets,
)
from prefect_atlas.database._pools import (
    REPLICA_COOLDOWN_SECONDS,
    LoopPools,
    PoolUser,
    checkout,
    open_loop_pools,
    release,
)
from prefect_atlas.database.health import HealthReport, PoolStats, check_database, pool_stats
from prefect_atlas.database.migrations import Migration, setup_database
from prefect_atlas.exceptions import DatabaseConnectionError

if TYPE_CHECKING:
    # psycopg loads with the first connection, not with `import prefect_atlas`.
    from psycopg import AsyncConnection, sql

logger = logging.getLogger("prefect_atlas.database")

# Parameterized SQL only: a literal string (type checkers reject an f-string here), or a
# statement composed with psycopg.sql (named as strings: psycopg is not imported yet).
Query = Union[LiteralString, bytes, "sql.SQL", "sql.Composed"]
Params = Sequence[Any] | Mapping[str, Any] | None
ParamSet = Sequence[Any] | Mapping[str, Any]
Row = tuple[Any, ...]

__all__ = ["REPLICA_COOLDOWN_SECONDS", "DatabaseBlock", "ParamSet", "Params", "Query", "Row"]


class DatabaseBlock(CopySafe, AbstractDatabaseBlock):
    """A PostgreSQL database for Atlas: a pooled async psycopg 3 client with migrations.

    Leave ``url`` empty (``SecretStr("")``, the default; ``None`` is accepted) to use an
    embedded PostgreSQL under ``$ATLAS_HOME`` (needs the ``[embedded]`` extra), which is how
    ``make demo`` runs with nothing installed.

    Example:
        Load a saved block in a flow and query it:
        ```python
        from prefect_atlas import DatabaseBlock

        db = DatabaseBlock.load("BLOCK_NAME")
        db.setup()
        rows = db.fetch_all("SELECT video_id FROM atlas.videos WHERE %s = ANY(tags)", ["news"])
        ```

        In async code use the ``a``-prefixed methods and the pooled connection:
        ```python
        from prefect_atlas import DatabaseBlock

        db = await DatabaseBlock.aload("BLOCK_NAME")
        async with db.connection() as conn:
            await conn.execute("SELECT 1")
        ```
    """

    _block_type_name: ClassVar[str] = "Atlas Database"
    _block_type_slug: ClassVar[str] = "atlas-database"
    _logo_url: ClassVar[HttpUrl | None] = logo_url("atlas-database.png")
    _documentation_url: ClassVar[HttpUrl | None] = docs_url("database.md")
    _description: ClassVar[str] = (
        "The PostgreSQL database where Atlas indexes videos and records events. Leave the "
        "connection URL empty to use a database Atlas runs on this machine."
    )

    # Validation errors must not echo the input: it may hold a password.
    model_config = ConfigDict(hide_input_in_errors=True)

    url: SecretStr = Field(
        default=SecretStr(""),
        title="Connection URL",
        description=(
            "Address of your PostgreSQL database with user and password, such as "
            "postgresql://atlas:secret@db.example.com:5432/atlas. Leave empty to use the "
            "database Atlas runs on this machine."
        ),
        examples=["postgresql://atlas:secret@db.example.com:5432/atlas"],
    )
    min_size: int = Field(
        default=0,
        ge=0,
        title="Minimum pool size",
        description=(
            "Connections kept open while nothing runs. Use 0 for a serverless database that "
            "pauses when idle, such as Neon."
        ),
    )
    max_size: int = Field(
        default=20,
        ge=1,
        le=1000,
        title="Maximum pool size",
        description="Most connections one worker process opens to the database at once.",
    )
    timeout: float = Field(
        default=30.0,
        gt=0,
        title="Connection timeout (s)",
        description="Seconds to wait for the database to answer a new connection.",
    )
    max_idle: float = Field(
        default=240.0,
        gt=0,
        title="Maximum idle time (s)",
        description=(
            "Seconds an unused connection is kept open. Keep it below your provider's idle "
            "cut-off (Neon pauses after 300 seconds)."
        ),
    )
    max_lifetime: float = Field(
        default=3600.0,
        gt=0,
        title="Maximum connection lifetime (s)",
        description=(
            "Seconds after which a connection is replaced by a new one, so that load spreads "
            "again after a failover."
        ),
    )
    statement_timeout: float | None = Field(
        default=None,
        gt=0,
        title="Statement timeout (s)",
        description=(
            "Seconds after which the database stops a query that is still running. Leave "
            "empty to keep the database's own setting."
        ),
    )
    application_name: str = Field(
        default="prefect-atlas",
        max_length=63,
        title="Application name",
        description=(
            "Name under which these connections appear in the database's activity view "
            "(pg_stat_activity)."
        ),
    )
    read_replica_urls: list[SecretStr] = Field(
        default_factory=list,
        title="Read replica URLs",
        description=(
            "Addresses of read-only copies of the database, written like the connection URL. "
            "Reports read from them in turn; when none answers they read from the main database."
        ),
    )
    check_bypass_seconds: float = Field(
        default=0.5,
        ge=0,
        title="Check bypass window (s)",
        description=(
            "A connection used less than this many seconds ago is reused without first "
            "checking that it still works. 0 checks every connection before use."
        ),
    )
    replica_timeout: float = Field(
        default=2.0,
        gt=0,
        title="Replica timeout (s)",
        description=(
            "Seconds to wait for a read-only copy before trying the next one or the main database."
        ),
    )

    _pools_key: str | None = PrivateAttr(default=None)
    _pool_user: PoolUser = PrivateAttr(default_factory=PoolUser)
    # a copy is a user of the shared pools of its own: closing it never releases the original
    _fresh_on_copy: ClassVar[Mapping[str, Callable[[], object]]] = {"_pool_user": PoolUser}

    # ------------------------------------------------------------------ validation

    @field_validator("url", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        # Empty (or None, as 0.3.0 saved it) means the embedded PostgreSQL.
        return SecretStr("") if value is None else value

    @field_validator("url", mode="after")
    @classmethod
    def _check_url(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            return SecretStr("")
        check_conninfo(value.get_secret_value(), "url")
        return value

    def _url(self) -> str | None:
        """The configured URL, or None for the embedded PostgreSQL."""
        return self.url.get_secret_value() or None

    @field_validator("read_replica_urls", mode="after")
    @classmethod
    def _check_replicas(cls, value: list[SecretStr]) -> list[SecretStr]:
        for index, item in enumerate(value):
            check_conninfo(item.get_secret_value(), f"read_replica_urls[{index}]")
        return value

    @model_validator(mode="after")
    def _check_sizes(self) -> Self:
        if self.min_size > self.max_size:
            raise ValueError(
                f"min_size ({self.min_size}) must not exceed max_size ({self.max_size}): "
                "lower min_size or raise max_size"
            )
        return self

    # ------------------------------------------------------------------ description

    @property
    def embedded(self) -> bool:
        """True when the block uses the embedded PostgreSQL (no ``url``)."""
        return self._url() is None

    def describe(self) -> str:
        """Where the block connects, without secrets (for logs and messages)."""
        url = self._url()
        if url is None:
            return f"embedded PostgreSQL in {_embedded.embedded_data_dir()}"
        return describe_conninfo(url)

    def _secrets(self) -> list[str]:
        raws = [url] if (url := self._url()) else []
        return conninfo_secrets(raws + [r.get_secret_value() for r in self.read_replica_urls])

    def _redact(self, text: str) -> str:
        return redact_text(text, self._secrets())

    # ------------------------------------------------------------------ pools

    def _conninfo(self, raw: str) -> str:
        """Our connection settings layered over the user's conninfo."""
        return build_conninfo(
            raw,
            application_name=self.application_name,
            timeout=self.timeout,
            statement_timeout=self.statement_timeout,
        )

    async def _primary_conninfo(self) -> str:
        if (url := self._url()) is not None:
            return self._conninfo(url)
        raw = await asyncio.to_thread(_embedded.embedded_conninfo)
        return self._conninfo(raw)

    @property
    def _pools(self) -> PerLoop[LoopPools]:
        """The pools of this block's configuration, per loop, from the process runtime.

        Why not on the instance: Prefect loads a block anew in every task call and copies it
        for every task parameter; pools kept per instance would be opened (and the server
        probed) again each time. Blocks with the same settings share one pool per loop.
        """
        key = self._pools_key
        if key is None:
            key = self._pools_key = self._runtime_key()
        return _runtime.shared("database-pools", key, PerLoop)

    def _runtime_key(self) -> str:
        settings = self.model_dump(mode="python", exclude={"url", "read_replica_urls"})
        secrets = [self._url() or self.describe()]
        secrets += [r.get_secret_value() for r in self.read_replica_urls]
        material = repr((sorted(settings.items()), secrets)).encode()
        return hashlib.sha256(material).hexdigest()

    async def _loop_pools(self) -> LoopPools:
        """This loop's pools, opened; the first use verifies the primary with a direct connect."""
        return await open_loop_pools(self)

    def _connection_error(self, conninfo: str, exc: BaseException) -> DatabaseConnectionError:
        return connection_error(
            conninfo, exc, timeout=self.timeout, embedded=self.embedded, redact=self._redact
        )

    @asynccontextmanager
    async def connection(self, *, readonly: bool = False) -> AsyncIterator[AsyncConnection[Any]]:
        """A pooled ``psycopg.AsyncConnection`` for this event loop.

        The block exits the connection's context for you: the transaction is committed when
        the block ends normally and rolled back on an exception, then the connection goes
        back to the pool. ``readonly=True`` routes to a read replica when one is configured
        (round robin; a replica that fails is skipped for 30 s and the primary is the last
        resort) and makes the transaction READ ONLY wherever it lands, so code that reads
        never behaves differently on the primary than on a replica.
        """
        pools = await self._loop_pools()
        async with contextlib.AsyncExitStack() as stack:
            conn = await checkout(self, stack, pools, readonly=readonly)
            if readonly:
                # The pool's check undoes it at the connection's next checkout (liveness_check).
                await conn.set_read_only(True)
            try:
                yield conn
            finally:
                if not conn.broken:
                    pools.returned_at[conn] = time.monotonic()

    # ------------------------------------------------------------------ lifecycle

    async def aopen(self) -> Self:
        """Open (and verify) this loop's pools now rather than on first use."""
        await self._loop_pools()
        return self

    async def aclose(self) -> None:
        """Release this block's pools of the calling event loop; the last user closes them.

        Blocks with the same settings share their pools, so closing one instance leaves the
        pools open while another instance that used them has not closed (or been garbage
        collected); a loop that shuts down closes its pools anyway. Pools of other loops
        belong to code still running there and are left alone. The sync face ``close()``
        releases the pool that all sync faces share. This block's paging cursors of the loop
        are reset first.
        """
        _cursors.reset(self)
        await release(self)

    def close(self) -> None:
        """Sync face of :meth:`aclose`: closes the pool the sync faces share."""
        return sync_or_await(self.aclose())

    async def __aenter__(self) -> Self:
        return await self.aopen()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __enter__(self) -> Self:
        if in_async_context():
            raise TypeError("use `async with db:` in async code; `with db:` is for sync code")
        return self

    def __exit__(self, *args: object) -> None:
        run_sync(self.aclose())

    # ------------------------------------------------------------------ queries

    # Paging: Prefect's database-block contract; the rule and its bounds are in `_cursors`.

    async def afetch_one(
        self, operation: Query, parameters: Params = None, **execution_kwargs: Any
    ) -> Row | None:
        """The next row of the result, or None when none is left.

        Repeated fetches (``fetch_one``, ``fetch_many``, ``fetch_all``) with the same operation,
        parameters and keywords do not run the statement again: they return the next rows of
        its first execution, as Prefect's SqlAlchemyConnector does. A used-up result keeps
        answering None until :meth:`areset_cursors`. The first fetch reads the whole result
        and returns the connection at once (no connection is held between fetches); use
        :meth:`stream` for results too large to hold in memory.
        """
        rows = await self._page(operation, parameters, 1, execution_kwargs)
        return rows[0] if rows else None

    async def afetch_many(
        self,
        operation: Query,
        parameters: Params = None,
        size: int | None = None,
        **execution_kwargs: Any,
    ) -> list[Row]:
        """The next ``size`` rows (default 1) of the result; ``[]`` when none is left.

        Pages like :meth:`afetch_one` until :meth:`areset_cursors`, so
        ``while rows := await db.afetch_many(q, size=100): ...`` sees every row once and ends.
        Use :meth:`stream` to page through results too large to hold in memory.
        """
        return await self._page(operation, parameters, size or 1, execution_kwargs)

    async def afetch_all(
        self, operation: Query, parameters: Params = None, **execution_kwargs: Any
    ) -> list[Row]:
        """All rows of the result: the rest of it when the same statement is being paged.

        With no paging cursor open for these inputs the statement runs again, so repeated
        calls return every row each time (SqlAlchemyConnector returns ``[]`` once a result is
        used up); after a ``fetch_many`` it returns the unread rows and ends that cursor.
        """
        rest = _cursors.rest(self, operation, parameters, execution_kwargs)
        if rest is not None:
            return rest
        return await self._fetch_rows(operation, parameters, execution_kwargs)

    async def areset_cursors(self) -> None:
        """Forget this block's paging cursors on the calling event loop: the next fetch of any
        statement runs it again. ``aclose()`` and leaving ``async with db:`` do it too."""
        _cursors.reset(self)

    def reset_cursors(self) -> None:
        """Sync face of :meth:`areset_cursors` (the cursors of the sync faces)."""
        return sync_or_await(self.areset_cursors())

    async def _page(
        self, operation: Query, parameters: Params, size: int, execution_kwargs: dict[str, Any]
    ) -> list[Row]:
        load = functools.partial(self._fetch_rows, operation, parameters, execution_kwargs)
        return await _cursors.page(self, operation, parameters, execution_kwargs, size, load)

    async def _fetch_rows(
        self, operation: Query, parameters: Params, execution_kwargs: dict[str, Any]
    ) -> list[Row]:
        async with self.connection() as conn:
            cur = await conn.execute(operation, parameters, **execution_kwargs)
            return await cur.fetchall()

    async def aexecute(
        self, operation: Query, parameters: Params = None, **execution_kwargs: Any
    ) -> int:
        """Run one statement in its own transaction; returns the number of rows it touched."""
        async with self.connection() as conn:
            cur = await conn.execute(operation, parameters, **execution_kwargs)
            return cur.rowcount

    async def aexecute_many(
        self, operation: Query, seq_of_parameters: Iterable[ParamSet], **execution_kwargs: Any
    ) -> int:
        """Run one statement for each parameter set, pipelined, all in one transaction."""
        async with self.connection() as conn:
            cur = conn.cursor()
            await cur.executemany(operation, seq_of_parameters, **execution_kwargs)
            return cur.rowcount

    async def stream(
        self,
        operation: Query,
        parameters: Params = None,
        *,
        batch_size: int = 1000,
        readonly: bool = True,
    ) -> AsyncIterator[Row]:
        """Yield the rows of a large result through a server-side cursor, ``batch_size`` at a
        time: the way to read results too large for the paging ``fetch_*`` methods, which hold
        the unread rows in memory."""
        async with self.connection(readonly=readonly) as conn:
            async with conn.cursor(name=f"atlas_stream_{id(conn):x}") as cur:
                cur.itersize = batch_size
                await cur.execute(operation, parameters)
                async for row in cur:
                    yield row

    # Sync faces. The abstract interface declares these `async def`; in async code they return
    # the coroutine, so `await db.fetch_one(...)` keeps working there (hence the ignores).

    def fetch_one(  # type: ignore[override]
        self, operation: Query, parameters: Params = None, **execution_kwargs: Any
    ) -> Row | None:
        """Sync face of :meth:`afetch_one` (awaitable in async code)."""
        return sync_or_await(self.afetch_one(operation, parameters, **execution_kwargs))

    def fetch_many(  # type: ignore[override]
        self,
        operation: Query,
        parameters: Params = None,
        size: int | None = None,
        **execution_kwargs: Any,
    ) -> list[Row]:
        """Sync face of :meth:`afetch_many` (awaitable in async code)."""
        return sync_or_await(self.afetch_many(operation, parameters, size, **execution_kwargs))

    def fetch_all(  # type: ignore[override]
        self, operation: Query, parameters: Params = None, **execution_kwargs: Any
    ) -> list[Row]:
        """Sync face of :meth:`afetch_all` (awaitable in async code)."""
        return sync_or_await(self.afetch_all(operation, parameters, **execution_kwargs))

    def execute(  # type: ignore[override]
        self, operation: Query, parameters: Params = None, **execution_kwargs: Any
    ) -> int:
        """Sync face of :meth:`aexecute` (awaitable in async code)."""
        return sync_or_await(self.aexecute(operation, parameters, **execution_kwargs))

    def execute_many(  # type: ignore[override]
        self, operation: Query, seq_of_parameters: Iterable[ParamSet], **execution_kwargs: Any
    ) -> int:
        """Sync face of :meth:`aexecute_many` (awaitable in async code)."""
        return sync_or_await(self.aexecute_many(operation, seq_of_parameters, **execution_kwargs))

    # ------------------------------------------------------------------ schema & health

    async def asetup(self) -> list[Migration]:
        """Apply pending schema migrations; returns those applied (empty when up to date).

        Safe to call from many processes at once: an advisory lock serializes them.
        """
        return await setup_database(self)

    async def ahealth(self, timeout: float = 5.0) -> HealthReport:
        """Check the database with one round trip. Never raises because the server is down."""
        return await check_database(self, timeout)

    def pool_stats(self) -> PoolStats | None:
        """Statistics of the primary pool of the running loop (None outside a loop or before
        use)."""
        return pool_stats(self)

    def setup(self) -> list[Migration]:
        """Sync face of :meth:`asetup` (awaitable in async code)."""
        return sync_or_await(self.asetup())

    def health(self, timeout: float = 5.0) -> HealthReport:
        """Sync face of :meth:`ahealth` (awaitable in async code)."""
        return sync_or_await(self.ahealth(timeout))

    def open(self) -> Self:
        """Sync face of :meth:`aopen` (awaitable in async code)."""
        return sync_or_await(self.aopen())

    def __repr__(self) -> str:
        # Block's repr shows SecretStr masked already; keep ours short and explicit.
        return f"{type(self).__name__}(target={self.describe()!r}, max_size={self.max_size})"
