"""Bad input is refused before it reaches PostgreSQL or the spool, naming the field."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import pytest

from prefect_atlas.events.store import EventStore
from prefect_atlas.events.validation import new_event_id, prepare


@pytest.mark.parametrize("bad", ["Video.Ingested", "video..x", ".video", "video-ingested", "", "vidéo", "a b"])
def test_event_type_pattern(bad: str) -> None:
    with pytest.raises(ValueError, match=r"event_type .* is invalid"):
        prepare(bad, "e", {})


def test_good_event_types() -> None:
    for good in ["video", "video.ingested", "a_1.b_2.c3"]:
        assert prepare(good, "e", {}).event_type == good


def test_entity_id_limits() -> None:
    assert prepare("a", "x" * 200, {}).entity_id == "x" * 200
    with pytest.raises(ValueError, match="201 characters long; the maximum is 200"):
        prepare("a", "x" * 201, {})
    with pytest.raises(ValueError, match="non-empty"):
        prepare("a", "", {})


def test_unserializable_payload_names_key_path() -> None:
    with pytest.raises(TypeError, match=r"payload\['a'\]\[1\]\['when'\] is a Decimal"):
        prepare("a", "e", {"ok": 1, "a": [0, {"when": Decimal("1.5")}]})
    with pytest.raises(TypeError, match=r"payload\['m'\] has a non-string key 3"):
        prepare("a", "e", {"m": {3: "x"}})
    with pytest.raises(TypeError, match="payload must be a mapping"):
        prepare("a", "e", [1, 2])  # type: ignore[arg-type]


def test_payload_size_limit() -> None:
    big = {"blob": "x" * (1024 * 1024)}
    with pytest.raises(ValueError, match=r"payload is 1048587 bytes serialized; the maximum is 1048576"):
        prepare("a", "e", big)
    assert len(prepare("a", "e", {"blob": "x" * 1000}, max_payload_bytes=2000).payload) < 2000


def test_nul_in_payload_names_path() -> None:
    with pytest.raises(ValueError, match=r"payload\['k'\]\[0\] contains a NUL"):
        prepare("a", "e", {"k": ["a\x00b"]})


def test_event_id_and_time() -> None:
    fixed = uuid.uuid4()
    assert prepare("a", "e", {}, event_id=str(fixed)).event_id == fixed
    with pytest.raises(ValueError, match="event_id 'nope' is not a UUID"):
        prepare("a", "e", {}, event_id="nope")
    with pytest.raises(ValueError, match="timezone-aware"):
        prepare("a", "e", {}, occurred_at=dt.datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="expected_version must be an integer >= 0"):
        prepare("a", "e", {}, expected_version=-1)


def test_new_event_ids_are_time_ordered_v7() -> None:
    ids = [new_event_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in ids)
    stamps = [i.int >> 80 for i in ids]
    assert stamps == sorted(stamps)


async def test_emit_many_names_the_bad_index(store: EventStore) -> None:
    with pytest.raises(ValueError, match=r"events\[1\]: event_type 'BAD'"):
        await store.aemit_many([{"event_type": "ok", "entity_id": "e"}, {"event_type": "BAD", "entity_id": "e"}])
    with pytest.raises(ValueError, match=r"events\[0\] has unknown key\(s\) \['typo'\]"):
        await store.aemit_many([{"event_type": "ok", "entity_id": "e", "typo": 1}])
    assert store.spool_size() == 0
