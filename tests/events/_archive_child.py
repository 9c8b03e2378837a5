"""A child process that archives one partition (the crash tests kill it mid-way).

``python -m tests.events._archive_child URL VAULT_ROOT PARTITION``: archives and drops
``PARTITION`` of the database at ``URL`` into the local vault at ``VAULT_ROOT``, printing
``done`` at the end. Its PostgreSQL sessions carry the application name ``PGAPPNAME`` (set
by the test) so the test can see where they wait.
"""

from __future__ import annotations

import asyncio
import os
import sys

from pydantic import SecretStr

from prefect_atlas import DatabaseBlock, VaultBlock
from prefect_atlas.events.archive import aarchive_partition
from prefect_atlas.events.partitions import alist_partitions


async def main(url: str, root: str, name: str) -> None:
    db = DatabaseBlock(url=SecretStr(url), timeout=30, application_name=os.environ["PGAPPNAME"])
    vault = VaultBlock(provider="local", root=root)
    async with db.connection() as conn:
        partition = next(p for p in await alist_partitions(conn) if p.name == name)
    await aarchive_partition(db, vault, partition)
    print("done", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
