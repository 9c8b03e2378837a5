-- Discord rate-limit state shared by every process and host that posts to one webhook
-- (DiscordBlock with state_database, or ATLAS_ALERT_MEMORY_DATABASE). One row per webhook id
-- and one row '*' for Discord's global limit. Senders hold the row's lock (SELECT ... FOR
-- UPDATE) from reading the budget until they have written what Discord's answer said, so two
-- processes never spend the same remaining request. Times are epoch seconds on the database's
-- clock, so hosts whose clocks differ still agree.

CREATE TABLE atlas.discord_ratelimits (
    bucket     TEXT PRIMARY KEY,
    remaining  INTEGER,
    reset_at   DOUBLE PRECISION NOT NULL DEFAULT 0,
    "limit"    INTEGER,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
