-- PostgreSQL schema version 6: webhook subscriptions, each one's position in the
-- events outbox, and the events it gave up on (issue 16).

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
    content     BOOLEAN NOT NULL DEFAULT FALSE,
    created_at  BIGINT  NOT NULL
);

-- The last event (`events.seq`) each subscription has delivered or given
-- up on: delivery resumes after it, so an event is sent at least once.
CREATE TABLE IF NOT EXISTS webhook_cursors (
    webhook_id  TEXT    PRIMARY KEY,
    seq         BIGINT  NOT NULL,
    updated_at  BIGINT  NOT NULL
);

-- Events a subscription gave up on after its attempts (the newest 1,000
-- per subscription are kept).
CREATE TABLE IF NOT EXISTS webhook_failures (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook_id  TEXT    NOT NULL,
    event_seq   BIGINT  NOT NULL,
    event_id    TEXT    NOT NULL,
    event_type  TEXT    NOT NULL,
    attempts    INTEGER NOT NULL,
    last_status INTEGER,
    last_error  TEXT    NOT NULL,
    failed_at   BIGINT  NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_failures_by_hook ON webhook_failures (webhook_id, id);
