"""The class-or-instance descriptor behind ``VaultBlock.delete``/``adelete``."""

from __future__ import annotations

from typing import Any

from prefect_atlas._deprecation import warn_renamed


class ClassOrInstance:
    """``Block``'s classmethod on the class, a deprecated alias of ``*_object`` on instances.

    ``VaultBlock.delete("block-name")`` deletes a saved block document as on every Prefect
    block. ``vault.delete("a.json")`` has deleted a vault object and still does, with a
    ``DeprecationWarning`` naming ``delete_object``, the method that says what it does.
    """

    def __init__(self, method: Any, replacement: str) -> None:
        self.method = method
        self.replacement = replacement
        self.name = ""
        self.owner: type | None = None

    def __set_name__(self, owner: type, name: str) -> None:
        self.owner = owner
        self.name = name

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        if obj is None:
            return getattr(super(self.owner, objtype), self.name)
        warn_renamed(f"VaultBlock.{self.name}() on an instance", f"VaultBlock.{self.replacement}()")
        return self.method.__get__(obj, objtype)
