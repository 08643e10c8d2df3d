-- The reducer registry: immutable versions (the sha256 of the component's
-- bytes, stored with them so every host sees the same set and a restart
-- needs no files) and one active version per name.

CREATE TABLE reducer_versions (
    name       text        NOT NULL,
    version    text        NOT NULL CHECK (version ~ '^[0-9a-f]{64}$'),
    bytes      bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (name, version)
);

-- `generation` grows with every activation of any name, so a host applies
-- activations in the order they were committed, whatever order it sees them.
CREATE SEQUENCE reducer_activation_generation;

CREATE TABLE reducers (
    name           text        PRIMARY KEY,
    active_version text        NOT NULL,
    generation     bigint      NOT NULL,
    activated_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    FOREIGN KEY (name, active_version) REFERENCES reducer_versions (name, version)
);
