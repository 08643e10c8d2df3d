-- Each event's payload size in bytes, so that pages and fold batches can be
-- cut at a byte budget without reading the payloads they leave out.
ALTER TABLE events ADD COLUMN payload_bytes integer NOT NULL DEFAULT 0;
UPDATE events SET payload_bytes = octet_length(payload::text);
