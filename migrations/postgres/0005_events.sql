-- Version 5 (the same step as SQLite's 0004_events.sql).
--
-- The outbox of events (README, *Events*): a row is written in the same
-- transaction as the change it reports. `seq` orders them (the SSE feed's
-- `id:`, the webhooks' cursors); `id` is the envelope's `evt_` id; `body`
-- is the envelope exactly as delivered.
CREATE TABLE events (
    seq         BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id          TEXT    NOT NULL UNIQUE,
    type        TEXT    NOT NULL,
    document    TEXT,
    created_at  BIGINT  NOT NULL,
    body        TEXT    NOT NULL
);

CREATE INDEX events_by_time ON events (created_at);

-- How far document.updated events have reported each document's log (see
-- schema.sql). Existing documents count as reported.
ALTER TABLE documents ADD COLUMN reported_seq BIGINT NOT NULL DEFAULT 0;

UPDATE documents d SET reported_seq = GREATEST(
    COALESCE((SELECT MAX(seq + count - 1) FROM updates WHERE doc_id = d.id), 0),
    COALESCE((SELECT MAX(upto_seq) FROM snapshots WHERE doc_id = d.id), 0)
);
