-- Archives of the event log: whole partitions exported to the vault as Parquet, then dropped.
--
-- Retention removes old partitions of atlas.events, but the log stays readable: every dropped
-- partition has exactly one row here naming its Parquet file and manifest in the vault, and
-- `EventStore.replay(include_archive=True)` reads those files back and merges them with the
-- live table in (xid, position) order. Why each part is here (see docs/events.md, "Retention
-- and archive"):
--
-- * One row per partition, keyed by the partition's name: re-running the archive of a
--   partition (after a crash between its steps) finds its row and resumes instead of
--   archiving twice. The range is the partition's [lower, upper) on recorded_at.
-- * A row is written only after the files were read back from the vault and verified
--   (sha256 of the Parquet file, row count, first and last cursor, content checksum), so a
--   row means "this archive is good". `status` says what happened to the partition since:
--   'verified' (still attached: the rows are in the live table AND in the archive; readers
--   de-duplicate on (xid, position)), then 'dropped' (gone from the table; the archive is
--   the only copy). Nothing is dropped without a 'verified' row first, and the drop re-checks
--   the partition's count and cursors against this row under a lock.
-- * The (xid, position) range lets a reader skip archives wholly before its cursor and open
--   an archive only when the merge reaches its first cursor; the position range finds the
--   archive holding an `after_position`; the occurred_at range skips archives outside a
--   since/until filter. They are NULL for an archive of an empty partition (row_count = 0).
-- * `sha256` is the Parquet file's digest, checked again on every read; `content_sha256` is
--   the checksum of the rows themselves (independent of the file's encoding), compared
--   between the rows read from PostgreSQL and the rows decoded from the file.
-- * Keys are vault paths (under events-archive/YYYY/MM/DD/); `vault` describes the vault
--   that holds them (no secrets) so an operator knows where to look.

CREATE TABLE atlas.event_archives (
    partition_name   TEXT PRIMARY KEY,
    range_lower      TIMESTAMPTZ NOT NULL,
    range_upper      TIMESTAMPTZ NOT NULL,
    row_count        BIGINT NOT NULL CHECK (row_count >= 0),
    min_xid          XID8,
    min_position     BIGINT,
    max_xid          XID8,
    max_position     BIGINT,
    low_position     BIGINT,
    high_position    BIGINT,
    min_occurred_at  TIMESTAMPTZ,
    max_occurred_at  TIMESTAMPTZ,
    parquet_key      TEXT NOT NULL,
    manifest_key     TEXT NOT NULL,
    sha256           TEXT NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    content_sha256   TEXT NOT NULL CHECK (content_sha256 ~ '^[0-9a-f]{64}$'),
    size_bytes       BIGINT NOT NULL CHECK (size_bytes > 0),
    row_groups       INTEGER NOT NULL CHECK (row_groups >= 0),
    schema_version   INTEGER NOT NULL,
    vault            TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('verified', 'dropped')),
    archived_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    dropped_at       TIMESTAMPTZ,
    CONSTRAINT event_archives_range CHECK (range_lower < range_upper),
    CONSTRAINT event_archives_dropped CHECK ((status = 'dropped') = (dropped_at IS NOT NULL)),
    -- An empty partition has no cursors; any other has all of them.
    CONSTRAINT event_archives_cursors CHECK (
        (row_count = 0) = (min_xid IS NULL)
        AND num_nulls(min_xid, min_position, max_xid, max_position, low_position,
                      high_position, min_occurred_at, max_occurred_at) IN (0, 8)
    )
);

-- Readers list the archives in range order, and look up the one holding a position.
CREATE INDEX event_archives_range_idx ON atlas.event_archives (range_lower);
