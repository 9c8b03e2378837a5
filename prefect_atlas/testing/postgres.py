"""Throwaway PostgreSQL databases, for testing one's own flows and the benches.

:func:`create_database` makes an empty database with a unique name on a server you can
administer and returns its conninfo; :func:`drop_database` removes it again (``WITH
(FORCE)``, so open connections do not keep it alive). :func:`block_conninfo` is the
conninfo a :class:`~prefect_atlas.DatabaseBlock` connects with for a URL (our settings
layered over it), for a benchmark or test that opens its own pool beside the block's.

Only psycopg is needed (a core dependency). For a server without installing PostgreSQL,
the ``embedded`` extra's ``pgserver`` gives one.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from prefect_atlas.database._conninfo import build_conninfo

if TYPE_CHECKING:
    from prefect_atlas.database.block import DatabaseBlock

__all__ = ["block_conninfo", "create_database", "drop_database"]


def create_database(admin_url: str, prefix: str = "atlas_test") -> str:
    """Create an empty database named ``{prefix}_{random}`` and return its conninfo."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return make_conninfo(admin_url, dbname=name)


def drop_database(admin_url: str, url: str) -> None:
    """Drop the database ``url`` names (if it exists), even with connections still open."""
    name = conninfo_to_dict(url)["dbname"]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(str(name)))
        )


def block_conninfo(block: DatabaseBlock, url: str) -> str:
    """The conninfo ``block`` connects with for ``url``: its application name, connect and
    statement timeouts and TCP keepalives layered over ``url`` (the URL's own settings win).
    """
    return build_conninfo(
        url,
        application_name=block.application_name,
        timeout=block.timeout,
        statement_timeout=block.statement_timeout,
    )
