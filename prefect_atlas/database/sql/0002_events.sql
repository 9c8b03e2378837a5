-- Atlas event log: an append-only audit trail with per-entity versions.
--
-- Rules the database enforces (see docs/events.md):
-- * `event_id` is unique: re-emitting an id stores nothing new (retries are safe).
-- * `(entity_id, version)` is unique. A writer takes the entity's advisory lock, then reads
--   the entity's highest version from that unique index and appends after it; the lock is
--   held to commit, so versions are 1..n without gaps and nothing is ever "burnt".
-- * `xid` is the writing transaction's id (xid8). Readers return only rows whose `xid` is
--   below the snapshot's xmin, in (xid, position) order: such rows can no longer be joined by
--   an earlier-ordered row that commits late, so paging never skips an event.
--
-- Every index costs every append, so there are exactly the ones the rules and the readers
-- need: the primary key (xid, position) is the replay order, the two unique keys are the
-- rules above, and a BRIN index on the (append-ordered) position turns `after_position` into
-- a (xid, position) cursor at almost no write cost.

CREATE TABLE atlas.events (
    position     BIGINT GENERATED ALWAYS AS IDENTITY,
    event_id     UUID NOT NULL,
    event_type   TEXT NOT NULL CHECK (event_type ~ '^[a-z0-9_]+(\.[a-z0-9_]+)*$'),
    entity_id    TEXT NOT NULL CHECK (char_length(entity_id) BETWEEN 1 AND 200),
    version      BIGINT NOT NULL CHECK (version >= 1),
    payload      JSONB NOT NULL,
    occurred_at  TIMESTAMPTZ NOT NULL,
    recorded_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    xid          XID8 NOT NULL DEFAULT pg_current_xact_id(),
    CONSTRAINT events_pkey PRIMARY KEY (xid, position),
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    CONSTRAINT events_entity_version_key UNIQUE (entity_id, version)
);

CREATE INDEX events_position_brin ON atlas.events USING brin (position)
    WITH (pages_per_range = 32, autosummarize = on);

-- Subscribers LISTEN on `atlas_events`; writers NOTIFY it (when asked: `p_notify`) as a
-- wake-up only, with an empty payload. A subscriber then reads the table with replay's rule,
-- and polls anyway now and then: a notification is lost when nobody listens, and the event
-- it announced may still be held back by an older transaction.

-- Lock entities (in a fixed order, so two batches cannot deadlock) and return each one's
-- current version (0 = no events yet): the one round trip before a batch's COPY.
-- The advisory locks come first and assign no transaction id, so a writer gets its xid only
-- once it owns its entities: per entity, xid order is version order. A VOLATILE function
-- takes a fresh snapshot per statement (READ COMMITTED), so the versions are read after the
-- locks are granted and include the previous owner's commit.
CREATE FUNCTION atlas.lock_entities(p_entities TEXT[], p_notify BOOLEAN DEFAULT true)
RETURNS TABLE (entity_id TEXT, version BIGINT)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF p_notify THEN
        PERFORM pg_notify('atlas_events', '');
    END IF;
    PERFORM pg_advisory_xact_lock(k)
        FROM (SELECT DISTINCT hashtextextended(e, 0) AS k FROM unnest(p_entities) AS e ORDER BY 1) AS keys;
    RETURN QUERY
        SELECT e, coalesce((SELECT max(ev.version) FROM atlas.events AS ev WHERE ev.entity_id = e), 0)::bigint
        FROM unnest(p_entities) AS e;
END;
$$;

-- One event in one statement (one round trip, autocommit): lock the entity, then one INSERT
-- that reads the entity's version from the unique index and appends after it. Errors (the
-- whole statement rolls back):
--   23505 on events_event_id_key: the id is stored already (the caller returns it: an
--         idempotent retry),
--   AT002 expected version mismatch (DETAIL carries the current version).
CREATE FUNCTION atlas.append_event(
    p_event_id UUID,
    p_event_type TEXT,
    p_entity_id TEXT,
    p_payload JSONB,
    p_occurred_at TIMESTAMPTZ,
    p_expected_version BIGINT,
    p_notify BOOLEAN DEFAULT true
) RETURNS BIGINT
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_position BIGINT;
    v_current BIGINT;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(p_entity_id, 0));
    INSERT INTO atlas.events (event_id, event_type, entity_id, version, payload, occurred_at)
        SELECT p_event_id, p_event_type, p_entity_id, coalesce(max(version), 0) + 1, p_payload, p_occurred_at
        FROM atlas.events WHERE entity_id = p_entity_id
        HAVING p_expected_version IS NULL OR coalesce(max(version), 0) = p_expected_version
        RETURNING position INTO v_position;
    IF v_position IS NULL THEN
        SELECT coalesce(max(version), 0) INTO v_current FROM atlas.events WHERE entity_id = p_entity_id;
        RAISE EXCEPTION 'expected version % of entity %, found %', p_expected_version, p_entity_id, v_current
            USING ERRCODE = 'AT002', DETAIL = v_current::text;
    END IF;
    IF p_notify THEN
        PERFORM pg_notify('atlas_events', '');
    END IF;
    RETURN v_position;
END;
$$;
