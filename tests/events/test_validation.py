"""Bad input is refused before it reaches PostgreSQL or the spool, naming the field."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import pytest

from prefect_atlas import DatabaseBlock, NewEvent
from prefect_atlas.events.store import EventStore
from prefect_atlas.events.validation import new_event_id, new_event_ids, prepare


@pytest.mark.parametrize(
    "bad", ["Video.Ingested", "video..x", ".video", "video-ingested", "", "vidéo", "a b"]
)
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
    with pytest.raises(
        ValueError, match=r"payload is 1048587 bytes serialized; the maximum is 1048576"
    ):
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


def test_new_event_ids_in_bulk_are_ordinary_v7_uuids() -> None:
    ids = new_event_ids(5000)
    assert len(set(ids)) == 5000
    for i in ids[:200]:
        twin = uuid.UUID(str(i))  # built the ordinary way: equal, same hash, same behaviour
        assert (i, hash(i), i.version, i.variant, i.is_safe) == (
            twin,
            hash(twin),
            7,
            uuid.RFC_4122,
            twin.is_safe,
        )
    assert len({i.int >> 80 for i in ids}) <= 2  # one clock read (a millisecond boundary at most)


async def test_emit_many_names_the_bad_index(store: EventStore) -> None:
    with pytest.raises(ValueError, match=r"events\[1\]: event_type 'BAD'"):
        await store.aemit_many(
            [{"event_type": "ok", "entity_id": "e"}, {"event_type": "BAD", "entity_id": "e"}]
        )
    with pytest.raises(ValueError, match=r"events\[0\] has unknown key\(s\) \['typo'\]"):
        await store.aemit_many([{"event_type": "ok", "entity_id": "e", "typo": 1}])
    assert store.spool_size() == 0


async def test_emit_many_bad_payload_mid_batch_stores_nothing(
    store: EventStore, db: DatabaseBlock
) -> None:
    """Payloads are serialized while the COPY streams: a bad one late in a batch aborts it whole."""
    events = [NewEvent("ok.fine", f"e{i % 3}", {"i": i}) for i in range(2000)]
    events[1500] = NewEvent("ok.fine", "e0", {"when": Decimal("1.5")})
    with pytest.raises(TypeError, match=r"events\[1500\]: payload\['when'\] is a Decimal"):
        await store.aemit_many(events)
    events[1500] = NewEvent("ok.fine", "e0", {"big": "x" * 2000})
    small = EventStore(db, spool_path=store.spool_path, max_payload_bytes=1000)
    with pytest.raises(ValueError, match=r"events\[1500\]: payload is 2010 bytes"):
        await small.aemit_many(events)
    small.close()
    assert await db.afetch_one("SELECT count(*) FROM atlas.events") == (0,)
    assert store.spool_size() == 0
    assert len(await store.aemit_many(events[:1500])) == 1500  # the connection is fine afterwards
    assert await db.afetch_one(
        "SELECT count(*), max(version) FROM atlas.events WHERE entity_id = 'e0'"
    ) == (500, 500)


class _NoOffset(dt.tzinfo):
    """A tzinfo that is attached but gives no offset: the datetime is naive in fact."""

    def utcoffset(self, when: dt.datetime | None) -> dt.timedelta | None:
        return None

    def dst(self, when: dt.datetime | None) -> dt.timedelta | None:
        return None

    def tzname(self, when: dt.datetime | None) -> str | None:
        return None


@pytest.mark.parametrize("bad", ["video.ingested\n", "video\n.ingested", "\nvideo"])
def test_event_type_with_newline_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match=r"event_type .* is invalid"):
        prepare(bad, "e", {})


def test_occurred_at_with_tzinfo_but_no_offset() -> None:
    with pytest.raises(ValueError, match="with no UTC offset: it must be timezone-aware"):
        prepare("a", "e", {}, occurred_at=dt.datetime(2024, 1, 1, tzinfo=_NoOffset()))


@pytest.mark.parametrize(
    ("payload", "where", "shown"),
    [
        ({"x": float("nan")}, r"payload\['x'\]", "nan"),
        ({"a": [1, {"b": float("inf")}]}, r"payload\['a'\]\[1\]\['b'\]", "inf"),
        ({"a": (float("-inf"),)}, r"payload\['a'\]\[0\]", "-inf"),
    ],
)
def test_non_finite_numbers_name_the_key_path(
    payload: dict[str, object], where: str, shown: str
) -> None:
    with pytest.raises(ValueError, match=rf"{where} is {shown}, which JSON cannot represent"):
        prepare("a", "e", payload)


def test_none_is_still_null() -> None:
    assert prepare("a", "e", {"x": None, "y": 1.5}).payload == b'{"x":null,"y":1.5}'


def test_lone_surrogates_and_huge_ints_say_what_and_where() -> None:
    with pytest.raises(
        ValueError, match=r"payload\['t'\]\[0\] has a lone surrogate U\+D800 at index 2"
    ):
        prepare("a", "e", {"t": ["ab\ud800"]})
    with pytest.raises(
        ValueError, match=r"payload\['n'\] is the integer 18446744073709551616, beyond"
    ):
        prepare("a", "e", {"n": 2**64})
    assert (
        prepare("a", "e", {"n": 2**64 - 1, "m": -(2**63)}).payload
        == b'{"n":18446744073709551615,"m":-9223372036854775808}'
    )
    with pytest.raises(ValueError, match=r"entity_id has a lone surrogate U\+DC80 at index 1"):
        prepare("a", "e\udc80", {})
    from prefect_atlas.events.batch import CheckedBatch

    with pytest.raises(ValueError, match=r"events\[1\]: entity_id has a lone surrogate"):
        CheckedBatch(
            [("a", "ok", None, None, None), ("a", "\udc80", None, None, None)],
            max_payload_bytes=100,
        )


def test_backslash_u0000_text_is_not_a_nul() -> None:
    assert prepare("a", "e", {"t": "\\u0000"}).payload == b'{"t":"\\\\u0000"}'
    with pytest.raises(ValueError, match=r"payload\['t'\] contains a NUL"):
        prepare("a", "e", {"t": "\\u0000", "u": 1, "v": "x"} | {"t": "x\x00"})


async def test_everything_emit_accepts_the_database_accepts(store: EventStore) -> None:
    """The quirks that pass Python's checks must store, and be read back unchanged."""
    tricky = {
        "text": "\\u0000 is not a NUL",
        "big": 2**64 - 1,
        "small": -(2**63),
        "none": None,
        "unicode": "vidéo ✓ 😀",
        "nested": [[[{"k": 1e308}]]],
    }
    when = dt.datetime(2024, 5, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=45)))
    event_id = await store.aemit("video.ingested", "vidéo-😀", tricky, occurred_at=when)
    [event] = [e async for e in store.replay(entity_id="vidéo-😀")]
    assert event.event_id == event_id
    assert event.payload == tricky
    assert event.occurred_at == when
