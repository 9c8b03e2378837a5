"""The embedded PostgreSQL used when a :class:`DatabaseBlock` has no ``url``.

pgserver ships PostgreSQL binaries in its wheel and runs a server over a Unix socket in a
data folder (``$ATLAS_HOME/postgres``). pgserver reference-counts the processes that use
a data folder, so a second process (a worker, a second ``make demo``) reuses the running
server and the last one to exit stops it; the data stays for the next run.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from pathlib import Path

from prefect_atlas._extras import require
from prefect_atlas._paths import atlas_home

EMBEDDED_DATABASE = "atlas"
_lock = threading.Lock()
_started: dict[Path, str] = {}


def embedded_data_dir(home: Path | None = None) -> Path:
    """The folder that holds the embedded server's data."""
    return (home or atlas_home()) / "postgres"


def embedded_conninfo(home: Path | None = None) -> str:
    """Start (or reuse) the embedded server and return a conninfo for its ``atlas`` database.

    Blocking (about 0.7 s on a new folder, 0.1 s on restart); async callers run it in a thread.
    """
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import make_conninfo

    data = embedded_data_dir(home)
    with _lock:
        cached = _started.get(data)
        if cached is not None:
            return cached
        with warnings.catch_warnings():
            # pgserver warns when XDG_RUNTIME_DIR is unset (it then uses /tmp): harmless.
            warnings.simplefilter("ignore")
            pgserver = require(
                "pgserver",
                extra="embedded",
                purpose="The embedded PostgreSQL (a DatabaseBlock without `url`)",
                alternative="set the block's `url` field to your PostgreSQL server",
            )
            server = pgserver.get_server(data, cleanup_mode="stop")
        admin = str(server.get_uri("postgres"))
        with psycopg.connect(admin, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", [EMBEDDED_DATABASE]
            ).fetchone()
            if exists is None:
                # another process may create it between our check and our CREATE
                with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                    conn.execute(
                        sql.SQL("CREATE DATABASE {}").format(sql.Identifier(EMBEDDED_DATABASE))
                    )
        conninfo = make_conninfo(admin, dbname=EMBEDDED_DATABASE)
        _started[data] = conninfo
        return conninfo
