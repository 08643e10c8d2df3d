-- Projections: a reducer folding every feed event that passes a filter into
-- one aggregate. `projection_states` holds, per reducer version, the
-- aggregate and the feed position it is current through; a new version
-- builds its own state while the old one is still served. `updated_at` of
-- a projection stamps its definition: a state is saved only for the
-- definition it was folded under. Times are microseconds since the epoch.
CREATE TABLE projections (
    name           text   PRIMARY KEY,
    reducer        text   NOT NULL,
    filter_reducer text,
    filter_log_id  uuid,
    created_at     bigint NOT NULL,
    updated_at     bigint NOT NULL
);

CREATE TABLE projection_states (
    name       text    NOT NULL REFERENCES projections (name) ON DELETE CASCADE,
    version    text    NOT NULL,
    position   bigint  NOT NULL CHECK (position >= 0),
    events     bigint  NOT NULL CHECK (events >= 0),
    aggregate  text    NOT NULL,
    caught_up  boolean NOT NULL,
    updated_at bigint  NOT NULL,
    PRIMARY KEY (name, version)
);
