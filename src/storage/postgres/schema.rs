//! Bringing a PostgreSQL database to the schema this weft writes, at
//! start-up, under an advisory lock: weft processes that start together
//! against one database (a cluster's nodes) wait for each other, and the
//! first one creates the tables while the others find them made.

use tokio_postgres::Client;

use super::pg_error;
use crate::storage::StoreError;

/// The schema this weft writes. Up to 3 the numbers are `schema.sql`'s
/// (a change of both stores' tables is a step for both); 4 is a step of
/// PostgreSQL's alone (the stream position of a snapshot, which only
/// cluster mode has); 5 is SQLite's 4 (the events outbox), 6 SQLite's 5
/// (webhooks).
pub(super) const SCHEMA_VERSION: i32 = 6;
const SCHEMA: &str = include_str!("../../../schema.postgres.sql");
/// Steps from each older version to the next, `(from, sql)`. PostgreSQL
/// support began at version 3.
const MIGRATIONS: &[(i32, &str)] = &[
    (
        3,
        include_str!("../../../migrations/postgres/0004_snapshot_stream_id.sql"),
    ),
    (4, include_str!("../../../migrations/postgres/0005_events.sql")),
    (5, include_str!("../../../migrations/postgres/0006_webhooks.sql")),
];
/// The advisory lock's key: any constant other applications are unlikely to
/// use ("weft" in ASCII).
const LOCK_KEY: i64 = 0x7765_6674;

/// What [`migrate`] did, for the log and the tests.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Migrated {
    Created,
    Upgraded { from: i32 },
    Current,
}

/// Creates the schema in a database without weft's tables, or runs the
/// steps from an older version, in one transaction holding the advisory
/// lock (released at its end). A newer version is refused untouched.
pub(super) async fn migrate(client: &mut Client) -> Result<Migrated, StoreError> {
    let tx = client.transaction().await.map_err(pg_error)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
        .await
        .map_err(pg_error)?;
    let exists: bool = tx
        .query_one("SELECT to_regclass('weft_schema') IS NOT NULL", &[])
        .await
        .map_err(pg_error)?
        .get(0);
    let found: Option<i32> = if exists {
        tx.query_opt("SELECT max(version) FROM weft_schema", &[])
            .await
            .map_err(pg_error)?
            .and_then(|row| row.get(0))
    } else {
        None
    };
    let outcome = match found {
        Some(found) if found > SCHEMA_VERSION => {
            return Err(StoreError::SchemaTooNew {
                found: found.into(),
                supported: SCHEMA_VERSION.into(),
            })
        }
        Some(found) if found == SCHEMA_VERSION => Migrated::Current,
        None => {
            tx.batch_execute(SCHEMA).await.map_err(pg_error)?;
            tx.execute("INSERT INTO weft_schema (version) VALUES ($1)", &[&SCHEMA_VERSION])
                .await
                .map_err(pg_error)?;
            Migrated::Created
        }
        Some(found) => {
            for version in found..SCHEMA_VERSION {
                let (_, step) = MIGRATIONS.iter().find(|(from, _)| *from == version).ok_or_else(|| {
                    StoreError::Config(format!(
                        "weft_schema says version {found}, which no weft wrote for PostgreSQL"
                    ))
                })?;
                tx.batch_execute(step).await.map_err(pg_error)?;
            }
            tx.execute("UPDATE weft_schema SET version = $1", &[&SCHEMA_VERSION])
                .await
                .map_err(pg_error)?;
            Migrated::Upgraded { from: found }
        }
    };
    tx.commit().await.map_err(pg_error)?;
    Ok(outcome)
}
