"""``prefect-atlas blocks from-env``: the three Atlas blocks built from the environment.

The road from a `.env` file (or the variables a platform already injects) to blocks a team
edits in the Prefect UI. Nothing is saved unless every block can be built, and existing
blocks are only replaced with ``--overwrite``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from cyclopts import App, Parameter

from prefect_atlas.cli._errors import require_command
from prefect_atlas.settings import AtlasSettings

if TYPE_CHECKING:
    from prefect.blocks.core import Block

blocks = App(name="blocks", help="Create Atlas blocks.")
require_command(blocks, "blocks")


def build_blocks(settings: AtlasSettings, name: str) -> list[Block]:
    """The blocks to save under ``name`` (names are unique per block type, so all share it)."""
    from prefect_atlas._blocks import (
        database_from_settings,
        discord_from_settings,
        vault_from_settings,
    )

    vault, credentials = vault_from_settings(settings, credentials_name=name)
    found = [database_from_settings(settings), credentials, vault, discord_from_settings(settings)]
    return [block for block in found if block is not None]


async def _exists(block: Block, name: str) -> bool:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    async with get_client() as client:
        try:
            await client.read_block_document_by_name(
                name, block_type_slug=block.get_block_type_slug()
            )
        except ObjectNotFound:
            return False
    return True


async def save_from_env(settings: AtlasSettings, name: str, *, overwrite: bool) -> list[str]:
    """Save the blocks; one line per block saved. Without ``overwrite``, nothing if any exists."""
    blocks = build_blocks(settings, name)
    if not overwrite:
        taken = [f"{b.get_block_type_name()} {name!r}" for b in blocks if await _exists(b, name)]
        if taken:
            raise FileExistsError(
                f"{', '.join(taken)} already exist(s); pass --overwrite to replace them, "
                "or choose another --name"
            )
    lines = []
    for block in blocks:
        await block.asave(name, overwrite=overwrite)
        lines.append(f"saved {block.get_block_type_name()} {name!r}")
    return lines


@blocks.command(name="from-env")
async def from_env(
    *,
    name: Annotated[str, Parameter(help="name to save the blocks under (e.g. prod)")],
    overwrite: Annotated[bool, Parameter(help="replace blocks that already exist")] = False,
    env_file: Annotated[
        str | None, Parameter(help="also read variables from this dotenv file")
    ] = None,
) -> int:
    """Build the Database, Vault and Discord blocks from environment variables and save them."""
    settings = AtlasSettings.from_env_file(env_file) if env_file else AtlasSettings()
    for line in await save_from_env(settings, name, overwrite=overwrite):
        print(line)
    return 0
