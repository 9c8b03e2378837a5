-- The event log partitioned by day of `recorded_at` (see docs/events.md, "Partitions").
--
-- PostgreSQL requires the partition key in every unique index of a partitioned table, so the
-- two rules the log's unique keys enforced move to two narrow unpartitioned tables, kept by
-- one statement-level trigger on atlas.events (so every writer keeps them, COPY included):
-- * atlas.event_ids: one row per event id ever stored. Its primary key keeps the name
--   `events_event_id_key`, so a re-emitted id still fails with 23505 on that constraint and
--   every writer's "stored before: nothing new" handling is unchanged. Dropping a partition
--   keeps its ids: idempotency stays exact for the whole history.
-- * atlas.entity_versions: each entity's current version. Writers read it under the entity's
--   advisory lock (one index probe, whatever the number of partitions); the trigger moves it
--   forward only from exactly the version before the statement's first one, so versions stay
--   1..n without gaps or repeats even for a writer that skipped the lock (it fails with 23505
--   on `events_entity_version_key`, as before).
--
-- The migration copies today's rows into the partitioned table (positions, ids, xids and
-- versions as they are) and continues its position sequence where the old one stood.

-- 1. Today's table steps aside; its constraint and index names are freed for the new table.
ALTER TABLE atlas.events RENAME TO events_unpartitioned;
ALTER TABLE atlas.events_unpartitioned RENAME CONSTRAINT events_pkey TO events_unpartitioned_pkey;
ALTER TABLE atlas.events_unpartitioned
    RENAME CONSTRAINT events_event_id_key TO events_unpartitioned_event_id_key;
ALTER TABLE atlas.events_unpartitioned
    RENAME CONSTRAINT events_entity_version_key TO events_unpartitioned_entity_version_key;
ALTER INDEX atlas.events_position_brin RENAME TO events_unpartitioned_position_brin;
DO $$
BEGIN
    EXECUTE format('ALTER SEQUENCE %s RENAME TO events_unpartitioned_position_seq',
                   pg_get_serial_sequence('atlas.events_unpartitioned', 'position'));
END;
$$;

-- 2. The partitioned log. Indexes (each costs every append): the primary key (xid, position,
-- recorded_at) is the replay order (a Merge Append over the partitions' indexes), the
-- (entity_id, version) index serves per-entity reads, the BRIN index on position finds an
-- `after_position` cursor within a partition at almost no write cost.
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
    CONSTRAINT events_pkey PRIMARY KEY (xid, position, recorded_at)
) PARTITION BY RANGE (recorded_at);

CREATE INDEX events_entity_version ON atlas.events (entity_id, version);
CREATE INDEX events_position_brin ON atlas.events USING brin (position)
    WITH (pages_per_range = 32, autosummarize = on);

-- Rows whose recorded_at no created partition covers (the maintenance did not run for a week,
-- a clock jumped) land here instead of failing; creating their day's partition moves them.
CREATE TABLE atlas.events_default PARTITION OF atlas.events DEFAULT;

-- Positions continue where the old table's identity stood (never reused, still increasing).
SELECT setval(pg_get_serial_sequence('atlas.events', 'position'), q.last_value)
FROM pg_sequences AS q
WHERE format('%I.%I', q.schemaname, q.sequencename)::regclass
      = pg_get_serial_sequence('atlas.events_unpartitioned', 'position')::regclass
  AND q.last_value IS NOT NULL;

-- 3. The narrow tables that keep the rules exact across partitions.
CREATE TABLE atlas.event_ids (
    event_id UUID NOT NULL,
    CONSTRAINT events_event_id_key PRIMARY KEY (event_id)
);

CREATE TABLE atlas.entity_versions (
    entity_id TEXT NOT NULL,
    version   BIGINT NOT NULL CHECK (version >= 0),
    CONSTRAINT entity_versions_pkey PRIMARY KEY (entity_id)
);

-- Partitions dropped (after their archive verified, or by hand): what they held.
CREATE TABLE atlas.dropped_event_partitions (
    name           TEXT PRIMARY KEY,
    lower_bound    TIMESTAMPTZ NOT NULL,
    upper_bound    TIMESTAMPTZ NOT NULL,
    events         BIGINT NOT NULL,
    first_position BIGINT,
    last_position  BIGINT,
    dropped_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- 4. The partitions, read from the catalog: [lower, upper) by recorded_at; the DEFAULT one has
-- NULL bounds.
CREATE VIEW atlas.event_partitions AS
SELECT c.relname::text AS name,
       CASE WHEN b.bound = 'DEFAULT' THEN NULL
            ELSE coalesce(substring(b.bound FROM $re$FROM \('([^']*)'\)$re$)::timestamptz,
                          '-infinity') END AS lower_bound,
       CASE WHEN b.bound = 'DEFAULT' THEN NULL
            ELSE coalesce(substring(b.bound FROM $re$TO \('([^']*)'\)$re$)::timestamptz,
                          'infinity') END AS upper_bound,
       b.bound = 'DEFAULT' AS is_default
FROM pg_inherits AS i
JOIN pg_class AS c ON c.oid = i.inhrelid
CROSS JOIN LATERAL (SELECT pg_get_expr(c.relpartbound, c.oid) AS bound) AS b
WHERE i.inhparent = 'atlas.events'::regclass;

-- One day's partition [p_lower, p_upper), named events_pYYYYMMDD (UTC). Created standalone and
-- attached (SHARE UPDATE EXCLUSIVE on atlas.events: writers and readers go on); rows of its
-- range found in the DEFAULT partition move into it in the same transaction (same ids,
-- positions, xids and versions, so the narrow tables do not change). Returns false when a
-- partition overlapping the range exists already.
CREATE FUNCTION atlas.create_event_partition(p_lower TIMESTAMPTZ, p_upper TIMESTAMPTZ)
RETURNS BOOLEAN
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_name TEXT := 'events_p' || to_char(p_lower AT TIME ZONE 'UTC', 'YYYYMMDD');
BEGIN
    IF EXISTS (SELECT 1 FROM atlas.event_partitions AS p
               WHERE NOT p.is_default AND p.lower_bound < p_upper AND p.upper_bound > p_lower) THEN
        RETURN false;
    END IF;
    -- The DEFAULT partition is scanned by ATTACH under ACCESS EXCLUSIVE anyway; taking that lock
    -- first keeps a concurrent writer from landing a row of the range there in between.
    LOCK TABLE atlas.events_default IN ACCESS EXCLUSIVE MODE;
    EXECUTE format('CREATE TABLE atlas.%I (LIKE atlas.events INCLUDING DEFAULTS '
                   'INCLUDING CONSTRAINTS INCLUDING STORAGE INCLUDING COMPRESSION)', v_name);
    EXECUTE format('WITH moved AS (DELETE FROM atlas.events_default WHERE recorded_at >= $1 '
                   'AND recorded_at < $2 RETURNING *) INSERT INTO atlas.%I SELECT * FROM moved',
                   v_name) USING p_lower, p_upper;
    EXECUTE format('ALTER TABLE atlas.events ATTACH PARTITION atlas.%I FOR VALUES FROM (%L) TO (%L)',
                   v_name, p_lower, p_upper);
    RETURN true;
END;
$$;

-- The daily partitions from p_now's day through p_now + p_ahead's day (UTC) that do not exist
-- yet, created; returns those created. Run by setup() and by the maintenance flow. Concurrent
-- callers serialize on an advisory lock ("ATLASP").
CREATE FUNCTION atlas.ensure_event_partitions(
    p_ahead INTERVAL DEFAULT '7 days',
    p_now TIMESTAMPTZ DEFAULT now()
) RETURNS TABLE (name TEXT, lower_bound TIMESTAMPTZ, upper_bound TIMESTAMPTZ)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_day TIMESTAMPTZ;
BEGIN
    IF p_ahead < interval '0' THEN
        RAISE EXCEPTION 'p_ahead must not be negative, got %', p_ahead;
    END IF;
    PERFORM pg_advisory_xact_lock(x'41544C415350'::bigint);
    FOR v_day IN
        SELECT generate_series(date_trunc('day', p_now AT TIME ZONE 'UTC'),
                               date_trunc('day', (p_now + p_ahead) AT TIME ZONE 'UTC'),
                               interval '1 day') AT TIME ZONE 'UTC'
    LOOP
        IF atlas.create_event_partition(v_day, v_day + interval '1 day') THEN
            name := 'events_p' || to_char(v_day AT TIME ZONE 'UTC', 'YYYYMMDD');
            lower_bound := v_day;
            upper_bound := v_day + interval '1 day';
            RETURN NEXT;
        END IF;
    END LOOP;
END;
$$;

-- 5. Today's rows move in: a partition for every day that holds some, then the rows as they are.
SELECT atlas.create_event_partition(d AT TIME ZONE 'UTC', (d + interval '1 day') AT TIME ZONE 'UTC')
FROM (SELECT DISTINCT date_trunc('day', recorded_at AT TIME ZONE 'UTC') AS d
      FROM atlas.events_unpartitioned) AS days
ORDER BY d;
SELECT count(*) FROM atlas.ensure_event_partitions();

INSERT INTO atlas.events
    (position, event_id, event_type, entity_id, version, payload, occurred_at, recorded_at, xid)
OVERRIDING SYSTEM VALUE
SELECT position, event_id, event_type, entity_id, version, payload, occurred_at, recorded_at, xid
FROM atlas.events_unpartitioned;
INSERT INTO atlas.event_ids (event_id) SELECT event_id FROM atlas.events_unpartitioned;
INSERT INTO atlas.entity_versions (entity_id, version)
    SELECT entity_id, max(version) FROM atlas.events_unpartitioned GROUP BY entity_id;
DROP TABLE atlas.events_unpartitioned;

-- 6. The trigger that keeps event_ids and entity_versions for every statement that appends
-- (INSERT or COPY, by any writer). Per statement, not per row: two set-based statements over
-- the statement's new rows.
CREATE FUNCTION atlas.record_appends() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_entities BIGINT;
    v_advanced BIGINT;
BEGIN
    -- 23505 on events_event_id_key when an id is stored already: the statement rolls back.
    INSERT INTO atlas.event_ids (event_id) SELECT a.event_id FROM appended AS a;
    INSERT INTO atlas.entity_versions (entity_id, version)
        SELECT a.entity_id, 0 FROM appended AS a WHERE a.version = 1
        ON CONFLICT (entity_id) DO NOTHING;
    -- Each entity's versions in this statement must be exactly current + 1 .. current + n.
    WITH runs AS (
        SELECT a.entity_id, min(a.version) AS lo, max(a.version) AS hi, count(*) AS n,
               count(DISTINCT a.version) AS distinct_n
        FROM appended AS a GROUP BY a.entity_id
    ), advanced AS (
        UPDATE atlas.entity_versions AS ev SET version = r.hi
        FROM runs AS r
        WHERE ev.entity_id = r.entity_id AND ev.version = r.lo - 1
          AND r.hi - r.lo + 1 = r.n AND r.distinct_n = r.n
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM advanced)
        INTO v_entities, v_advanced;
    IF v_advanced <> v_entities THEN
        RAISE EXCEPTION 'duplicate or out-of-order entity versions in atlas.events'
            USING ERRCODE = 'unique_violation', CONSTRAINT = 'events_entity_version_key',
                  TABLE = 'events', SCHEMA = 'atlas';
    END IF;
    RETURN NULL;
END;
$$;

-- Writers of this release keep the two tables themselves, cheaper than the trigger (they know
-- the ids and versions already), and say so with the transaction-local setting
-- `atlas.appending`; the trigger then does not run. Every other writer (an older release in a
-- rolling upgrade, a raw INSERT or COPY) goes through it.
CREATE TRIGGER events_record_appends AFTER INSERT ON atlas.events
    REFERENCING NEW TABLE AS appended FOR EACH STATEMENT
    WHEN (current_setting('atlas.appending', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION atlas.record_appends();

-- Emptying the log forgets its ids and versions too.
CREATE FUNCTION atlas.forget_appends() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE atlas.event_ids, atlas.entity_versions;
    RETURN NULL;
END;
$$;

CREATE TRIGGER events_forget_appends AFTER TRUNCATE ON atlas.events
    FOR EACH STATEMENT EXECUTE FUNCTION atlas.forget_appends();

-- 7. The writers' functions: the version comes from atlas.entity_versions (one probe under the
-- entity's lock) instead of max(version) over every partition.

-- Kept for writers of earlier releases (their COPY then goes through the trigger).
CREATE OR REPLACE FUNCTION atlas.lock_entities(p_entities TEXT[], p_notify BOOLEAN DEFAULT true)
RETURNS TABLE (entity_id TEXT, version BIGINT)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF p_notify THEN
        PERFORM pg_notify('atlas_events', '');
    END IF;
    PERFORM pg_advisory_xact_lock(k)
        FROM (SELECT DISTINCT hashtextextended(e, 0) AS k FROM unnest(p_entities) AS e ORDER BY 1) AS keys;
    RETURN QUERY
        SELECT e, coalesce((SELECT v.version FROM atlas.entity_versions AS v WHERE v.entity_id = e), 0)::bigint
        FROM unnest(p_entities) AS e;
END;
$$;

-- A batch's one round trip before its COPYs: lock the entities (sorted, so two batches cannot
-- deadlock), return each one's current version (0 = no events yet) and move it forward by the
-- batch's count of that entity's events (p_entities distinct). The batch then COPYs its ids
-- into atlas.event_ids (23505 on events_event_id_key for a stored id) and its rows into
-- atlas.events with the versions that follow; all of it rolls back together.
CREATE FUNCTION atlas.lock_entities(p_entities TEXT[], p_counts BIGINT[], p_notify BOOLEAN)
RETURNS TABLE (entity_id TEXT, version BIGINT)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
BEGIN
    IF p_notify THEN
        PERFORM pg_notify('atlas_events', '');
    END IF;
    PERFORM pg_advisory_xact_lock(k)
        FROM (SELECT DISTINCT hashtextextended(e, 0) AS k FROM unnest(p_entities) AS e ORDER BY 1) AS keys;
    PERFORM set_config('atlas.appending', 'on', true);
    RETURN QUERY
        WITH held AS (
            SELECT b.entity_id, b.n, coalesce(v.version, 0)::bigint AS version
            FROM unnest(p_entities, p_counts) WITH ORDINALITY AS b(entity_id, n, ord)
            LEFT JOIN atlas.entity_versions AS v ON v.entity_id = b.entity_id
            ORDER BY b.ord
        ), advanced AS (
            INSERT INTO atlas.entity_versions AS ev (entity_id, version)
                SELECT c.entity_id, c.version + c.n FROM held AS c WHERE c.n > 0
            ON CONFLICT (entity_id) DO UPDATE SET version = excluded.version
        )
        SELECT c.entity_id, c.version FROM held AS c;
END;
$$;

-- One event in one statement (one round trip, autocommit): lock the entity, read its version,
-- record the id and the new version, insert the row. Errors (the whole statement rolls back):
--   23505 on events_event_id_key: the id is stored already (the caller returns it: an
--         idempotent retry),
--   AT002 expected version mismatch (DETAIL carries the current version).
CREATE OR REPLACE FUNCTION atlas.append_event(
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
    SELECT v.version INTO v_current FROM atlas.entity_versions AS v WHERE v.entity_id = p_entity_id;
    IF p_expected_version IS NOT NULL AND coalesce(v_current, 0) <> p_expected_version THEN
        RAISE EXCEPTION 'expected version % of entity %, found %', p_expected_version, p_entity_id,
            coalesce(v_current, 0)
            USING ERRCODE = 'AT002', DETAIL = coalesce(v_current, 0)::text;
    END IF;
    INSERT INTO atlas.event_ids (event_id) VALUES (p_event_id);
    IF v_current IS NULL THEN
        INSERT INTO atlas.entity_versions (entity_id, version) VALUES (p_entity_id, 1);
        v_current := 0;
    ELSE
        UPDATE atlas.entity_versions SET version = v_current + 1 WHERE entity_id = p_entity_id;
    END IF;
    PERFORM set_config('atlas.appending', 'on', true);
    INSERT INTO atlas.events (event_id, event_type, entity_id, version, payload, occurred_at)
        VALUES (p_event_id, p_event_type, p_entity_id, v_current + 1, p_payload, p_occurred_at)
        RETURNING position INTO v_position;
    PERFORM set_config('atlas.appending', '', true);
    IF p_notify THEN
        PERFORM pg_notify('atlas_events', '');
    END IF;
    RETURN v_position;
END;
$$;

-- The xid of the event at p_position (NULL when none): the `after_position` cursor. Probes the
-- partitions' BRIN indexes newest first and stops at the first hit, so a recent cursor costs a
-- probe or two however many partitions there are.
CREATE FUNCTION atlas.event_xid(p_position BIGINT) RETURNS XID8
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_partition TEXT;
    v_xid XID8;
BEGIN
    FOR v_partition IN
        SELECT p.name FROM atlas.event_partitions AS p
        ORDER BY p.is_default DESC, p.lower_bound DESC
    LOOP
        EXECUTE format('SELECT xid FROM atlas.%I WHERE position = $1', v_partition)
            INTO v_xid USING p_position;
        IF v_xid IS NOT NULL THEN
            RETURN v_xid;
        END IF;
    END LOOP;
    RETURN NULL;
END;
$$;
