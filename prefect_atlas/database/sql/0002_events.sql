-- Atlas event log: an append-only audit trail with per-entity versions.
--
-- Rules the database enforces (see docs/events.md):
-- * `event_id` is unique: re-emitting an id stores nothing new (retries are safe).
-- * `(entity_id, version)` is unique; versions come from `event_streams`, one row per entity.
-- * `xid` is the writing transaction's id (xid8). Readers return only rows whose `xid` is
--   below the snapshot's xmin, in (xid, position) order: such rows can no longer be joined by
--   an earlier-ordered row that commits late, so paging never skips an event.

CREATE TABLE atlas.event_streams (
    entity_id  TEXT PRIMARY KEY,
    version    BIGINT NOT NULL CHECK (version >= 1)
);

CREATE TABLE atlas.events (
    position     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id     UUID NOT NULL,
    event_type   TEXT NOT NULL CHECK (event_type ~ '^[a-z0-9_]+(\.[a-z0-9_]+)*$'),
    entity_id    TEXT NOT NULL CHECK (char_length(entity_id) BETWEEN 1 AND 200),
    version      BIGINT NOT NULL CHECK (version >= 1),
    payload      JSONB NOT NULL,
    occurred_at  TIMESTAMPTZ NOT NULL,
    recorded_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    xid          XID8 NOT NULL DEFAULT pg_current_xact_id(),
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    CONSTRAINT events_entity_version_key UNIQUE (entity_id, version)
);

-- The replay order. Type and time filters ride on it: every extra index slows every append.
CREATE INDEX events_xid_position ON atlas.events (xid, position);

-- One event in one statement (one round trip, autocommit): lock the entity, bump its
-- version, insert. The advisory lock comes first and assigns no transaction id, so a writer
-- gets its xid only once it owns the entity: per entity, xid order is version order.
-- Errors (the whole statement rolls back, the version bump with it):
--   AT001 duplicate event id (the caller returns the id: idempotent retry),
--   AT002 expected version mismatch (DETAIL carries the current version).
CREATE FUNCTION atlas.append_event(
    p_event_id UUID,
    p_event_type TEXT,
    p_entity_id TEXT,
    p_payload JSONB,
    p_occurred_at TIMESTAMPTZ,
    p_expected_version BIGINT
) RETURNS BIGINT
LANGUAGE plpgsql AS $$
DECLARE
    v_version BIGINT;
    v_position BIGINT;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(p_entity_id, 0));
    INSERT INTO atlas.event_streams AS s (entity_id, version) VALUES (p_entity_id, 1)
        ON CONFLICT (entity_id) DO UPDATE SET version = s.version + 1
        RETURNING s.version INTO v_version;
    IF p_expected_version IS NOT NULL AND v_version <> p_expected_version + 1 THEN
        RAISE EXCEPTION 'expected version % of entity %, found %',
            p_expected_version, p_entity_id, v_version - 1
            USING ERRCODE = 'AT002', DETAIL = (v_version - 1)::text;
    END IF;
    INSERT INTO atlas.events (event_id, event_type, entity_id, version, payload, occurred_at)
        VALUES (p_event_id, p_event_type, p_entity_id, v_version, p_payload, p_occurred_at)
        ON CONFLICT (event_id) DO NOTHING
        RETURNING position INTO v_position;
    IF v_position IS NULL THEN
        RAISE EXCEPTION 'event % is already stored', p_event_id USING ERRCODE = 'AT001';
    END IF;
    RETURN v_position;
END;
$$;
