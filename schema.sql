-- weft storage schema, version 5: what a new database gets.
--
-- Applied at start-up when the database is new (PRAGMA user_version = 0) and
-- recorded with PRAGMA user_version. An older database is brought up to date
-- by the numbered steps in migrations/ (each its own transaction); a test
-- checks that both paths give the same schema. A weft that finds a version
-- newer than it knows refuses to start rather than misread the data.
--
-- Times are Unix milliseconds. Updates and snapshots are Yjs v1 encodings.

CREATE TABLE IF NOT EXISTS documents (
    id          INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    -- bytes of the latest snapshot plus the log after it
    size_bytes  INTEGER NOT NULL DEFAULT 0,
    -- the last update seq a document.updated event covers (events below)
    reported_seq INTEGER NOT NULL DEFAULT 0
);

-- Append-only log of every accepted update. `seq` numbers the updates of one
-- document from 1; a snapshot covers the log up to its `upto_seq`. One row
-- holds one commit of the document's actor: `count` consecutive updates from
-- `seq` on. With count = 1, `data` is the update itself; with count > 1, each
-- update prefixed by its length (lib0 varUint).
CREATE TABLE IF NOT EXISTS updates (
    doc_id      INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    seq         INTEGER NOT NULL,
    data        BLOB    NOT NULL,
    created_at  INTEGER NOT NULL,
    count       INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (doc_id, seq)
) WITHOUT ROWID;

-- Full states. kind 'compaction': written when the log grows past a threshold,
-- the log rows it covers are deleted in the same transaction; only the latest
-- is kept. kind 'version': a point of the history kept for browsing and
-- restore; `trigger` says whether a person named it or weft took it.
-- `digest` (versions only) identifies the content: SHA-256 over the state
-- vector and the delete set (doc::digest); a version identical to the latest
-- is not stored again. NULL for versions from before schema version 3.
CREATE TABLE IF NOT EXISTS snapshots (
    id            INTEGER PRIMARY KEY,
    doc_id        INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    kind          TEXT    NOT NULL CHECK (kind IN ('compaction', 'version')),
    trigger       TEXT    CHECK (trigger IN ('named', 'auto')),
    label         TEXT,
    upto_seq      INTEGER NOT NULL,
    state         BLOB    NOT NULL,
    state_vector  BLOB    NOT NULL,
    created_at    INTEGER NOT NULL,
    digest        BLOB
);

CREATE INDEX IF NOT EXISTS snapshots_by_doc ON snapshots (doc_id, upto_seq);

-- Revoked access tokens, so a revoked token stays refused after a restart.
-- Rows can be dropped once the token would have expired anyway.
CREATE TABLE IF NOT EXISTS revoked_tokens (
    token_id    TEXT    PRIMARY KEY,
    revoked_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);

-- The outbox of events (README, *Events*): a row is written in the same
-- transaction as the change it reports. `seq` orders them (the SSE feed's
-- `id:`, the webhooks' cursors); `id` is the envelope's `evt_` id; `body`
-- is the envelope exactly as delivered. Pruned after --events-retention
-- once every webhook has delivered them.
CREATE TABLE IF NOT EXISTS events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT    NOT NULL UNIQUE,
    type        TEXT    NOT NULL,
    document    TEXT,
    created_at  INTEGER NOT NULL,
    body        TEXT    NOT NULL
);

CREATE INDEX IF NOT EXISTS events_by_time ON events (created_at);

-- Webhooks (version 5): subscriptions, cursors in the outbox, failures.
-- Subscriptions made through the API (`POST /api/webhooks`). Those given
-- with --webhook live in the configuration, not here; both have cursors.
CREATE TABLE IF NOT EXISTS webhooks (
    id          TEXT    PRIMARY KEY,
    url         TEXT    NOT NULL,
    -- `whsec_<base64>`: weft needs the key itself to sign.
    secret      TEXT    NOT NULL,
    -- JSON array of event types; NULL: the default set.
    events      TEXT,
    prefix      TEXT,
    content     INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL
);

-- The last event (`events.seq`) each subscription has delivered or given
-- up on: delivery resumes after it, so an event is sent at least once.
CREATE TABLE IF NOT EXISTS webhook_cursors (
    webhook_id  TEXT    PRIMARY KEY,
    seq         INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

-- Events a subscription gave up on after its attempts (the newest 1,000
-- per subscription are kept).
CREATE TABLE IF NOT EXISTS webhook_failures (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook_id  TEXT    NOT NULL,
    event_seq   INTEGER NOT NULL,
    event_id    TEXT    NOT NULL,
    event_type  TEXT    NOT NULL,
    attempts    INTEGER NOT NULL,
    last_status INTEGER,
    last_error  TEXT    NOT NULL,
    failed_at   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_failures_by_hook ON webhook_failures (webhook_id, id);
