-- The embedded store's schema: the same tables as PostgreSQL's. Timestamps
-- are microseconds since the Unix epoch from the host's clock.

CREATE TABLE logs (
    log_id     BLOB    PRIMARY KEY,
    reducer    TEXT    NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE events (
    log_id      BLOB    NOT NULL REFERENCES logs (log_id),
    idx         INTEGER NOT NULL CHECK (idx >= 0),
    recorded_at INTEGER NOT NULL,
    payload     TEXT    NOT NULL,
    PRIMARY KEY (log_id, idx)
) WITHOUT ROWID;

CREATE TABLE idempotency_keys (
    idempotency_key TEXT    PRIMARY KEY,
    fingerprint     BLOB    NOT NULL,
    log_id          BLOB    NOT NULL,
    first_index     INTEGER NOT NULL,
    last_index      INTEGER NOT NULL
) WITHOUT ROWID;
