"""Griffe extension for the API reference: field descriptions, and reST roles as links.

A pydantic field's documentation is its ``Field(description=...)`` (what the Prefect UI
shows for a block field): it becomes the field's docstring, as an attribute docstring would.

The docstrings are written for readers of the source and of ``help()``: ``code`` in double
backticks and Sphinx roles such as :class:`~prefect_atlas.DatabaseBlock`. mkdocstrings
renders Markdown, so this extension rewrites each role into an autorefs link to the
object's canonical path (``[DatabaseBlock][prefect_atlas.database.block.DatabaseBlock]``).
A role whose target does not exist is left as a link to the written path, so that
``mkdocs build --strict`` fails on it: broken references are caught at build time.
"""

from __future__ import annotations

import ast
import inspect
import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|exc|obj):`(~?)([\w.]+)(\(\))?`")
LITERAL = re.compile(r"(?<!`)``(?!`)([^`\n]+?)``(?!`)")
ROOT = "prefect_atlas"


class AtlasDocstrings(griffe.Extension):
    """Field descriptions as docstrings; reST roles and literals rewritten as Markdown."""

    def __init__(self, *, roles: bool = True) -> None:
        super().__init__()
        self.roles = roles

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        for obj in _walk(pkg):
            if obj.docstring is None and isinstance(obj, griffe.Attribute):
                description = field_description(obj)
                if description is not None:
                    obj.docstring = griffe.Docstring(description, parent=obj)
            if self.roles and obj.docstring is not None:
                obj.docstring.value = _rewrite(obj.docstring.value, obj, pkg)


def field_description(attr: griffe.Attribute) -> str | None:
    """The ``description=`` of a ``Field(...)`` assigned to ``attr``, or None."""
    value = attr.value
    if not isinstance(value, griffe.ExprCall) or not str(value.function).endswith("Field"):
        return None
    for argument in value.arguments:
        if isinstance(argument, griffe.ExprKeyword) and argument.name == "description":
            try:
                text = ast.literal_eval(str(argument.value))
            except (ValueError, SyntaxError):
                return None
            return inspect.cleandoc(text) if isinstance(text, str) else None
    return None


def _walk(obj: griffe.Object) -> list[griffe.Object]:
    found = [obj]
    for member in obj.members.values():
        if not member.is_alias:
            found.extend(_walk(member))  # type: ignore[arg-type]
    return found


def _rewrite(text: str, obj: griffe.Object, pkg: griffe.Module) -> str:
    def role(match: re.Match[str]) -> str:
        short, path, call = match.group(1), match.group(2), match.group(3) or ""
        target = _resolve(path, obj, pkg)
        shown = path.rsplit(".", 1)[-1] if short else path
        return f"[`{shown}{call}`][{target or path}]"

    return LITERAL.sub(r"`\1`", ROLE.sub(role, text))


def _resolve(path: str, obj: griffe.Object, pkg: griffe.Module) -> str | None:
    """The canonical path of ``path`` as written in ``obj``'s docstring, or None."""
    scopes: list[griffe.Object] = []
    scope: griffe.Object | None = obj
    while scope is not None:
        scopes.append(scope)
        scope = scope.parent
    for base in scopes:
        for candidate in (f"{base.path}.{path}", path):
            found = _lookup(candidate, pkg)
            if found is not None:
                return found
    return None


def _lookup(path: str, pkg: griffe.Module) -> str | None:
    if path == ROOT:
        return ROOT
    if not path.startswith(ROOT + "."):
        return None
    try:
        found = pkg[path.removeprefix(ROOT + ".")]
    except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None
    try:
        return str(found.final_target.path if found.is_alias else found.path)
    except (griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None
