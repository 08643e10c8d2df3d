-- Projections: a reducer folding every feed event that passes a filter into
-- one aggregate, and per reducer version its state (see the PostgreSQL
-- migration of the same name).
CREATE TABLE projections (
    name           TEXT    PRIMARY KEY,
    reducer        TEXT    NOT NULL,
    filter_reducer TEXT,
    filter_log_id  BLOB,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE projection_states (
    name       TEXT    NOT NULL REFERENCES projections (name) ON DELETE CASCADE,
    version    TEXT    NOT NULL,
    position   INTEGER NOT NULL CHECK (position >= 0),
    events     INTEGER NOT NULL CHECK (events >= 0),
    aggregate  TEXT    NOT NULL,
    caught_up  INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (name, version)
) WITHOUT ROWID;
