-- Idempotency keys expire: each records when it was stored (microseconds
-- since the Unix epoch, host clock), and a sweep deletes keys older than
-- the retention. Keys stored before this migration count from now.
ALTER TABLE idempotency_keys
    ADD COLUMN stored_at bigint NOT NULL DEFAULT (extract(epoch FROM now()) * 1000000)::bigint;
ALTER TABLE idempotency_keys ALTER COLUMN stored_at DROP DEFAULT;
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (stored_at);
