-- Open failure alerts of prefect_atlas.hooks, shared by every worker host when the hooks are
-- pointed at the Atlas database (ATLAS_ALERT_MEMORY_DATABASE). Same shape as the SQLite
-- fallback under ATLAS_HOME; times are epoch seconds.

CREATE TABLE atlas.open_alerts (
    fingerprint TEXT PRIMARY KEY,
    scope       TEXT NOT NULL,
    exc_type    TEXT NOT NULL,
    first_seen  DOUBLE PRECISION NOT NULL,
    last_sent   DOUBLE PRECISION NOT NULL,
    suppressed  INTEGER NOT NULL DEFAULT 0,
    total       INTEGER NOT NULL DEFAULT 1
);

CREATE INDEX open_alerts_scope ON atlas.open_alerts (scope);
