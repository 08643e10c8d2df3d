-- Logs, their events, and the idempotency keys that guard retried writes.
-- Every table is keyed by log_id first so the schema can be distributed by
-- log_id (docs/scaling.md).

CREATE TABLE logs (
    log_id     uuid        PRIMARY KEY,
    reducer    text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- The primary key (log_id, idx) is what enforces optimistic concurrency:
-- two writers can never store the same index of a log.
CREATE TABLE events (
    log_id      uuid        NOT NULL REFERENCES logs (log_id),
    idx         bigint      NOT NULL CHECK (idx >= 0),
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    payload     jsonb       NOT NULL,
    PRIMARY KEY (log_id, idx)
);

-- A key records what the first request with it stored, and a fingerprint of
-- that request, so a retry can be told from a reuse with another body.
CREATE TABLE idempotency_keys (
    idempotency_key text   PRIMARY KEY,
    fingerprint     bytea  NOT NULL,
    log_id          uuid   NOT NULL,
    first_index     bigint NOT NULL,
    last_index      bigint NOT NULL
);
