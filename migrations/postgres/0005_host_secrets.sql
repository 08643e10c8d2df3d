-- Secrets the daemons sharing this database agree on without configuration:
-- the first daemon to need one stores a random value, and every daemon uses
-- the stored one (for example the key cached reductions are authenticated
-- under, when --cache-secret is not given).
CREATE TABLE host_secrets (
    name text PRIMARY KEY,
    secret text NOT NULL
);
