"""Path normalisation, done once at the API boundary.

Every provider receives the same normalised, relative, ``/``-separated key, and the block's
``prefix`` is joined exactly once (prefect-gcp's ``bucket_folder`` was joined twice on
some code paths, prefect-gcp #20174/#14630). Paths that could escape the vault or mean
different things on different providers are rejected rather than "fixed".
"""

from __future__ import annotations

from prefect_atlas.vault.errors import VaultPathError

RESERVED = ".atlas"  # local sidecar checksums live under this top-level folder


def normalise(path: str, *, field: str = "path", allow_empty: bool = False) -> str:
    """``path`` as a clean relative key: ``a//b/./c`` -> ``a/b/c``.

    Rejects absolute paths, ``..`` segments, NUL bytes, lone surrogates and backslashes with an
    error that names the offending ``field``.
    """
    if not isinstance(path, str):
        raise VaultPathError(
            f"{field} must be a string like "
            f"'metadata/2024-01-01/abc.json', got {type(path).__name__}"
        )
    if "\x00" in path:
        raise VaultPathError(f"{field} {path!r} contains a NUL byte; remove it")
    surrogate = (
        None
        if path.isascii()
        else next((i for i, c in enumerate(path) if 0xD800 <= ord(c) <= 0xDFFF), None)
    )
    if surrogate is not None:
        raise VaultPathError(
            f"{field} {path!r} contains a lone surrogate "
            f"(U+{ord(path[surrogate]):04X} at character {surrogate}), which "
            "is not valid Unicode and no provider can store; fix the text"
        )
    if "\\" in path:
        raise VaultPathError(f"{field} {path!r} contains a backslash; use '/' to separate folders")
    if path.startswith("/"):
        raise VaultPathError(
            f"{field} {path!r} is absolute; give a path relative to the vault root (no leading '/')"
        )
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise VaultPathError(f"{field} {path!r} contains '..'; paths must stay inside the vault")
    if parts and parts[0] == RESERVED:
        raise VaultPathError(
            f"{field} {path!r} is inside {RESERVED!r}, which the vault reserves for checksums"
        )
    if not parts and not allow_empty:
        raise VaultPathError(
            f"{field} is empty; give a file path such as 'metadata/2024-01-01/abc.json'"
        )
    return "/".join(parts)


def normalise_prefix(prefix: str, *, field: str = "prefix") -> str:
    """A folder prefix without leading/trailing slashes ('' for the root).

    Unlike a path, a prefix may be written ``/runs/`` (a common way to write a folder).
    """
    return normalise(prefix.strip("/"), field=field, allow_empty=True) if prefix else ""


def join(prefix: str, key: str) -> str:
    """The provider key of ``key`` under an already-normalised ``prefix`` (joined once)."""
    if not prefix:
        return key
    return f"{prefix}/{key}" if key else prefix


def strip(prefix: str, full: str) -> str:
    """The vault path of a provider key listed under ``prefix`` (inverse of :func:`join`)."""
    if not prefix:
        return full
    head = prefix + "/"
    return full[len(head) :] if full.startswith(head) else full
