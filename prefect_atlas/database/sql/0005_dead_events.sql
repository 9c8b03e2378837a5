-- Dead letters of the event log: spooled events the server permanently refused.
--
-- An event reaches the spool while PostgreSQL is unreachable; if, once it is back, the server
-- refuses the event itself (a CHECK, a type, a data error: SQLSTATE classes 22 and 23, or a
-- value the driver cannot send), the drain parks it here and goes on, so one bad event can
-- never block the events behind it or later emits. `event` is the spooled event verbatim as
-- JSON bytes (it may hold what no column of atlas.events accepts); `event_type` and
-- `entity_id` are printable copies for listing. `prefect-atlas events dead-letters` lists,
-- retries and discards them.

CREATE TABLE atlas.dead_events (
    event_id     UUID PRIMARY KEY,
    event_type   TEXT NOT NULL,
    entity_id    TEXT NOT NULL,
    event        BYTEA NOT NULL,
    reason       TEXT NOT NULL,
    sqlstate     TEXT,
    attempts     INTEGER NOT NULL DEFAULT 1 CHECK (attempts >= 1),
    first_seen   TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen    TIMESTAMPTZ NOT NULL DEFAULT now()
);
