//! `weft migrate`: copies every document (its log, snapshots and
//! versions, with their ids and times) and every revocation from one
//! database to another, SQLite or PostgreSQL either way, then checks the
//! copy by loading each document from both sides as weft would and
//! comparing their state vectors, versions and revocations.
//!
//! The target must hold no documents: a copy merged into another
//! database's would mix two histories under one name. One document is in
//! memory at a time, written in one transaction.

pub(crate) mod rows;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{ReadTxn, Transact, Update};

use self::rows::{DocDump, DocRow, RevokedRow};
use super::postgres::rows::PostgresRows;
use super::sqlite::rows::SqliteRows;
use super::{DocStore, PostgresOptions, PostgresStore, SqliteStore, StoreError, StoredDoc, SyncMode};
use crate::config::DbLocation;
use crate::metrics::Metrics;
use crate::name::DocName;

/// How to reach a PostgreSQL side (the URL aside).
#[derive(Clone)]
pub struct Connection {
    pub password_file: Option<std::path::PathBuf>,
    pub statement_timeout: Duration,
}

/// What was copied.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub documents: usize,
    pub log_rows: usize,
    pub snapshots: usize,
    pub versions: usize,
    pub revocations: usize,
}

/// One side of the copy, raw rows in and out.
enum Side {
    Sqlite(SqliteRows),
    Postgres(PostgresRows),
}

impl Side {
    async fn open(location: &DbLocation, conn: &Connection) -> Result<Side, StoreError> {
        Ok(match location {
            DbLocation::Sqlite(path) => Side::Sqlite(SqliteRows::open(path)?),
            DbLocation::Postgres(url) => Side::Postgres(PostgresRows::open(&options(url.secret(), conn)).await?),
        })
    }

    async fn documents(&self) -> Result<Vec<DocRow>, StoreError> {
        match self {
            Side::Sqlite(s) => s.documents(),
            Side::Postgres(p) => p.documents().await,
        }
    }

    async fn dump(&self, doc: DocRow) -> Result<DocDump, StoreError> {
        match self {
            Side::Sqlite(s) => s.dump(doc),
            Side::Postgres(p) => p.dump(doc).await,
        }
    }

    async fn revoked(&self) -> Result<Vec<RevokedRow>, StoreError> {
        match self {
            Side::Sqlite(s) => s.revoked(),
            Side::Postgres(p) => p.revoked().await,
        }
    }

    async fn write(&mut self, dump: &DocDump) -> Result<(), StoreError> {
        match self {
            Side::Sqlite(s) => s.write(dump),
            Side::Postgres(p) => p.write(dump).await,
        }
    }

    async fn write_revoked(&mut self, rows: &[RevokedRow]) -> Result<(), StoreError> {
        match self {
            Side::Sqlite(s) => s.write_revoked(rows),
            Side::Postgres(p) => p.write_revoked(rows).await,
        }
    }

    async fn finish(&mut self) -> Result<(), StoreError> {
        match self {
            Side::Sqlite(s) => s.finish(),
            Side::Postgres(p) => p.finish().await,
        }
    }
}

fn options(url: &str, conn: &Connection) -> PostgresOptions {
    PostgresOptions {
        url: url.to_string(),
        password_file: conn.password_file.clone(),
        statement_timeout: conn.statement_timeout,
        lock_timeout: conn.statement_timeout,
    }
}

/// Copies `from` into `to` (see the module comment), calling `progress`
/// with each document's name, then verifies the copy.
pub async fn copy(
    from: &DbLocation,
    to: &DbLocation,
    conn: &Connection,
    progress: impl Fn(&str),
) -> Result<Report, StoreError> {
    if from == to {
        return Err(StoreError::Config("--from and --to are the same database".into()));
    }
    let source = Side::open(from, conn).await?;
    let mut target = Side::open(to, conn).await?;
    let already = target.documents().await?.len();
    if already > 0 {
        return Err(StoreError::Config(format!(
            "{to} already holds {already} documents: weft migrate copies into an empty database"
        )));
    }
    let mut report = Report::default();
    for doc in source.documents().await? {
        let dump = source.dump(doc).await?;
        progress(&dump.doc.name);
        target.write(&dump).await?;
        report.documents += 1;
        report.log_rows += dump.updates.len();
        report.versions += dump.snapshots.iter().filter(|s| s.kind == "version").count();
        report.snapshots += dump.snapshots.len();
    }
    let revoked = source.revoked().await?;
    target.write_revoked(&revoked).await?;
    report.revocations = revoked.len();
    target.finish().await?;
    drop(source);
    drop(target);
    verify(from, to, conn).await?;
    Ok(report)
}

/// Opens both sides as weft would and compares what it would load.
async fn verify(from: &DbLocation, to: &DbLocation, conn: &Connection) -> Result<(), StoreError> {
    let source = open_store(from, conn).await?;
    let target = open_store(to, conn).await?;
    let outcome = compare(source.as_ref(), target.as_ref()).await;
    source.close().await;
    target.close().await;
    outcome
}

async fn compare(source: &dyn DocStore, target: &dyn DocStore) -> Result<(), StoreError> {
    let mismatch = |doc: &str, what: String| StoreError::Corrupt {
        doc: doc.to_string(),
        what: format!("the copy differs: {what}"),
    };
    let docs = source.list().await?;
    if docs != target.list().await? {
        return Err(StoreError::Commit("the copy's list of documents differs".into()));
    }
    for meta in docs {
        let name = DocName::parse(&meta.name).map_err(|e| StoreError::Corrupt {
            doc: meta.name.clone(),
            what: format!("not a document name weft accepts: {e}"),
        })?;
        let want = state_vector(&name, &source.load(&name).await?)?;
        let got = state_vector(&name, &target.load(&name).await?)?;
        if want != got {
            return Err(mismatch(&meta.name, "state vectors".into()));
        }
        if source.list_versions(&name).await? != target.list_versions(&name).await? {
            return Err(mismatch(&meta.name, "versions".into()));
        }
    }
    let want: BTreeSet<String> = source.revoked_tokens().await?.into_iter().collect();
    let got: BTreeSet<String> = target.revoked_tokens().await?.into_iter().collect();
    if want != got {
        return Err(StoreError::Commit("the copy's revocations differ".into()));
    }
    Ok(())
}

async fn open_store(location: &DbLocation, conn: &Connection) -> Result<Arc<dyn DocStore>, StoreError> {
    let metrics = Arc::new(Metrics::default());
    Ok(match location {
        DbLocation::Sqlite(path) => Arc::new(SqliteStore::open(
            path,
            SyncMode::Normal,
            Duration::from_secs(5),
            metrics,
        )?),
        DbLocation::Postgres(url) => Arc::new(PostgresStore::open(options(url.secret(), conn), metrics).await?),
    })
}

/// The state vector (v1) of a document as loaded: its snapshot and log
/// applied to an empty document.
fn state_vector(name: &DocName, stored: &StoredDoc) -> Result<Vec<u8>, StoreError> {
    let corrupt = |what: String| StoreError::Corrupt {
        doc: name.to_string(),
        what,
    };
    let doc = yrs::Doc::new();
    let mut txn = doc.transact_mut();
    let updates = stored
        .snapshot
        .iter()
        .map(Vec::as_slice)
        .chain(stored.log.iter().map(|e| &e.data[..]));
    for update in updates {
        let update = Update::decode_v1(update).map_err(|e| corrupt(format!("an update does not decode: {e}")))?;
        txn.apply_update(update)
            .map_err(|e| corrupt(format!("an update does not apply: {e}")))?;
    }
    Ok(txn.state_vector().encode_v1())
}
