-- Version 2: revoked access tokens, so a revoked token stays refused after
-- a restart. Rows can be dropped once the token would have expired anyway.
CREATE TABLE IF NOT EXISTS revoked_tokens (
    token_id    TEXT    PRIMARY KEY,
    revoked_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
