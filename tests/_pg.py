"""PostgreSQL servers for the tests: the shared one, and private ones a test may stop.

The shared server is ``ATLAS_TEST_DATABASE_URL`` when set, otherwise an embedded pgserver
in a temporary folder. Every test that asks for ``database_url`` gets a database of its own
on it, created empty and dropped (``WITH (FORCE)``) afterwards.

A ``PrivateServer`` is an embedded pgserver owned by one test module: the tests that stop and
restart PostgreSQL, or change its authentication, use one so that they never disturb the
shared server (which may be the machine's).

``create_database`` and ``drop_database`` live in :mod:`prefect_atlas.testing.postgres`.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from prefect_atlas.testing.postgres import create_database, drop_database

__all__ = ["PrivateServer", "create_database", "drop_database"]


def _pgserver() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

        return pgserver


class PrivateServer:
    """An embedded PostgreSQL in ``folder`` that the test can stop, start and reconfigure."""

    def __init__(self, folder: Path) -> None:
        self.data = folder / "pgdata"
        self._server = _pgserver().get_server(self.data, cleanup_mode="delete")

    @property
    def admin_url(self) -> str:
        return str(self._server.get_uri("postgres"))

    def url(self, **params: Any) -> str:
        return make_conninfo(self.admin_url, **params)

    def _pg_ctl(self, *args: str) -> None:
        from pgserver._commands import pg_ctl  # type: ignore[attr-defined]

        pg_ctl(list(args), pgdata=self.data, user=self._server.system_user, timeout=30)

    def stop(self) -> None:
        self._pg_ctl("-w", "-m", "fast", "stop")

    def start(self) -> None:
        self._server.ensure_postgres_running()

    def hba_prepend(self, line: str) -> None:
        """Put ``line`` first in pg_hba.conf and reload the configuration."""
        hba = self.data / "pg_hba.conf"
        hba.write_text(line + "\n" + hba.read_text())
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")

    def close(self) -> None:
        self._server.cleanup()
