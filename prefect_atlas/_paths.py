"""Where prefect-atlas keeps local state (embedded PostgreSQL, vault, spool, alert memory)."""

from __future__ import annotations

from pathlib import Path

ATLAS_HOME_ENV = "ATLAS_HOME"


def atlas_home(*, create: bool = True) -> Path:
    """Return ``$ATLAS_HOME`` (default ``~/.prefect-atlas``), created if missing.

    Read on every call rather than at import so that tests and processes that set the
    variable late still get the folder they asked for. ``create=False`` only names the
    folder: for state that is written only sometimes (the event spool), so that an unusable
    ``ATLAS_HOME`` fails the rare write that needs it, not every call.
    """
    from prefect_atlas.settings import read

    raw = read("atlas_home") or ""
    home = Path(raw).expanduser() if raw else Path.home() / ".prefect-atlas"
    if create:
        home.mkdir(parents=True, exist_ok=True)
    return home.resolve()
