-- Version 4 (PostgreSQL only).
--
-- Cluster mode: a snapshot records the last entry of the document's Redis
-- stream it covers, so that a node loading the document reads the stream
-- only after it, and the stream can be trimmed up to it. Snapshots stored
-- before have none (NULL): the stream is read from its first entry.
ALTER TABLE snapshots ADD COLUMN stream_id TEXT;
