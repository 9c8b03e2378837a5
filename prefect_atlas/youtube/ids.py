"""YouTube id validation, with errors that say exactly what is wrong.

A video id is 11 characters of the URL-safe base64 alphabet encoding a 64-bit number:
11 x 6 = 66 bits, so the last character carries only 4 significant bits and its low 2 bits
are always zero — it is one of ``AEIMQUYcgkosw048``. A channel id is ``UC`` followed by 22
characters of the same alphabet.
"""

from __future__ import annotations

import re

from prefect_atlas.exceptions import InvalidYouTubeIdError as InvalidYouTubeIdError

_ALPHABET = re.compile(r"^[A-Za-z0-9_-]+$")
VIDEO_ID_LAST_CHARS = "AEIMQUYcgkosw048"
VIDEO_ID_LENGTH = 11
CHANNEL_ID_LENGTH = 24


def _describe(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "...'"


def validate_video_id(value: object) -> str:
    """Return ``value`` if it is a well-formed YouTube video id, else raise with the reason.

    >>> validate_video_id("dQw4w9WgXc")
    Traceback (most recent call last):
    ...
    prefect_atlas.exceptions.InvalidYouTubeIdError: video id 'dQw4w9WgXc' has 10 characters; ...
    """
    if not isinstance(value, str):
        raise InvalidYouTubeIdError(f"video id must be a string, got {type(value).__name__}")
    if len(value) != VIDEO_ID_LENGTH:
        raise InvalidYouTubeIdError(
            f"video id {_describe(value)} has {len(value)} "
            "characters; YouTube video ids have exactly 11"
        )
    bad = sorted({c for c in value if not _ALPHABET.match(c)})
    if bad:
        raise InvalidYouTubeIdError(
            f"video id {_describe(value)} contains {''.join(bad)!r}; "
            "only A-Z, a-z, 0-9, '-' and '_' are allowed"
        )
    if value[-1] not in VIDEO_ID_LAST_CHARS:
        raise InvalidYouTubeIdError(
            f"video id {_describe(value)} ends with {value[-1]!r}; the last character of a real "
            f"id is one of {VIDEO_ID_LAST_CHARS} (it encodes the last 4 bits of a 64-bit number)"
        )
    return value


def validate_channel_id(value: object) -> str:
    """Return ``value`` if it is a well-formed channel id (``UC`` + 22), else raise with the
    reason."""
    if not isinstance(value, str):
        raise InvalidYouTubeIdError(f"channel id must be a string, got {type(value).__name__}")
    if not value.startswith("UC"):
        hint = (
            " (that looks like a @handle; resolve it to the channel id)"
            if value.startswith("@")
            else ""
        )
        raise InvalidYouTubeIdError(f"channel id {_describe(value)} must start with 'UC'{hint}")
    if len(value) != CHANNEL_ID_LENGTH:
        raise InvalidYouTubeIdError(
            f"channel id {_describe(value)} has {len(value)} "
            "characters; channel ids are 'UC' + 22 = 24"
        )
    bad = sorted({c for c in value if not _ALPHABET.match(c)})
    if bad:
        raise InvalidYouTubeIdError(
            f"channel id {_describe(value)} contains {''.join(bad)!r}; "
            "only A-Z, a-z, 0-9, '-' and '_' are allowed"
        )
    return value


def is_video_id(value: object) -> bool:
    """True when ``value`` is a well-formed YouTube video id (see :func:`validate_video_id`).

    >>> is_video_id("dQw4w9WgXcQ"), is_video_id("dQw4w9WgXc")
    (True, False)
    """
    try:
        validate_video_id(value)
    except InvalidYouTubeIdError:
        return False
    return True


def is_channel_id(value: object) -> bool:
    """True when ``value`` is a well-formed channel id (``UC`` and 22 more characters).

    >>> is_channel_id("UCuAXFkgsw1L7xaCfnd5JJOw"), is_channel_id("dQw4w9WgXcQ")
    (True, False)
    """
    try:
        validate_channel_id(value)
    except InvalidYouTubeIdError:
        return False
    return True
