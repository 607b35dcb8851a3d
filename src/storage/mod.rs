//! Where documents live when they are not in memory.
//!
//! A document is stored as an append-only log of the Yjs v1 updates it
//! accepted, plus snapshots (the full state at a point of the log). Loading is
//! the latest snapshot plus the log after it. The document actor appends each
//! accepted update and waits for the commit before it relays the update, so
//! nothing a peer has seen can be lost when the process dies.
//!
//! [`DocStore`] is deliberately small so that another engine can replace
//! SQLite without touching the actor. Its methods return boxed futures so the
//! store can sit behind `Arc<dyn DocStore>`.

#[cfg(test)]
pub(crate) mod flaky;
mod job;
mod memory;
mod outbox;
mod pack;
mod postgres;
mod sqlite;
pub mod transfer;
pub mod webhooks;

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use serde::Serialize;

use tokio::sync::watch;

use crate::event::NewEvent;
use crate::name::DocName;

pub use memory::MemoryStore;
pub use postgres::{PostgresOptions, PostgresStore};
pub use sqlite::{SqliteStore, SyncMode};
pub use webhooks::{StoredWebhook, WebhookFailure, WebhookWrite};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Storage errors. Each names the document it concerns where there is one.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("PostgreSQL: {0}")]
    Postgres(String),
    /// The database cannot be reached (PostgreSQL down, the network gone);
    /// weft keeps trying to reconnect.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Config(String),
    #[error("stored data of document '{doc}' is corrupt ({what})")]
    Corrupt { doc: String, what: String },
    #[error("database schema version {found} is newer than this weft supports ({supported}); upgrade weft")]
    SchemaTooNew { found: i64, supported: i64 },
    #[error("commit failed: {0}")]
    Commit(String),
    #[error("the store is shut down")]
    Closed,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// One accepted update, numbered within its document.
#[derive(Debug, Clone)]
pub struct LogEntry {
    pub seq: u64,
    pub data: Bytes,
}

/// A document as loaded: a snapshot and the log after it.
#[derive(Debug, Default)]
pub struct StoredDoc {
    /// Full state (Yjs v1) as of `snapshot_seq`.
    pub snapshot: Option<Vec<u8>>,
    /// Updates with `seq > snapshot_seq`, in order.
    pub log: Vec<LogEntry>,
    /// The sequence number the next accepted update gets.
    pub next_seq: u64,
    /// Cluster mode (PostgreSQL only): the last entry of the document's
    /// Redis stream the snapshot covers; the stream is read after it.
    pub stream_id: Option<String>,
    /// The last update seq a `document.updated` event covers: updates
    /// after it were committed but not reported yet (see `report`).
    pub reported_seq: u64,
}

impl StoredDoc {
    pub fn log_bytes(&self) -> u64 {
        self.log.iter().map(|e| e.data.len() as u64).sum()
    }
}

/// The full state of a document at a point of its log.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The last log entry this snapshot covers (0: none).
    pub upto_seq: u64,
    /// Yjs v1 update holding the whole document.
    pub state: Vec<u8>,
    /// Its state vector (v1), kept so that a version can be compared without
    /// decoding it.
    pub state_vector: Vec<u8>,
    /// Cluster mode: the last entry of the document's Redis stream this
    /// state holds (and every one before it). Kept by PostgreSQL only.
    pub stream_id: Option<String>,
}

/// Who took a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VersionKind {
    /// Taken on request, with a label; kept until deleted.
    Named,
    /// Taken by weft when a document went idle or at intervals while edited;
    /// thinned as it ages.
    Auto,
}

impl VersionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            VersionKind::Named => "named",
            VersionKind::Auto => "auto",
        }
    }
}

/// A version and its full state (Yjs v1 update).
pub type VersionState = (VersionMeta, Vec<u8>);

/// A version as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionMeta {
    pub id: i64,
    /// Unix milliseconds.
    pub created: i64,
    pub label: Option<String>,
    pub kind: VersionKind,
    /// Bytes of its full state.
    pub size: u64,
    /// The state vector (v1) it was taken at.
    pub state_vector: Vec<u8>,
    /// What identifies its content (`doc::digest`); `None` for versions
    /// stored before weft kept it.
    pub digest: Option<Vec<u8>>,
}

/// What the document list shows.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DocMeta {
    pub name: String,
    /// Unix milliseconds.
    pub created: i64,
    pub updated: i64,
    /// Bytes stored for the current state (snapshot plus log).
    pub size: u64,
}

/// An event as the outbox holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Its place in the outbox: increasing, never reused (also after
    /// pruning), so a cursor stays meaningful.
    pub seq: i64,
    /// The envelope's `evt_` id.
    pub id: String,
    /// Its type, as `EventType::as_str`.
    pub kind: String,
    pub document: Option<String>,
    /// Unix milliseconds.
    pub created_ms: i64,
    /// The envelope JSON, exactly the bytes delivered.
    pub body: String,
}

/// How far a `document.updated` event reports its document's log: stored
/// with the event, in its transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reported {
    pub doc: DocName,
    pub upto_seq: u64,
}

pub trait DocStore: Send + Sync + 'static {
    /// Loads a document; an unknown one loads as empty.
    fn load<'a>(&'a self, name: &'a DocName) -> BoxFuture<'a, Result<StoredDoc, StoreError>>;

    /// Durably appends updates to a document's log. Resolves once committed.
    fn append<'a>(&'a self, name: &'a DocName, entries: Vec<LogEntry>) -> BoxFuture<'a, Result<(), StoreError>> {
        self.append_with_events(name, entries, Vec::new())
    }

    /// Appends updates and writes `events` in the same transaction (a
    /// restore's update and its `version.restored`). A new document's row
    /// brings its `document.created` in any append.
    fn append_with_events<'a>(
        &'a self,
        name: &'a DocName,
        entries: Vec<LogEntry>,
        events: Vec<NewEvent>,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Writes events that report no change of their own in this store (peers
    /// joining, a debounced `document.updated` with how far it reports, in
    /// one transaction).
    fn emit(&self, events: Vec<NewEvent>, reported: Option<Reported>) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Outbox events with `seq > after_seq`, oldest first, at most `limit`.
    fn events_after(&self, after_seq: i64, limit: usize) -> BoxFuture<'_, Result<Vec<StoredEvent>, StoreError>>;

    /// Deletes outbox events with `seq <= upto_seq` written before
    /// `before_ms` (Unix milliseconds); returns how many.
    fn prune_events(&self, upto_seq: i64, before_ms: i64) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// The highest event seq committed (by any process sharing the store);
    /// 0 when none ever was.
    fn last_event_seq(&self) -> BoxFuture<'_, Result<i64, StoreError>>;

    /// Bumped to the highest event seq this store's writer committed, after
    /// each commit that wrote events (this process's only).
    fn committed_events(&self) -> watch::Receiver<i64>;

    /// Documents with updates no `document.updated` reports yet (after a
    /// crash, or an unload that could not write its report).
    fn unreported(&self) -> BoxFuture<'_, Result<Vec<DocName>, StoreError>>;

    /// Stores a compaction snapshot and drops the log entries it covers, in
    /// one transaction.
    fn compact<'a>(&'a self, name: &'a DocName, snapshot: Snapshot) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Every stored document.
    fn list(&self) -> BoxFuture<'_, Result<Vec<DocMeta>, StoreError>>;

    /// One stored document's metadata, `None` if it was never stored.
    fn meta<'a>(&'a self, name: &'a DocName) -> BoxFuture<'a, Result<Option<DocMeta>, StoreError>>;

    /// Removes a document, its log and its snapshots. `false` if unknown.
    fn delete<'a>(&'a self, name: &'a DocName) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Stores a version of a document (a full state that the log keeps),
    /// with the digest of its content.
    fn save_version<'a>(
        &'a self,
        name: &'a DocName,
        snapshot: Snapshot,
        kind: VersionKind,
        label: Option<String>,
        digest: Vec<u8>,
    ) -> BoxFuture<'a, Result<VersionMeta, StoreError>>;

    /// Makes a version named (kept until deleted), with `label` if it had
    /// none. `None` if there is no such version.
    fn name_version<'a>(
        &'a self,
        name: &'a DocName,
        id: i64,
        label: Option<String>,
    ) -> BoxFuture<'a, Result<Option<VersionMeta>, StoreError>>;

    /// A document's versions, newest first.
    fn list_versions<'a>(&'a self, name: &'a DocName) -> BoxFuture<'a, Result<Vec<VersionMeta>, StoreError>>;

    /// One version and its full state.
    fn load_version<'a>(
        &'a self,
        name: &'a DocName,
        id: i64,
    ) -> BoxFuture<'a, Result<Option<VersionState>, StoreError>>;

    /// Deletes versions by id; returns how many existed.
    fn delete_versions<'a>(&'a self, name: &'a DocName, ids: Vec<i64>) -> BoxFuture<'a, Result<usize, StoreError>>;

    /// Records a revoked access token until it would have expired (Unix
    /// seconds). Access control keeps its few rows here so that weft has one
    /// database to back up.
    fn revoke_token(&self, token_id: String, expires_at: u64) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Revoked tokens that have not expired yet.
    fn revoked_tokens(&self) -> BoxFuture<'_, Result<Vec<String>, StoreError>>;

    /// Finishes pending writes and releases the store.
    fn close(&self) -> BoxFuture<'_, ()>;

    /// Whether the store can commit right now, as far as it knows (`/healthz`).
    /// A store on a server (PostgreSQL) is down while it cannot reach it.
    fn healthy(&self) -> bool {
        true
    }

    /// Webhooks (`storage::webhooks`): writes a subscription, a cursor or
    /// a failure. `false` only for deleting what did not exist.
    fn webhook_write(&self, op: WebhookWrite) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// The subscriptions made through the API, oldest first.
    fn webhooks(&self) -> BoxFuture<'_, Result<Vec<StoredWebhook>, StoreError>>;

    /// Every subscription's cursor: `(webhook id, last event seq dealt with)`.
    fn webhook_cursors(&self) -> BoxFuture<'_, Result<Vec<(String, i64)>, StoreError>>;

    /// A subscription's failures, newest first, at most `limit`.
    fn webhook_failures<'a>(
        &'a self,
        webhook_id: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<WebhookFailure>, StoreError>>;
}
