"""Discord message payloads trimmed to Discord's limits.

Discord answers 400 to an embed over its limits, and the alert is lost. A failure alert
carries whatever a pipeline threw (a 50 kB traceback, a 200-key parameter dict), so every
text is cut here, visibly, with ``…(truncated)``: a shortened alert beats no alert.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from prefect_atlas.discord.enums import AlertLevel

TRUNCATED = "…(truncated)"

# https://discord.com/developers/docs/resources/message#embed-object-embed-limits
TITLE_LIMIT = 256
DESCRIPTION_LIMIT = 4096
FIELDS_LIMIT = 25
FIELD_NAME_LIMIT = 256
FIELD_VALUE_LIMIT = 1024
FOOTER_LIMIT = 2048
USERNAME_LIMIT = 80
CONTENT_LIMIT = 2000
TOTAL_LIMIT = 6000  # title + description + field names and values + footer + author

# What an alert's ``fields`` may be: a mapping, or (name, value[, inline]) tuples.
FieldsInput = Mapping[str, Any] | Sequence[tuple[str, Any] | tuple[str, Any, bool]] | None
EmbedField = dict[str, Any]


def trim(text: str, limit: int) -> str:
    """``text`` if it fits in ``limit`` characters, else cut with a visible marker."""
    if len(text) <= limit:
        return text
    if limit <= len(TRUNCATED):
        return TRUNCATED[:limit]
    return text[: limit - len(TRUNCATED)] + TRUNCATED


def normalize_fields(fields: FieldsInput) -> list[EmbedField]:
    """Embed fields from a mapping or tuples, each name and value trimmed and never empty.

    Discord rejects an empty field name or value, so those become a dash.
    """
    if fields is None:
        return []
    items: Iterable[tuple[Any, ...]] = fields.items() if isinstance(fields, Mapping) else fields
    out: list[EmbedField] = []
    for item in items:
        name, value = str(item[0]), item[1]
        inline = bool(item[2]) if len(item) > 2 else len(str(value)) <= 40
        out.append(
            {
                "name": trim(name.strip() or "-", FIELD_NAME_LIMIT),
                "value": trim(str(value).strip() or "-", FIELD_VALUE_LIMIT),
                "inline": inline,
            }
        )
    if len(out) > FIELDS_LIMIT:
        omitted = len(out) - (FIELDS_LIMIT - 1)
        out = out[: FIELDS_LIMIT - 1]
        out.append(
            {"name": TRUNCATED, "value": f"{omitted} more field(s) omitted", "inline": False}
        )
    return out


def embed_size(embed: Mapping[str, Any]) -> int:
    """Characters Discord counts against the 6,000 limit."""
    size = len(embed.get("title", "")) + len(embed.get("description", ""))
    size += sum(len(f["name"]) + len(f["value"]) for f in embed.get("fields", []))
    size += len(embed.get("footer", {}).get("text", ""))
    size += len(embed.get("author", {}).get("name", ""))
    return size


def build_embed(
    title: str,
    description: str,
    *,
    level: AlertLevel,
    fields: FieldsInput = None,
    url: str | None = None,
    footer: str | None = None,
    timestamp: dt.datetime | None = None,
) -> dict[str, Any]:
    """One embed within every Discord limit, including the 6,000-character total."""
    embed: dict[str, Any] = {
        "title": trim(title.strip() or "(no title)", TITLE_LIMIT),
        "color": level.colour,
        "timestamp": (timestamp or dt.datetime.now(dt.UTC)).isoformat(),
    }
    if description:
        embed["description"] = trim(description, DESCRIPTION_LIMIT)
    embed_fields = normalize_fields(fields)
    if embed_fields:
        embed["fields"] = embed_fields
    if url:
        embed["url"] = url
    if footer:
        embed["footer"] = {"text": trim(footer, FOOTER_LIMIT)}
    _fit_total(embed)
    return embed


def _fit_total(embed: dict[str, Any]) -> None:
    """Shrink the description, then drop trailing fields, then the footer, to fit 6,000."""
    # The description keeps its first 1,024 characters (the gist of an error) before any
    # field is dropped; only then is it cut further.
    _shrink_description(embed, floor=1024)
    fields: list[EmbedField] = embed.get("fields", [])
    dropped = 0
    while fields and embed_size(embed) > TOTAL_LIMIT:
        fields.pop()
        dropped += 1
    if dropped:
        # Say so, making room for the note by dropping one more field when needed.
        note = {"name": TRUNCATED, "value": "", "inline": False}
        fields.append(note)
        while True:
            note["value"] = f"{dropped} field(s) omitted to fit Discord's size limit"
            if embed_size(embed) <= TOTAL_LIMIT or len(fields) == 1:
                break
            fields.pop(-2)
            dropped += 1
        if embed_size(embed) > TOTAL_LIMIT:
            fields.clear()
    if not fields:
        embed.pop("fields", None)
    _shrink_description(embed, floor=len(TRUNCATED) + 1)
    footer = embed.get("footer")
    if footer is not None and embed_size(embed) > TOTAL_LIMIT:
        room = TOTAL_LIMIT - (embed_size(embed) - len(footer["text"]))
        if room > len(TRUNCATED):
            footer["text"] = trim(footer["text"], room)
        else:
            embed.pop("footer")


def _shrink_description(embed: dict[str, Any], *, floor: int) -> None:
    excess = embed_size(embed) - TOTAL_LIMIT
    description = embed.get("description", "")
    if excess > 0 and len(description) > floor:
        embed["description"] = trim(description, max(floor, len(description) - excess))
