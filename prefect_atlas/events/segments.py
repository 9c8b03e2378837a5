"""The vault tier of the spool: segments of spooled events that outlive the worker.

Why: on Docker and Kubernetes work pools the container — and ``ATLAS_HOME`` with its spool
file — is thrown away when the flow run ends. When the final drain at exit cannot reach
PostgreSQL, the events still spooled are shipped to the vault (which outlives the pod) as
segments; any later drain with that vault claims them, stores their events (ids are
idempotent, so a segment stored twice stores nothing new) and deletes them.

A segment is one object under ``atlas-spool/<target>/`` (``<target>`` a digest of the
database target, so events only ever go back to the database they were meant for), written
create-only. Its first line is a header with the count and the SHA-256 of the rest; each
further line is one event as :func:`~prefect_atlas.events.spool.dump_event` writes it. A
segment whose checksum does not match is never stored (and never deleted): it is reported.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Sequence

from prefect_atlas.events.spool import dump_event, load_event
from prefect_atlas.events.validation import PreparedEvent
from prefect_atlas.exceptions import SegmentError as SegmentError

PREFIX = "atlas-spool"
FORMAT = "atlas-spool-segment/1"
# Events per segment: small enough to fetch and store in one go, few objects per outage.
SEGMENT_EVENTS = 10_000


def folder(target_digest: str) -> str:
    return f"{PREFIX}/{target_digest}"


def new_path(target_digest: str) -> str:
    """A fresh segment path; names sort by the time they were written."""
    return f"{folder(target_digest)}/{time.time_ns():020d}-{uuid.uuid4().hex}.jsonl"


def encode(events: Sequence[PreparedEvent]) -> bytes:
    body = b"\n".join(dump_event(e) for e in events)
    header = {"format": FORMAT, "count": len(events), "sha256": hashlib.sha256(body).hexdigest()}
    return json.dumps(header).encode("ascii") + b"\n" + body


def decode(data: bytes, path: str) -> list[PreparedEvent]:
    head, _, body = data.partition(b"\n")
    try:
        header = json.loads(head)
        if header.get("format") != FORMAT:
            raise SegmentError(
                f"segment {path} has format {header.get('format')!r}, not {FORMAT!r}"
            )
        if hashlib.sha256(body).hexdigest() != header["sha256"]:
            raise SegmentError(
                f"segment {path} does not match its checksum: it was changed or cut short"
            )
        events = [load_event(line) for line in body.split(b"\n")] if body else []
    except SegmentError:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise SegmentError(f"segment {path} cannot be read: {exc}") from None
    if len(events) != header["count"]:
        raise SegmentError(
            f"segment {path} holds {len(events)} events, its header says {header['count']}"
        )
    return events
