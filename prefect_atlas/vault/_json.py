"""JSON encoding for the vault that refuses what JSON cannot hold, saying what and where.

``orjson`` writes NaN and ±Infinity as ``null`` without a word: a score of ``nan`` stored
today reads back as ``None`` tomorrow, and nothing said it changed. Lone surrogates and
integers beyond 64 bits it refuses, but with a message that names neither the value nor
where it is. So the vault encodes with ``orjson`` (fast path unchanged) and then:

* when the output contains ``null``, scans the object once to tell a real ``None`` from a
  NaN or an infinity (objects without ``null`` in their JSON cannot hold either, so that
  case costs one substring search; with ``null`` the scan costs about as much as orjson's
  own encoding);
* when ``orjson`` refuses, walks the object to find the first offending value and raises
  an error naming its key path, such as ``$["segments"][3]["score"]``.

Value problems (NaN, infinity, surrogate, out-of-range integer) are ``ValueError``; a type
JSON has no form for stays a ``TypeError``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import math
import uuid
from typing import Any

import orjson

OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
# What orjson keeps exactly: a signed 64-bit floor, an unsigned 64-bit ceiling.
INT_MIN = -(2**63)
INT_MAX = 2**64 - 1
_SCALARS = (str, int, float, bool, type(None), dt.datetime, dt.date, dt.time, uuid.UUID)


def _step(path: str, key: Any) -> str:
    # Keys as JSON strings (ASCII-escaped, so a surrogate in a key prints safely).
    return f"{path}[{json.dumps(key)}]" if isinstance(key, str) else f"{path}[{key}]"


def _surrogate(text: str) -> str | None:
    for char in text:
        if 0xD800 <= ord(char) <= 0xDFFF:
            return f"U+{ord(char):04X}"
    return None


def _children(value: Any) -> list[tuple[Any, Any]] | None:
    """``(key, child)`` pairs of a container orjson serialises, or None for a leaf."""
    if isinstance(value, dict):
        return list(value.items())
    if isinstance(value, list | tuple):
        return list(enumerate(value))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [(f.name, getattr(value, f.name)) for f in dataclasses.fields(value)]
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):
        converted = value.tolist()
        return _children(converted) if isinstance(converted, list) else [(None, converted)]
    return None


# orjson refuses to nest deeper than 254 levels; the walk stops there too. A cycle is nested
# without end: the walk must not run into Python's recursion limit, where a garbage collection
# would run finalizers (of other objects) with no stack left for them.
_MAX_DEPTH = 255


def find_problem(
    value: Any, path: str = "$", _depth: int = 0
) -> tuple[str, str, type[Exception]] | None:
    """The first value JSON cannot hold faithfully: ``(what, where, error class)``, or None
    (also for a value nested deeper than orjson accepts, a cycle among them)."""
    if _depth > _MAX_DEPTH:
        return None
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float):
        if math.isfinite(value):
            return None
        return (
            f"{value!r} (JSON has no NaN or Infinity; orjson would store null)",
            path,
            ValueError,
        )
    if isinstance(value, int):
        if INT_MIN <= value <= INT_MAX:
            return None
        return (
            f"the integer {value} (beyond the 64-bit range "
            "[-2**63, 2**64-1]; store it as a string)",
            path,
            ValueError,
        )
    if isinstance(value, str):
        bad = _surrogate(value)
        if bad is None:
            return None
        return (
            f"a lone surrogate {bad} in a string (not valid Unicode; fix the text or decode its "
            "source with errors='replace')",
            path,
            ValueError,
        )
    if isinstance(value, enum.Enum):
        return find_problem(value.value, path, _depth + 1)
    children = _children(value)
    if children is None:
        if isinstance(value, _SCALARS):
            return None
        return (
            f"a {type(value).__name__} (no JSON form; convert it to a dict, list, str or number)",
            path,
            TypeError,
        )
    for key, child in children:
        where = path if key is None else _step(path, key)
        if isinstance(value, dict):
            if isinstance(key, str) and (bad := _surrogate(key)) is not None:
                return (
                    f"a lone surrogate {bad} in a key (not valid Unicode; fix the key)",
                    where,
                    ValueError,
                )
            if isinstance(key, int) and not isinstance(key, bool) and not INT_MIN <= key <= INT_MAX:
                return (
                    f"the integer key {key} (beyond the 64-bit range; use a string key)",
                    where,
                    ValueError,
                )
        found = find_problem(child, where, _depth + 1)
        if found is not None:
            return found
    return None


def _has_non_finite(obj: Any) -> bool:
    """Whether ``obj`` holds a NaN or an infinity anywhere: one iterative pass, no paths.

    The common types are dispatched on ``type(...) is`` (about 20x faster than the path
    walk of :func:`find_problem`, which then runs only to name the culprit).
    """
    stack = [obj]
    isfinite = math.isfinite
    plain = _PLAIN
    while stack:
        value = stack.pop()
        kind = type(value)
        if kind is float:
            if not isfinite(value):
                return True
        elif kind is dict:
            stack.extend(value.values())
        elif kind is list or kind is tuple:
            stack.extend(value)
        elif kind in plain:
            continue
        elif isinstance(value, float):
            if not isfinite(value):
                return True
        elif isinstance(value, enum.Enum):
            stack.append(value.value)
        else:
            children = _children(value)
            if children is not None:
                stack.extend(child for _, child in children)
    return False


_PLAIN = frozenset({str, int, bool, type(None)})


def dumps(obj: Any, *, what: str) -> bytes:
    """``obj`` as JSON bytes, or an error naming the offending value and its key path.

    ``what`` says whose object it is in the message (``"object for 'notes/a.json'"``).
    """
    try:
        data = orjson.dumps(obj, option=OPTIONS)
    except orjson.JSONEncodeError as exc:
        found = find_problem(obj)
        if found is None:  # too deep, or a cycle: orjson's own message says so
            raise TypeError(f"{what} is not JSON-serialisable: {exc}") from None
        problem, where, kind = found
        raise kind(f"{what} cannot be stored as JSON: {problem} at {where}") from None
    if b"null" in data and _has_non_finite(obj):
        found = find_problem(obj)
        if found is not None and found[2] is ValueError:
            problem, where, kind = found
            raise kind(f"{what} cannot be stored as JSON: {problem} at {where}")
    return data
