"""Local provider on a real filesystem: symbolic links are never followed, names stay within
the filesystem's limits, and OS refusals arrive as vault errors naming the path and the fix.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from pathlib import Path

import pytest

from prefect_atlas import (
    VaultAccessError,
    VaultBlock,
    VaultError,
    VaultObjectExistsError,
    VaultPathError,
)
from prefect_atlas.vault._local import LocalProvider

SECRET = b'{"outside": "must never be read or replaced"}'


def _outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret.json").write_bytes(SECRET)
    return folder


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# ---------------------------------------------------------------------- symbolic links


async def test_symlinked_folder_inside_the_root_is_refused_on_every_operation(
    tmp_path: Path,
) -> None:
    outside = _outside(tmp_path)
    vault = VaultBlock(root=str(tmp_path / "vault"))
    await vault.astore_json("ok/a.json", {"a": 1})
    os.symlink(outside, vault.local_root() / "link")
    for attempt in (
        vault.astore_json("link/new.json", {"x": 1}),
        vault.astore_json("link/secret.json", {"x": 1}),
        vault.astore_json("link/deeper/new.json", {"x": 1}, overwrite=False),
        vault.astore_batch([("link/b.json", {"x": 1})]),
        vault.afetch_bytes("link/secret.json"),
        vault.aexists("link/secret.json"),
        vault.alist_objects("link"),
        vault.adelete_object("link/secret.json"),
    ):
        with pytest.raises(
            VaultPathError, match=r"'link' is a symbolic link.*never follows"
        ) as info:
            await attempt
        assert "'link/" in str(info.value) or "'link'" in str(info.value)
    assert _tree(outside) == {"secret.json": SECRET}, (
        "something was written or removed outside the root"
    )
    assert await vault.alist_objects() == ["ok/a.json"], (
        "a link is not a vault object: list skips it"
    )


async def test_symlinked_file_pointing_outside_is_refused(tmp_path: Path) -> None:
    outside = _outside(tmp_path)
    vault = VaultBlock(root=str(tmp_path / "vault"))
    await vault.astore_json("d/real.json", {"r": 1})
    link = vault.local_root() / "d/leak.json"
    os.symlink(outside / "secret.json", link)
    for attempt in (
        vault.afetch_bytes("d/leak.json"),
        vault.aexists("d/leak.json"),
        vault.astore_json("d/leak.json", {"x": 1}),
        vault.astore_json("d/leak.json", {"x": 1}, overwrite=False),
        vault.adelete_object("d/leak.json"),
    ):
        with pytest.raises(VaultPathError, match=r"'d/leak.json' is a symbolic link"):
            await attempt
    assert link.is_symlink() and _tree(outside) == {"secret.json": SECRET}
    assert await vault.alist_objects("d") == ["d/real.json"]


async def test_root_path_component_swapped_for_a_symlink_is_refused(tmp_path: Path) -> None:
    """A folder of the root's own path replaced by a link after the vault was opened."""
    base = tmp_path / "base"
    vault = VaultBlock(root=str(base / "data" / "vault"))
    await vault.astore_json("a.json", {"v": 1})
    decoy = tmp_path / "decoy"
    (decoy / "vault").mkdir(parents=True)
    (decoy / "vault" / "a.json").write_bytes(SECRET)
    (base / "data").rename(base / "moved")
    os.symlink(decoy, base / "data")
    for attempt in (
        vault.astore_json("a.json", {"v": 2}),
        vault.afetch_json("a.json"),
        vault.alist_objects(),
    ):
        with pytest.raises(
            VaultPathError, match=r"part of the vault root's own path, is now a symbolic link"
        ) as info:
            await attempt
        assert str(base / "data") in str(info.value)
    health = await vault.ahealth()
    assert not health.ok and "symbolic link" in health.detail
    assert _tree(decoy) == {"vault/a.json": SECRET}
    assert _tree(base / "moved") == {"vault/a.json": b'{"v":1}'}


async def test_root_configured_through_a_symlink_is_resolved_once(tmp_path: Path) -> None:
    """Links in the configured ``root`` itself are configuration, followed when the vault opens."""
    real = tmp_path / "real"
    real.mkdir()
    os.symlink(real, tmp_path / "alias")
    vault = VaultBlock(root=str(tmp_path / "alias" / "vault"))
    await vault.astore_json("x/y.json", {"ok": True})
    assert (real / "vault/x/y.json").is_file()
    assert await vault.afetch_json("x/y.json") == {"ok": True}
    assert (await vault.ahealth()).ok


async def test_a_symlink_swapped_in_mid_write_is_never_followed(tmp_path: Path) -> None:
    """A thread keeps replacing folder ``d`` by a link to outside while writes go to ``d/``.

    With a check-then-open approach some writes would land outside; opening each component
    with O_NOFOLLOW relative to its parent's descriptor leaves no such window.
    """
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "vault"
    provider = LocalProvider(root)
    await provider.put(
        "d/seed.bin", b"seed", overwrite=True, content_type="application/octet-stream"
    )
    stop = threading.Event()
    swaps = 0

    def swapper() -> None:
        nonlocal swaps
        d = root / "d"
        n = 0
        while not stop.is_set():
            n += 1
            stash = root / f"stash{n}"
            try:
                d.rename(stash)
                os.symlink(outside, d)  # fails when the writer made a new ``d`` in the gap
                swaps += 1
                d.unlink()
                stash.rename(d)
            except OSError:
                if d.is_symlink():
                    d.unlink()  # (the writer's files stay in the stash folders)

    thread = threading.Thread(target=swapper)
    thread.start()
    stored = refused = 0
    messages: set[str] = set()
    try:
        for i in range(400):
            try:
                await provider.put(
                    f"d/f{i}.bin", b"data", overwrite=True, content_type="application/octet-stream"
                )
                stored += 1
            except VaultError as exc:
                refused += 1
                messages.add(str(exc).split(": ", 1)[1].split(" (")[0][:70])
    finally:
        stop.set()
        thread.join(10)
    assert swaps > 20 and refused > 0 and stored > 0, (swaps, stored, refused)
    assert list(outside.iterdir()) == [], "a write followed the swapped-in link out of the root"
    # Refusals name the link (or the flicker); a stash renamed over a folder a write had just
    # made is an honest ENOENT. Nothing else.
    allowed = (
        "'d' is a symbolic link",
        "'d' kept changing",
        "a folder on its way was removed or renamed",
    )
    assert all(m.startswith(allowed) for m in messages), messages


async def test_root_removed_or_replaced_by_a_new_folder_is_followed_by_path(tmp_path: Path) -> None:
    """The kept root descriptor never pins a vault to a folder that is no longer its root."""
    root = tmp_path / "vault"
    vault = VaultBlock(root=str(root))
    await vault.astore_json("a.json", {"v": 1})
    shutil.rmtree(root)
    assert await vault.afetch_json("a.json") is None
    await vault.astore_json("b.json", {"v": 2})
    assert _tree(root) == {"b.json": b'{"v":2}'}
    root.rename(tmp_path / "old")
    root.mkdir()
    await vault.astore_json("c.json", {"v": 3})
    assert _tree(root) == {"c.json": b'{"v":3}'}
    assert _tree(tmp_path / "old") == {"b.json": b'{"v":2}'}
    await vault.aclose()
    assert await vault.alist_objects() == ["c.json"]


# ---------------------------------------------------------------------- name limits


async def test_names_within_name_max_minus_the_checksum_suffix(tmp_path: Path) -> None:
    vault = VaultBlock(root=str(tmp_path / "vault"))
    longest = "n" * 243 + ".json"  # 248 bytes: NAME_MAX 255 minus ".sha256"
    assert await vault.astore_json(f"long/{longest}", {"ok": 1}) == f"long/{longest}"
    assert await vault.afetch_json(f"long/{longest}") == {"ok": 1}
    for too_long, size in (("n" * 244 + ".json", 249), ("é" * 123 + ".json", 251)):
        with pytest.raises(
            VaultPathError,
            match=rf"is {size} bytes; this filesystem allows 255 bytes per name "
            r"\(NAME_MAX\).*at most 248 bytes",
        ):
            await vault.astore_json(f"long/{too_long}", {"x": 1})
    assert await vault.alist_objects() == [f"long/{longest}"]
    assert list(vault.local_root().rglob("*.tmp")) == []
    # Reads are not pre-checked (a 249..255-byte name put there by hand is readable); beyond
    # NAME_MAX the filesystem's ENAMETOOLONG arrives as a path error naming the limits.
    with pytest.raises(
        VaultPathError,
        match=r"read of 'long/n{40}.*failed: a name or the whole path is too long "
        r"\(ENAMETOOLONG; NAME_MAX 255 bytes per name, PATH_MAX 4096\)",
    ):
        await vault.afetch_bytes("long/" + "n" * 300)


async def test_longest_name_works_with_sidecar_checksums(tmp_path: Path) -> None:
    provider = LocalProvider(tmp_path / "vault", use_xattr=False)
    name = "s" * 248
    await provider.put(name, b"payload", overwrite=False, content_type="application/octet-stream")
    assert len(provider._sidecar(name).name) == 255
    assert await provider.get(name) == b"payload"


async def test_path_beyond_path_max_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    vault = VaultBlock(root=str(tmp_path / "vault"))
    deep = "/".join(["d" * 200] * 21) + "/x.json"  # ~4.2 KB
    with pytest.raises(VaultPathError, match=r"PATH_MAX is 4096 .*shorten the path or set `root`"):
        await vault.astore_json(deep, {"x": 1})
    with pytest.raises(VaultPathError, match="PATH_MAX"):
        await vault.astore_batch([("fine.json", {"a": 1}), (deep, {"x": 1})])
    assert not vault.local_root().exists() or list(vault.local_root().iterdir()) == []


# ---------------------------------------------------------------------- OS errors


async def test_file_where_a_folder_must_be(tmp_path: Path) -> None:
    vault = VaultBlock(root=str(tmp_path / "vault"))
    await vault.astore_json("blocker", {"i": "a file"})
    with pytest.raises(
        VaultPathError,
        match=r"'blocker/x.json' .*cannot be stored: 'blocker' is a file, not a folder",
    ):
        await vault.astore_json("blocker/x.json", {"x": 1})
    assert await vault.afetch_json("blocker/x.json") is None  # reading through a file: absent
    assert await vault.aexists("blocker/x.json") is False


def _chattr(path: Path, flag: str) -> None:
    if shutil.which("chattr") is None:
        pytest.skip("chattr is not installed")
    proc = os.system(f"chattr {flag} '{path}' 2>/dev/null")
    if proc != 0:
        pytest.skip(f"this filesystem does not take chattr {flag}")


async def test_permission_refusal_is_an_access_error_naming_path_and_fix(tmp_path: Path) -> None:
    """An immutable folder refuses even root (EPERM): a real refusal of the filesystem."""
    vault = VaultBlock(root=str(tmp_path / "vault"))
    await vault.astore_json("locked/old.json", {"v": 1})
    folder = vault.local_root() / "locked"
    _chattr(folder, "+i")
    try:
        with pytest.raises(
            VaultAccessError,
            match=r"write of 'locked/new.json' in local vault .*permission denied "
            r"\(EPERM\)\. Give the user running the flow",
        ) as info:
            await vault.astore_json("locked/new.json", {"v": 2})
        assert isinstance(info.value.__cause__, PermissionError)
        with pytest.raises(VaultAccessError, match=r"'locked/old.json'.*EPERM"):
            await vault.adelete_object("locked/old.json")
    finally:
        _chattr(folder, "-i")
    assert await vault.alist_objects() == ["locked/old.json"]


async def test_create_only_clash_still_names_the_relative_path(tmp_path: Path) -> None:
    vault = VaultBlock(root=str(tmp_path / "vault"))
    await vault.astore_json("c/once.json", {"v": 1}, overwrite=False)
    with pytest.raises(
        VaultObjectExistsError, match=r"'c/once.json' in local vault .* already exists"
    ):
        await vault.astore_json("c/once.json", {"v": 2}, overwrite=False)


def test_vault_errors_stay_in_the_tree() -> None:
    assert issubclass(VaultAccessError, VaultError) and issubclass(VaultPathError, VaultError)
    assert asyncio.iscoroutinefunction(LocalProvider.put)
