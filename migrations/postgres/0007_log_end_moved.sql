-- A batch is stored only if every log it appends to still ends where the
-- writer planned it (the writer may plan on log ends it remembers instead
-- of reading them). The store statement calls this when one moved, which
-- aborts it as a unique violation: the writer reads the batch again under
-- the write lock and reruns it, exactly as when an event's index collides.
CREATE FUNCTION eventlogs_log_end_moved() RETURNS bigint
    LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RAISE EXCEPTION 'a log''s end moved since its batch was planned'
        USING ERRCODE = 'unique_violation';
END
$$;
