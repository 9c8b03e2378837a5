-- Read models rebuilt from the event log by flows/replay.py. They hold nothing the log does
-- not: dropping a row and replaying restores it.

CREATE TABLE atlas.channel_video_counts (
    channel_id     TEXT PRIMARY KEY,
    videos         INTEGER NOT NULL CHECK (videos >= 0),
    last_position  BIGINT NOT NULL,
    rebuilt_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
