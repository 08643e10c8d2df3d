-- Named subscriptions to the feed: a filter and the position the consumer
-- acknowledged last (its checkpoint). Times are microseconds since the Unix
-- epoch.
CREATE TABLE subscriptions (
    name       TEXT    PRIMARY KEY,
    reducer    TEXT,
    log_id     BLOB,
    position   INTEGER NOT NULL DEFAULT 0 CHECK (position >= 0),
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
