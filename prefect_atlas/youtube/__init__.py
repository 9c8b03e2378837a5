"""YouTube helpers: id validators and the API key pool."""

from prefect_atlas.youtube.ids import (
    InvalidYouTubeIdError,
    is_channel_id,
    is_video_id,
    validate_channel_id,
    validate_video_id,
)
from prefect_atlas.youtube.keys import (
    AllKeysExhaustedError,
    ApiKeyPool,
    KeyStatus,
    next_quota_reset,
)

__all__ = [
    "AllKeysExhaustedError",
    "ApiKeyPool",
    "InvalidYouTubeIdError",
    "KeyStatus",
    "is_channel_id",
    "is_video_id",
    "next_quota_reset",
    "validate_channel_id",
    "validate_video_id",
]
