-- Checkpointed consumers of the event log, and the events their handlers refused.
--
-- A consumer reads the log in replay's commit-safe order (rows with `xid` below the
-- snapshot's xmin, by `(xid, position)`) and keeps its place here as that same pair: the
-- cursor. Each batch is one transaction that locks the consumer's row (SELECT ... FOR UPDATE),
-- hands the events and the open transaction to the handler, moves the cursor and commits. A
-- projection the handler writes in PostgreSQL therefore commits together with the cursor that
-- says it was written (the tracking-record rule): a crash rolls back both, so every event
-- reaches the projection exactly once. The row lock makes two processes running the same
-- consumer (name and member) take turns batch by batch instead of both handling one batch.
--
-- Consumer groups: `group_size` N splits the entities among members 0..N-1 by a stable hash
-- of `entity_id` (atlas.consumer_member below), so one entity's events always go to the same
-- member, in order. A member's row remembers N: entities would move between members if N
-- changed under a running group, so a different N is refused until the group is rebuilt
-- (its rows deleted, the projection truncated, all in one transaction). `event_types` is
-- remembered for the same reason: a filter widened later would silently skip the older
-- events of the new types.

CREATE TABLE atlas.consumers (
    name           TEXT NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    member         INTEGER NOT NULL CHECK (member >= 0),
    group_size     INTEGER NOT NULL CHECK (group_size >= 1 AND member < group_size),
    event_types    TEXT[],  -- NULL: every type
    last_xid       XID8 NOT NULL DEFAULT '0',
    last_position  BIGINT NOT NULL DEFAULT 0,  -- 0 with xid 0: nothing processed yet
    processed      BIGINT NOT NULL DEFAULT 0 CHECK (processed >= 0),
    dead_lettered  BIGINT NOT NULL DEFAULT 0 CHECK (dead_lettered >= 0),
    last_recorded_at TIMESTAMPTZ,  -- recorded_at of the event at the cursor
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT consumers_pkey PRIMARY KEY (name, member)
);

-- The member of a group of `p_group_size` that owns an entity: the 64-bit text hash PostgreSQL
-- already uses for the writers' entity locks, made non-negative, modulo the group size (Message
-- DB's consumer groups do the same with their own hash). IMMUTABLE and LANGUAGE sql, so it is
-- inlined into the consumers' reads. Stable across processes, hosts and restarts.
CREATE FUNCTION atlas.consumer_member(p_entity_id TEXT, p_group_size INTEGER)
RETURNS INTEGER
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT ((hashtextextended(p_entity_id, 0) & 9223372036854775807) % p_group_size)::integer
$$;

-- Dead letters of consumers: events a handler kept failing on. After its retries the consumer
-- finds the failing event of the batch (committing the events before it), parks it here and
-- moves its cursor past it in the same transaction, then goes on: one bad event never stops
-- the events behind it, and it is never skipped silently (this row, an ERROR log line, a
-- metric and the caller's alert). The parked event stays in atlas.events; the row copies what
-- a person needs to list it (its id, place, type and entity) and why it failed. Retrying runs
-- the handler on that one event in the transaction that deletes the row.

CREATE TABLE atlas.consumer_dead_letters (
    consumer     TEXT NOT NULL,
    member       INTEGER NOT NULL,
    event_id     UUID NOT NULL,
    xid          XID8 NOT NULL,
    position     BIGINT NOT NULL,
    event_type   TEXT NOT NULL,
    entity_id    TEXT NOT NULL,
    error        TEXT NOT NULL,
    attempts     INTEGER NOT NULL CHECK (attempts >= 1),
    first_seen   TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen    TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT consumer_dead_letters_pkey PRIMARY KEY (consumer, member, event_id)
);

-- The reference projection (flows/replay.py) becomes a consumer of the log: it adds each run's
-- new events to atlas.channel_video_counts instead of replacing the table. Rows a full rebuild
-- wrote before this migration would be counted again from the consumer's first event, so the
-- table starts empty (it holds nothing the log does not: the next run recounts it).
TRUNCATE atlas.channel_video_counts;
