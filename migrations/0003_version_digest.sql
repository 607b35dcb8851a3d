-- Version 3.
--
-- Versions record what identifies their content (SHA-256 over the state
-- vector and the delete set), so that a version identical to the latest one
-- is answered with that one instead of being stored again. Versions stored
-- before have none (NULL): the next version of their document is stored.
ALTER TABLE snapshots ADD COLUMN digest BLOB;
