"""The password never shows: not in repr, logs, errors, JSON dumps or saved block documents."""

from __future__ import annotations

import logging

import pytest
from psycopg.conninfo import make_conninfo
from pydantic import SecretStr

from prefect_atlas import DatabaseBlock, DatabaseConfigurationError, DatabaseConnectionError
from prefect_atlas._blocks import resolve_block
from tests._pg import PrivateServer

PASSWORD = "s3cr3t-Pa55-wOrd"
WRONG = "wr0ng-Pa55-guess"


@pytest.fixture(scope="module")
def password_server(private_pg: PrivateServer) -> PrivateServer:
    """The private server with a role that must give a password over the socket."""
    import psycopg

    with psycopg.connect(private_pg.admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE atlas_pw LOGIN PASSWORD '{PASSWORD}'")
        conn.execute("CREATE DATABASE atlas_pw_db OWNER atlas_pw")
    private_pg.hba_prepend("local all atlas_pw scram-sha-256")
    return private_pg


def _url(server: PrivateServer, password: str) -> str:
    return make_conninfo(server.admin_url, user="atlas_pw", password=password, dbname="atlas_pw_db")


async def test_right_password_connects(password_server: PrivateServer) -> None:
    async with DatabaseBlock(url=SecretStr(_url(password_server, PASSWORD))) as db:
        assert await db.afetch_one("SELECT current_user") == ("atlas_pw",)


async def test_wrong_password_is_one_clear_redacted_error(
    password_server: PrivateServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    db = DatabaseBlock(url=SecretStr(_url(password_server, WRONG)), timeout=3)
    with pytest.raises(DatabaseConnectionError) as info:
        await db.afetch_one("SELECT 1")
    message = str(info.value)
    assert "password authentication failed" in message and "Fix the password" in message
    assert isinstance(info.value, DatabaseConfigurationError)
    assert "dbname=atlas_pw_db" in message and "user=atlas_pw" in message
    assert WRONG not in message and WRONG not in repr(info.value)
    assert info.value.__cause__ is None  # the driver error (with its conninfo) is not chained
    report = await db.ahealth()
    assert not report.ok and WRONG not in (report.reason or "")
    await db.aclose()
    for record in caplog.records:
        assert WRONG not in record.getMessage()


def test_password_hidden_in_repr_and_dumps() -> None:
    url = f"postgresql://atlas:{PASSWORD}@db.example.com:5432/atlas"
    db = DatabaseBlock(url=SecretStr(url), read_replica_urls=[SecretStr(url.replace("db.", "r1."))])
    for text in (
        repr(db),
        str(db),
        db.describe(),
        db.model_dump_json(),
        str(db.model_dump(mode="json")),
    ):
        assert PASSWORD not in text
    assert "host=db.example.com" in db.describe()


async def test_saved_block_document_masks_the_password(prefect_server: None) -> None:
    from prefect.client.orchestration import get_client

    url = f"postgresql://atlas:{PASSWORD}@db.example.com:5432/atlas"
    await DatabaseBlock(url=SecretStr(url)).asave("secret-check", overwrite=True)
    async with get_client() as client:
        document = await client.read_block_document_by_name(
            "secret-check", block_type_slug="atlas-database", include_secrets=False
        )
    assert PASSWORD not in str(document.data)
    loaded = await resolve_block(DatabaseBlock, "secret-check")
    assert loaded.url is not None and loaded.url.get_secret_value() == url
