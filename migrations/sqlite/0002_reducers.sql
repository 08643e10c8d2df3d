-- The reducer registry, as in PostgreSQL: immutable versions and one active
-- version per name. `generation` orders activations; writers hold SQLite's
-- write lock, so max(generation) + 1 is never taken twice.

CREATE TABLE reducer_versions (
    name       TEXT    NOT NULL,
    version    TEXT    NOT NULL CHECK (length(version) = 64),
    bytes      BLOB    NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (name, version)
) WITHOUT ROWID;

CREATE TABLE reducers (
    name           TEXT    PRIMARY KEY,
    active_version TEXT    NOT NULL,
    generation     INTEGER NOT NULL,
    activated_at   INTEGER NOT NULL,
    FOREIGN KEY (name, active_version) REFERENCES reducer_versions (name, version)
) WITHOUT ROWID;
