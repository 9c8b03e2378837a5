"""Helpers shared by the Atlas blocks."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Self, TypeVar, cast

from prefect.blocks.core import Block
from pydantic import HttpUrl

if TYPE_CHECKING:
    from prefect_atlas.database import DatabaseBlock
    from prefect_atlas.discord import DiscordBlock
    from prefect_atlas.settings import AtlasSettings
    from prefect_atlas.vault import VaultBlock

_REPOSITORY = "prefect-atlas/prefect-atlas"

B = TypeVar("B", bound=Block)


def logo_url(file_name: str) -> HttpUrl:
    """The public URL of a logo shipped in ``prefect_atlas/assets`` (the UI shows it; the block
    test suite checks the shipped file of the same name, since tests run offline)."""
    return HttpUrl(
        f"https://raw.githubusercontent.com/{_REPOSITORY}/main/prefect_atlas/assets/{file_name}"
    )


def docs_url(page: str) -> HttpUrl:
    """The public URL of a page in ``docs/``."""
    return HttpUrl(f"https://github.com/{_REPOSITORY}/blob/main/docs/{page}")


async def resolve_block(cls: type[B], ref: str | B) -> B:
    """``ref`` itself when it is a block of ``cls``, else the saved block named ``ref``.

    Tasks take "a block name or a block" so that a pipeline can pass either; this also
    gives type checkers the precise type, which Prefect's ``aload`` does not.
    """
    if isinstance(ref, cls):
        return ref
    if not isinstance(ref, str):
        raise TypeError(
            f"expected a {cls.__name__} or the name of a saved one, got {type(ref).__name__}"
        )
    loaded = await cls.aload(ref)
    if not isinstance(loaded, cls):
        raise TypeError(f"block {ref!r} is a {type(loaded).__name__}, not a {cls.__name__}")
    return loaded


class CopySafe:
    """Copies and pickles of a block carry its configuration, never its live state.

    Prefect copies and pickles blocks freely (task parameters, results, other processes).
    Live state shared by every block of the same settings lives in the process runtime
    (:mod:`prefect_atlas._runtime`, in a :class:`~prefect_atlas._loops.PerLoop` per event
    loop: database pools, Discord sessions and rate limiters), which a copy looks up again.
    What belongs to one instance is a private attribute named in ``_fresh_on_copy`` with the
    factory of its fresh value: ``copy.copy``, ``copy.deepcopy``, ``model_copy`` and pickling
    give the copy that value instead of sharing or cloning the original's (a live client is
    never deep-copied at all). Mix in before ``Block``: ``class VaultBlock(CopySafe, Block)``.
    """

    _fresh_on_copy: ClassVar[Mapping[str, Callable[[], object]]] = {}

    def _fresh_state(self) -> dict[str, object]:
        return {name: make() for name, make in self._fresh_on_copy.items()}

    def __copy__(self) -> Self:
        clone: Self = cast(Any, super()).__copy__()
        for name, value in self._fresh_state().items():
            setattr(clone, name, value)
        return clone

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> Self:
        memo = {} if memo is None else memo
        private = getattr(self, "__pydantic_private__", None) or {}
        for name in self._fresh_on_copy:
            live = private.get(name)
            if live is not None:
                memo[id(live)] = None  # deepcopy answers from memo: the live value is not copied
        clone: Self = cast(Any, super()).__deepcopy__(memo)
        for name, value in self._fresh_state().items():
            setattr(clone, name, value)
        return clone

    def __getstate__(self) -> dict[Any, Any]:
        state = dict(cast(Any, super()).__getstate__())
        state["__pydantic_private__"] = {
            **(state.get("__pydantic_private__") or {}),
            **self._fresh_state(),
        }
        return state


# The one place that maps settings (the variables Atlas 0.2.1 read: DATABASE_URL,
# VAULT_PROVIDER and its variables, DISCORD_WEBHOOK_*) onto blocks, for `prefect-atlas blocks
# from-env` and `prefect_atlas.compat`. One function per block, so a bad vault setting does not
# stop a caller that only needs the database. They build; they never save.


def database_from_settings(settings: AtlasSettings) -> DatabaseBlock:
    """The ``DatabaseBlock`` of ``DATABASE_URL`` (embedded PostgreSQL when unset)."""
    from prefect_atlas.database import DatabaseBlock

    return DatabaseBlock(url=settings.database_url)


def vault_from_settings(
    settings: AtlasSettings, *, credentials_name: str | None = None
) -> tuple[VaultBlock, Block | None]:
    """The ``VaultBlock`` of ``VAULT_PROVIDER`` and its variables, and the credentials to save.

    With ``credentials_name`` and ``GOOGLE_APPLICATION_CREDENTIALS`` set, a gcs vault refers to
    a prefect-gcp ``GcpCredentials`` block to be saved under that name, returned second.
    Without, the gcs client's default credentials read that variable themselves.
    """
    from prefect_atlas.vault import VaultBlock

    credentials: Block | None = None
    vault: dict[str, Any] = {"provider": settings.vault_provider}
    if settings.vault_provider == "local":
        vault["root"] = str(settings.vault_root) if settings.vault_root else None
    elif settings.vault_provider == "gcs":
        vault.update(bucket=settings.gcs_bucket_name, prefix=settings.gcs_prefix)
        if credentials_name and settings.google_application_credentials is not None:
            from prefect_atlas._extras import require

            gcp = require("prefect_gcp", extra="gcs", purpose="Saving GCS credentials")
            credentials = gcp.GcpCredentials(
                service_account_file=settings.google_application_credentials
            )
            vault["gcp_credentials"] = credentials_name
    else:
        vault.update(dataset_id=settings.hf_dataset_id, token=settings.hf_token)
        if settings.hf_endpoint:
            vault["endpoint"] = settings.hf_endpoint
    return VaultBlock(**vault), credentials


def discord_from_settings(settings: AtlasSettings) -> DiscordBlock:
    """The ``DiscordBlock`` of ``DISCORD_WEBHOOK_*``, ``ENV`` and the extra allowed hosts."""
    from prefect_atlas.discord import DiscordBlock

    hosts = [h.strip() for h in settings.atlas_discord_allowed_hosts.split(",") if h.strip()]
    return DiscordBlock(
        **settings.discord_webhooks(), env_tag=f"[{settings.env}]", allowed_hosts=hosts
    )
