"""JSON the vault cannot store faithfully is refused, naming what and where; nothing is written."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest

from prefect_atlas import VaultBlock, VaultPathError


@dataclasses.dataclass
class Frame:
    t: float
    label: str


CASES: list[tuple[Any, type[Exception], str]] = [
    (
        {"segments": [{"score": 0.5}, {"score": math.nan}]},
        ValueError,
        r"""nan \(JSON has no NaN or Infinity; orjson would store null\) """
        r"""at \$\["segments"\]\[1\]\["score"\]""",
    ),
    (
        {"a": {"b": math.inf}},
        ValueError,
        r"""inf \(JSON has no NaN or Infinity.* at \$\["a"\]\["b"\]$""",
    ),
    ([1, [2, -math.inf]], ValueError, r"-inf .* at \$\[1\]\[1\]$"),
    (math.nan, ValueError, r"nan .* at \$$"),
    (
        {"frames": (Frame(0.0, "a"), Frame(math.nan, "b"))},
        ValueError,
        r"""nan .* at \$\["frames"\]\[1\]\["t"\]$""",
    ),
    (
        {"title": "ok \ud83d"},
        ValueError,
        r"""a lone surrogate U\+D83D in a string .* at \$\["title"\]$""",
    ),
    ({"t\udc00": 1}, ValueError, r"""a lone surrogate U\+DC00 in a key .* at \$\["t\\udc00"\]$"""),
    (
        {"n": [2**64]},
        ValueError,
        r"""the integer 18446744073709551616 \(beyond the 64-bit range .* at \$\["n"\]\[0\]$""",
    ),
    ({"n": -(2**63) - 1}, ValueError, r"""the integer -9223372036854775809 .* at \$\["n"\]$"""),
    (
        {7: {2**70: "x"}},
        ValueError,
        r"the integer key 1180591620717411303424 .* at \$\[7\]\[1180591620717411303424\]$",
    ),
    ({"tags": {"a", "b"}}, TypeError, r"""a set \(no JSON form; .*\) at \$\["tags"\]$"""),
]


@pytest.mark.parametrize(("obj", "kind", "message"), CASES)
async def test_unstorable_values_are_refused_with_their_key_path(
    tmp_path: Path, obj: Any, kind: type[Exception], message: str
) -> None:
    vault = VaultBlock(root=str(tmp_path / "vault"))
    with pytest.raises(
        kind, match=r"^object for 'x/doc.json' cannot be stored as JSON: " + message
    ) as info:
        await vault.astore_json("x/doc.json", obj)
    assert type(info.value) is kind
    assert await vault.alist_objects() == [], "nothing may be written"


async def test_limits_and_lookalikes_are_stored_as_given(tmp_path: Path) -> None:
    vault = VaultBlock(root=str(tmp_path / "vault"))
    obj = {
        "max": 2**64 - 1,
        "min": -(2**63),
        "none": None,
        "text": "NaN",
        "escaped": "\\ud800 is text",
        "emoji": "\U0001f600",
        "nested": [None, {"null": None}],
    }
    await vault.astore_json("ok.json", obj)
    assert await vault.afetch_json("ok.json") == obj


async def test_the_layout_methods_refuse_too(tmp_path: Path) -> None:
    vault = VaultBlock(root=str(tmp_path / "vault"))
    with pytest.raises(ValueError, match=r"""at \$\["segments"\]\[0\]\["end"\]$"""):
        await vault.astore_transcript("vid", [{"start": 0.0, "end": math.inf}])
    with pytest.raises(ValueError, match=r"""at \$\["duration"\]$"""):
        await vault.astore_metadata("vid", {"duration": math.nan}, date="2024-01-01")
    assert await vault.alist_objects() == []


async def test_a_lone_surrogate_in_a_path_is_refused(tmp_path: Path) -> None:
    vault = VaultBlock(root=str(tmp_path / "vault"))
    with pytest.raises(
        VaultPathError, match=r"contains a lone surrogate \(U\+D800 at character 2\)"
    ):
        await vault.astore_json("a/\ud800.json", {})


async def test_a_cycle_is_a_type_error_not_a_crash(tmp_path: Path) -> None:
    vault = VaultBlock(root=str(tmp_path / "vault"))
    loop: dict[str, Any] = {}
    loop["self"] = loop
    with pytest.raises(
        TypeError, match=r"^object for 'c.json' is not JSON-serialisable: Recursion limit reached"
    ):
        await vault.astore_json("c.json", loop)
