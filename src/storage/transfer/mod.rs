//! `weft migrate`: copies every document (its log, snapshots and
//! versions, with their ids and times, and how far its edits were
//! reported), every revocation, the events outbox (with its seqs) and the
//! webhook subscriptions with their cursors and failures, from one
//! database to another, SQLite or PostgreSQL either way, then checks the
//! copy by loading each document from both sides as weft would and
//! comparing their state vectors, versions, reported marks and the rest.
//!
//! Why the outbox and the cursors: a cursor is a seq of the outbox, so
//! with both copied as they are, delivery resumes where it stopped (the
//! undelivered events are sent, the delivered ones are not sent again) and
//! an SSE consumer's `Last-Event-ID` still means the same event. Why
//! `reported_seq`: without it every document would be reported updated
//! once more at start-up. `snapshots.stream_id` (PostgreSQL, cluster mode)
//! is carried between PostgreSQL databases and dropped into SQLite, which
//! reads no stream.
//!
//! The target must hold no documents, events or webhooks: a copy merged
//! into another database's would mix two histories under one name (and
//! two outboxes' seqs). One document (or page of events) is in memory at a
//! time, written in one transaction.

pub(crate) mod rows;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{ReadTxn, Transact, Update};

use self::rows::{DocDump, DocRow, EventRow, RevokedRow, WebhookDump, EVENT_PAGE, MUST_BE_EMPTY};
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
    pub events: usize,
    pub webhooks: usize,
    pub cursors: usize,
    pub failures: usize,
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

    async fn count(&self, table: &str) -> Result<i64, StoreError> {
        match self {
            Side::Sqlite(s) => s.count(table),
            Side::Postgres(p) => p.count(table).await,
        }
    }

    async fn events(&self, after: i64) -> Result<Vec<EventRow>, StoreError> {
        match self {
            Side::Sqlite(s) => s.events(after, EVENT_PAGE),
            Side::Postgres(p) => p.events(after, EVENT_PAGE).await,
        }
    }

    async fn write_events(&mut self, rows: &[EventRow]) -> Result<(), StoreError> {
        match self {
            Side::Sqlite(s) => s.write_events(rows),
            Side::Postgres(p) => p.write_events(rows).await,
        }
    }

    async fn webhooks(&self) -> Result<WebhookDump, StoreError> {
        match self {
            Side::Sqlite(s) => s.webhooks(),
            Side::Postgres(p) => p.webhooks().await,
        }
    }

    async fn write_webhooks(&mut self, dump: &WebhookDump) -> Result<(), StoreError> {
        match self {
            Side::Sqlite(s) => s.write_webhooks(dump),
            Side::Postgres(p) => p.write_webhooks(dump).await,
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
    for table in MUST_BE_EMPTY {
        let already = target.count(table).await?;
        if already > 0 {
            let what = match table {
                "documents" => "documents",
                "events" => "events",
                _ => "webhook subscriptions or cursors",
            };
            return Err(StoreError::Config(format!(
                "{to} already holds {already} {what}: weft migrate copies into an empty database"
            )));
        }
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
    let mut after = 0;
    loop {
        let page = source.events(after).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        target.write_events(&page).await?;
        report.events += page.len();
    }
    let webhooks = source.webhooks().await?;
    target.write_webhooks(&webhooks).await?;
    report.webhooks = webhooks.webhooks.len();
    report.cursors = webhooks.cursors.len();
    report.failures = webhooks.failures.len();
    target.finish().await?;
    drop(source);
    drop(target);
    let streams = matches!((from, to), (DbLocation::Postgres(_), DbLocation::Postgres(_)));
    verify(from, to, conn, streams).await?;
    Ok(report)
}

/// Opens both sides as weft would and compares what it would load.
/// `streams`: both sides keep `snapshots.stream_id`, which must then agree.
async fn verify(from: &DbLocation, to: &DbLocation, conn: &Connection, streams: bool) -> Result<(), StoreError> {
    let source = open_store(from, conn).await?;
    let target = open_store(to, conn).await?;
    let outcome = compare(source.as_ref(), target.as_ref(), streams).await;
    source.close().await;
    target.close().await;
    outcome
}

async fn compare(source: &dyn DocStore, target: &dyn DocStore, streams: bool) -> Result<(), StoreError> {
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
        let (want, got) = (source.load(&name).await?, target.load(&name).await?);
        if want.reported_seq != got.reported_seq {
            return Err(mismatch(&meta.name, "how far its edits were reported".into()));
        }
        if streams && want.stream_id != got.stream_id {
            return Err(mismatch(&meta.name, "the stream entry its snapshot covers".into()));
        }
        if state_vector(&name, &want)? != state_vector(&name, &got)? {
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
    compare_events(source, target).await
}

/// The outbox, event by event (seq, id, body, ...), and the webhook
/// subscriptions, cursors and failures.
async fn compare_events(source: &dyn DocStore, target: &dyn DocStore) -> Result<(), StoreError> {
    let differ = |what: &str| Err(StoreError::Commit(format!("the copy's {what} differ")));
    let mut after = 0;
    loop {
        let want = source.events_after(after, EVENT_PAGE as usize).await?;
        if want != target.events_after(after, EVENT_PAGE as usize).await? {
            return differ("events");
        }
        let Some(last) = want.last() else { break };
        after = last.seq;
    }
    if source.last_event_seq().await? != target.last_event_seq().await? {
        return differ("events");
    }
    let webhooks = source.webhooks().await?;
    if webhooks != target.webhooks().await? {
        return differ("webhook subscriptions");
    }
    let sorted = |mut v: Vec<(String, i64)>| {
        v.sort();
        v
    };
    let cursors = sorted(source.webhook_cursors().await?);
    if cursors != sorted(target.webhook_cursors().await?) {
        return differ("webhook cursors");
    }
    for (id, _) in &cursors {
        let limit = super::webhooks::MAX_FAILURES_KEPT as usize;
        if source.webhook_failures(id, limit).await? != target.webhook_failures(id, limit).await? {
            return differ("webhook failures");
        }
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
