-- Atlas hot index: channels, videos and transcript pointers.
-- Everything lives in the `atlas` schema so that Atlas can share a database with other
-- applications without name clashes.

CREATE TABLE atlas.channels (
    channel_id   TEXT PRIMARY KEY CHECK (channel_id ~ '^UC[A-Za-z0-9_-]{22}$'),
    title        TEXT NOT NULL DEFAULT '',
    handle       TEXT,
    country      TEXT,
    metadata     JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE atlas.videos (
    video_id      TEXT PRIMARY KEY CHECK (video_id ~ '^[A-Za-z0-9_-]{10}[AEIMQUYcgkosw048]$'),
    channel_id    TEXT NOT NULL REFERENCES atlas.channels (channel_id) ON DELETE CASCADE,
    title         TEXT NOT NULL DEFAULT '',
    description   TEXT NOT NULL DEFAULT '',
    category_id   INTEGER,
    tags          TEXT[] NOT NULL DEFAULT '{}',
    duration_s    INTEGER CHECK (duration_s IS NULL OR duration_s >= 0),
    view_count    BIGINT CHECK (view_count IS NULL OR view_count >= 0),
    published_at  TIMESTAMPTZ,
    status        TEXT NOT NULL DEFAULT 'discovered'
                  CHECK (status IN ('discovered', 'ingested', 'transcribed', 'archived', 'failed', 'removed')),
    metadata      JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- "Which videos carry tag X" is the hunt query: GIN answers `tags @> ARRAY[...]` and `&&`.
CREATE INDEX videos_tags_gin ON atlas.videos USING GIN (tags);
CREATE INDEX videos_category_id ON atlas.videos (category_id);
-- Newest-first listings, globally and per channel.
CREATE INDEX videos_published_at_desc ON atlas.videos (published_at DESC NULLS LAST);
CREATE INDEX videos_channel_published ON atlas.videos (channel_id, published_at DESC NULLS LAST);
CREATE INDEX videos_status ON atlas.videos (status);

-- Transcripts live in the vault; the hot index keeps pointers and integrity data.
CREATE TABLE atlas.transcripts (
    video_id       TEXT NOT NULL REFERENCES atlas.videos (video_id) ON DELETE CASCADE,
    language       TEXT NOT NULL DEFAULT 'en' CHECK (language ~ '^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$'),
    vault_provider TEXT NOT NULL,
    vault_path     TEXT NOT NULL,
    sha256         TEXT CHECK (sha256 IS NULL OR sha256 ~ '^[0-9a-f]{64}$'),
    size_bytes     BIGINT CHECK (size_bytes IS NULL OR size_bytes >= 0),
    segment_count  INTEGER NOT NULL DEFAULT 0 CHECK (segment_count >= 0),
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (video_id, language)
);
