"""Test harness: a real Prefect test server, a real PostgreSQL, isolated homes.

Environment is set before Prefect is imported so that nothing reads or writes the user's
``~/.prefect`` or ``~/.prefect-atlas``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

_ROOT = Path(tempfile.mkdtemp(prefix="atlas-tests-"))
os.environ["PREFECT_HOME"] = str(_ROOT / "prefect")
os.environ["ATLAS_HOME"] = str(_ROOT / "atlas")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")

import pytest  # noqa: E402
from prefect.testing.utilities import prefect_test_harness  # noqa: E402
from pydantic import SecretStr  # noqa: E402

from prefect_atlas import DatabaseBlock  # noqa: E402
from tests._pg import PrivateServer, _pgserver, create_database, drop_database  # noqa: E402
from tests.discord._server import DiscordServer  # noqa: E402

PG_FIXTURES = {"database_url", "db", "pg_admin_url"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that talks to the shared PostgreSQL, so CI can rerun them on another
    server."""
    for item in items:
        if PG_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.pg)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "pg: uses the shared test PostgreSQL (rerun by CI on TCP)")


@pytest.fixture(scope="session", autouse=True)
def prefect_server() -> Iterator[None]:
    """One real Prefect API server (SQLite, subprocess) for the whole session."""
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def pg_admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Conninfo of a superuser on the shared test server."""
    configured = os.environ.get("ATLAS_TEST_DATABASE_URL")
    if configured:
        yield configured
        return
    folder = tmp_path_factory.mktemp("shared-pg")
    server = _pgserver().get_server(folder / "pgdata", cleanup_mode="delete")
    try:
        yield str(server.get_uri("postgres"))
    finally:
        server.cleanup()


@pytest.fixture
def database_url(pg_admin_url: str) -> Iterator[str]:
    """A fresh, empty database for this test only."""
    url = create_database(pg_admin_url)
    try:
        yield url
    finally:
        drop_database(pg_admin_url, url)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[DatabaseBlock]:
    """A block on this test's database, closed afterwards."""
    block = DatabaseBlock(url=SecretStr(database_url), timeout=10)
    try:
        yield block
    finally:
        await block.aclose()


@pytest.fixture
def discord_server() -> Iterator[DiscordServer]:
    """A fresh Discord-like webhook server on 127.0.0.1 (5 requests per 2 s per webhook)."""
    server = DiscordServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def private_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateServer]:
    """An embedded PostgreSQL this module may stop, restart and reconfigure."""
    server = PrivateServer(tmp_path_factory.mktemp("private-pg"))
    try:
        yield server
    finally:
        server.close()
