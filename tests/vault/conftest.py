"""Fixtures of the vault tests: the three providers on real servers on 127.0.0.1.

* local: a temp folder;
* gcs: ``gcp-storage-emulator`` in-process, reached through a saved prefect-gcp
  ``GcpCredentials`` block whose service account gets its token from a local endpoint;
* huggingface: :mod:`tests.vault.hf_server`, driven by the real ``huggingface_hub`` client.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from prefect_atlas import VaultBlock
from prefect_atlas._dispatch import run_sync
from tests.vault._servers import LoopThread, TokenServer, service_account_info
from tests.vault.hf_server import HubServer

BUCKET = "atlas-vault-test"
HF_TOKEN = "hf_local_test_token_5f3c9a"
PROVIDERS = ["local", "gcs", "huggingface"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class GcsEnv:
    emulator_url: str
    token_server: TokenServer
    credentials_block: str

    def raw_bucket(self) -> Any:
        import importlib

        storage = importlib.import_module("google.cloud.storage")
        credentials = importlib.import_module("google.auth.credentials")
        return storage.Client(
            project="atlas-test", credentials=credentials.AnonymousCredentials()
        ).bucket(BUCKET)


@pytest.fixture(scope="session")
def gcs_env() -> Iterator[GcsEnv]:
    from gcp_storage_emulator.server import create_server
    from prefect_gcp import GcpCredentials

    port = _free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
    server.start()
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{port}"
    tokens = TokenServer()
    creds = GcpCredentials(service_account_info=service_account_info(tokens.url))
    run_sync(creds.asave("vault-test-gcp", overwrite=True))
    try:
        yield GcsEnv(f"http://127.0.0.1:{port}", tokens, "vault-test-gcp")
    finally:
        tokens.close()
        server.stop()
        if previous is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = previous


@dataclass
class HubEnv:
    server: HubServer
    loop: LoopThread


@pytest.fixture(scope="session")
def hub_env() -> Iterator[HubEnv]:
    loop = LoopThread()
    server = HubServer(token=HF_TOKEN)
    loop.run(server.start())
    try:
        yield HubEnv(server, loop)
    finally:
        loop.run(server.stop())
        loop.close()


def make_vault(
    provider: str, request: pytest.FixtureRequest, tmp_path: Path, **extra: Any
) -> VaultBlock:
    """A block on a fresh, empty location of ``provider``."""
    unique = uuid.uuid4().hex[:10]
    if provider == "local":
        return VaultBlock(provider="local", root=str(tmp_path / "vault"), **extra)
    if provider == "gcs":
        env: GcsEnv = request.getfixturevalue("gcs_env")
        return VaultBlock(
            provider="gcs",
            bucket=BUCKET,
            prefix=f"runs/{unique}",
            gcp_credentials=env.credentials_block,
            **extra,
        )
    hub: HubEnv = request.getfixturevalue("hub_env")
    dataset = f"atlas/vault-{unique}"
    hub.server.create_repo(dataset)
    return VaultBlock(
        provider="huggingface",
        dataset_id=dataset,
        token=SecretStr(HF_TOKEN),
        endpoint=hub.server.endpoint,
        prefix="data",
        **extra,
    )


@pytest.fixture(params=PROVIDERS)
async def vault(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[VaultBlock]:
    block = make_vault(request.param, request, tmp_path)
    try:
        yield block
    finally:
        await block.aclose()
