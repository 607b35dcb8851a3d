-- Version 4.
--
-- The outbox of events (README, *Events*): a row is written in the same
-- transaction as the change it reports, so an event is never lost nor told
-- of a change that was rolled back. `seq` orders them (the SSE feed's
-- `id:`, the webhooks' cursors); `id` is the envelope's `evt_` id; `body`
-- is the envelope exactly as delivered. Rows are pruned after the
-- retention (--events-retention) once every webhook has delivered them.
CREATE TABLE events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT    NOT NULL UNIQUE,
    type        TEXT    NOT NULL,
    document    TEXT,
    created_at  INTEGER NOT NULL,
    body        TEXT    NOT NULL
);

CREATE INDEX events_by_time ON events (created_at);

-- How far document.updated events have reported each document's log: the
-- last update seq the latest document.updated covers. An edit is committed
-- before it is reported (reports are debounced); after a crash, documents
-- whose log goes past it are reported at start-up. Existing documents
-- count as reported, so that an upgrade does not report every document.
ALTER TABLE documents ADD COLUMN reported_seq INTEGER NOT NULL DEFAULT 0;

UPDATE documents SET reported_seq = MAX(
    COALESCE((SELECT MAX(seq + count - 1) FROM updates WHERE doc_id = documents.id), 0),
    COALESCE((SELECT MAX(upto_seq) FROM snapshots WHERE doc_id = documents.id), 0)
);
