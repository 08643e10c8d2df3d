-- The write path, as in PostgreSQL: the log's end kept on its row, and a
-- global position for every event, taken from the single `event_positions`
-- row by the one writer holding SQLite's write lock.

ALTER TABLE logs ADD COLUMN last_index INTEGER NOT NULL DEFAULT 0;
ALTER TABLE logs ADD COLUMN last_position INTEGER NOT NULL DEFAULT 0;

CREATE TABLE events_positioned (
    log_id      BLOB    NOT NULL REFERENCES logs (log_id),
    idx         INTEGER NOT NULL CHECK (idx >= 0),
    position    INTEGER NOT NULL UNIQUE,
    recorded_at INTEGER NOT NULL,
    payload     TEXT    NOT NULL,
    PRIMARY KEY (log_id, idx)
) WITHOUT ROWID;
INSERT INTO events_positioned (log_id, idx, position, recorded_at, payload)
SELECT log_id, idx, row_number() OVER (ORDER BY recorded_at, log_id, idx), recorded_at, payload
FROM events;
DROP TABLE events;
ALTER TABLE events_positioned RENAME TO events;

UPDATE logs SET
    last_index = (SELECT max(idx) FROM events WHERE events.log_id = logs.log_id),
    last_position = (SELECT max(position) FROM events WHERE events.log_id = logs.log_id)
WHERE EXISTS (SELECT 1 FROM events WHERE events.log_id = logs.log_id);
CREATE INDEX logs_by_recent_append ON logs (reducer, last_position DESC);

CREATE TABLE event_positions (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    last      INTEGER NOT NULL
);
INSERT INTO event_positions (singleton, last) SELECT 1, coalesce(max(position), 0) FROM events;

ALTER TABLE idempotency_keys ADD COLUMN first_position INTEGER NOT NULL DEFAULT 0;
UPDATE idempotency_keys SET first_position = coalesce((SELECT position FROM events
    WHERE events.log_id = idempotency_keys.log_id AND events.idx = idempotency_keys.first_index), 0);
