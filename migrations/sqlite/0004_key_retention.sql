-- Idempotency keys expire: each records when it was stored (microseconds
-- since the Unix epoch, host clock), and a sweep deletes keys older than
-- the retention. Keys stored before this migration count from now.
ALTER TABLE idempotency_keys ADD COLUMN stored_at INTEGER NOT NULL DEFAULT 0;
UPDATE idempotency_keys
SET stored_at = CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (stored_at);
