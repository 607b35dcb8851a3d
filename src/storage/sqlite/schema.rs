//! Opening a connection and bringing the database to the schema this weft
//! writes: `schema.sql` for a new file, the steps in `migrations/` for an
//! older one.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::storage::StoreError;

/// The schema this weft writes (see `schema.sql`).
const SCHEMA_VERSION: i64 = 5;
const SCHEMA: &str = include_str!("../../../schema.sql");
/// Steps from each older version to the next: `MIGRATIONS[i]` turns version
/// `i + 1` into `i + 2`.
const MIGRATIONS: &[&str] = &[
    include_str!("../../../migrations/0002_batched_log_revoked_tokens.sql"),
    include_str!("../../../migrations/0003_version_digest.sql"),
    include_str!("../../../migrations/0004_events.sql"),
    include_str!("../../../migrations/0005_webhooks.sql"),
];

pub(super) fn open_connection(path: &Path, busy_timeout: Duration, flags: OpenFlags) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(busy_timeout)?;
    Ok(conn)
}

/// Creates the schema in a new database, or migrates an older one step by
/// step, each step in its own transaction. A newer schema is refused: this
/// weft could not read it correctly.
pub(super) fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found == 0 {
        conn.execute_batch(&format!(
            "BEGIN; {SCHEMA}; PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
        ))?;
        return Ok(());
    }
    for version in found..SCHEMA_VERSION {
        let step = MIGRATIONS[(version - 1) as usize];
        conn.execute_batch(&format!(
            "BEGIN; {step}; PRAGMA user_version = {}; COMMIT;",
            version + 1
        ))?;
        tracing::info!(from = version, to = version + 1, "database schema migrated");
    }
    Ok(())
}
