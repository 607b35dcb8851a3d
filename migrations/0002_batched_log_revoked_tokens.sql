-- Version 2.
--
-- The update log stores one row per commit of a document's actor (a batch of
-- consecutive updates) instead of one row per update: `count` updates from
-- `seq` on. A row with count = 1 is the update itself, so every version-1 row
-- is already a valid version-2 row. A row with count > 1 holds each update
-- prefixed by its length (lib0 varUint).
ALTER TABLE updates ADD COLUMN count INTEGER NOT NULL DEFAULT 1;

-- Revoked access tokens, so a revoked token stays refused after
-- a restart. Rows can be dropped once the token would have expired anyway.
CREATE TABLE IF NOT EXISTS revoked_tokens (
    token_id    TEXT    PRIMARY KEY,
    revoked_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
