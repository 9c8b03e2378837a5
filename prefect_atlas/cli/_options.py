"""Options several commands share: which database to work on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from cyclopts import ArgumentCollection, Group, Parameter

if TYPE_CHECKING:
    from prefect_atlas.database import DatabaseBlock


def _one_database(arguments: ArgumentCollection) -> None:
    if len(arguments.filter_by(value_set=True)) > 1:
        raise ValueError("give --block NAME or --url URL, not both")


DATABASE_GROUP = Group("Database (one of)", validator=_one_database, sort_key=1)


@Parameter(name="*")
@dataclass(frozen=True)
class DatabaseOptions:
    """``--block NAME`` or ``--url URL``; neither: ``$DATABASE_URL``, else embedded PostgreSQL."""

    block: Annotated[
        str | None, Parameter(group=DATABASE_GROUP, help="a saved Atlas Database block to use")
    ] = None
    url: Annotated[
        str | None,
        Parameter(
            group=DATABASE_GROUP,
            help="a PostgreSQL URL (default: $DATABASE_URL, else the embedded PostgreSQL)",
        ),
    ] = None

    async def open(self) -> DatabaseBlock:
        """The block to work on: ``--block`` from Prefect, else ``--url``/settings/embedded."""
        from pydantic import SecretStr

        from prefect_atlas.database import DatabaseBlock

        if self.block:
            return await DatabaseBlock.aload(self.block)
        if self.url:
            return DatabaseBlock(url=SecretStr(self.url))
        from prefect_atlas.settings import AtlasSettings

        return DatabaseBlock(url=AtlasSettings().database_url)


# The default of every command's ``database`` parameter: neither option given.
NO_DATABASE = DatabaseOptions()
