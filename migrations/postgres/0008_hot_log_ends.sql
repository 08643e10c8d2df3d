-- Every batch of appends moves the end of each log it writes to, an UPDATE
-- of the log's row. With `last_position` indexed, each of those updates
-- added index entries and left a dead row version that only VACUUM could
-- clear; a benchmark run of 118,000 appends to 160 logs left 118,000 dead
-- versions behind them, which every later lookup of those logs walked.
-- Indexing logs by reducer alone (the deploy guard sorts one reducer's logs
-- by `last_position`, a rare read) and leaving room on each page lets
-- PostgreSQL update the row in place (a HOT update, pruned as it goes).
DROP INDEX logs_by_recent_append;
CREATE INDEX logs_by_reducer ON logs (reducer);
ALTER TABLE logs SET (fillfactor = 50);

-- Every event row was checked against `logs` by a foreign-key trigger, a
-- lookup and a row lock per event. The writer's one statement stores an
-- event only beside its log's row: inserted with it, or its end moved from
-- the end the batch was planned on (the statement fails otherwise), so the
-- trigger checked again what the statement already guarantees.
ALTER TABLE events DROP CONSTRAINT events_log_id_fkey;
