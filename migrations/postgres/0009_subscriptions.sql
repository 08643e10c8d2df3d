-- Named subscriptions to the feed: a filter and the position the consumer
-- acknowledged last (its checkpoint). Every daemon process on the database
-- sees the same rows. Times are microseconds since the Unix epoch.
CREATE TABLE subscriptions (
    name       text   PRIMARY KEY,
    reducer    text,
    log_id     uuid,
    position   bigint NOT NULL DEFAULT 0 CHECK (position >= 0),
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL
);
