-- The write path: exact payloads, host timestamps, the log's end kept on
-- its row, and a global position for every event.
--
-- * `events.payload` becomes `json`, which keeps the client's text exactly
--   (jsonb reorders keys, drops duplicates and respells numbers).
-- * Timestamps are microseconds since the Unix epoch from the host's clock,
--   as on SQLite: a validating host folds an event with the very timestamp
--   it stores.
-- * `logs.last_index` is the log's end, read and advanced under the row's
--   lock by every append (no max() over events, which a waiter would read
--   from a stale snapshot), and `logs.last_position` orders logs by their
--   latest append.
-- * `events.position` is unique and gap-free. Writers take ranges from the
--   single `event_positions` row inside their transaction, so the row's lock
--   is held to commit and positions become visible in increasing order.

ALTER TABLE logs
    ADD COLUMN last_index bigint NOT NULL DEFAULT 0,
    ADD COLUMN last_position bigint NOT NULL DEFAULT 0;
ALTER TABLE logs ALTER COLUMN created_at DROP DEFAULT;
ALTER TABLE logs ALTER COLUMN created_at TYPE bigint
    USING (extract(epoch FROM created_at) * 1000000)::bigint;

ALTER TABLE events ALTER COLUMN recorded_at DROP DEFAULT;
ALTER TABLE events ALTER COLUMN recorded_at TYPE bigint
    USING (extract(epoch FROM recorded_at) * 1000000)::bigint;
ALTER TABLE events ALTER COLUMN payload TYPE json USING payload::json;
ALTER TABLE events ADD COLUMN position bigint;
UPDATE events SET position = ordered.position
FROM (SELECT log_id, idx, row_number() OVER (ORDER BY recorded_at, log_id, idx) AS position
      FROM events) AS ordered
WHERE events.log_id = ordered.log_id AND events.idx = ordered.idx;
ALTER TABLE events ALTER COLUMN position SET NOT NULL;
CREATE UNIQUE INDEX events_by_position ON events (position);

UPDATE logs SET last_index = ends.last_index, last_position = ends.last_position
FROM (SELECT log_id, max(idx) AS last_index, max(position) AS last_position
      FROM events GROUP BY log_id) AS ends
WHERE logs.log_id = ends.log_id;
CREATE INDEX logs_by_recent_append ON logs (reducer, last_position DESC);

CREATE TABLE event_positions (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    last      bigint  NOT NULL
);
INSERT INTO event_positions (last) SELECT coalesce(max(position), 0) FROM events;

ALTER TABLE idempotency_keys ADD COLUMN first_position bigint NOT NULL DEFAULT 0;
UPDATE idempotency_keys SET first_position = events.position
FROM events
WHERE events.log_id = idempotency_keys.log_id AND events.idx = idempotency_keys.first_index;
