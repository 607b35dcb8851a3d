-- weft storage schema, version 1.
--
-- Applied at start-up when the database is new (PRAGMA user_version = 0) and
-- recorded with PRAGMA user_version. A later weft that changes the schema adds
-- a numbered migration and bumps the version; a weft that finds a version
-- newer than it knows refuses to start rather than misread the data.
--
-- Times are Unix milliseconds. Updates and snapshots are Yjs v1 encodings.

CREATE TABLE IF NOT EXISTS documents (
    id          INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    -- bytes of the latest snapshot plus the log after it
    size_bytes  INTEGER NOT NULL DEFAULT 0
);

-- Append-only log of every accepted update. `seq` numbers the updates of one
-- document from 1; a snapshot covers the log up to its `upto_seq`.
CREATE TABLE IF NOT EXISTS updates (
    doc_id      INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    seq         INTEGER NOT NULL,
    data        BLOB    NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (doc_id, seq)
) WITHOUT ROWID;

-- Full states. kind 'compaction': written when the log grows past a threshold,
-- the log rows it covers are deleted in the same transaction; only the latest
-- is kept. kind 'version': a point of the history kept for browsing and
-- restore; `trigger` says whether a person named it or weft took it.
CREATE TABLE IF NOT EXISTS snapshots (
    id            INTEGER PRIMARY KEY,
    doc_id        INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    kind          TEXT    NOT NULL CHECK (kind IN ('compaction', 'version')),
    trigger       TEXT    CHECK (trigger IN ('named', 'auto')),
    label         TEXT,
    upto_seq      INTEGER NOT NULL,
    state         BLOB    NOT NULL,
    state_vector  BLOB    NOT NULL,
    created_at    INTEGER NOT NULL
);

CREATE INDEX IF NOT EXISTS snapshots_by_doc ON snapshots (doc_id, upto_seq);
