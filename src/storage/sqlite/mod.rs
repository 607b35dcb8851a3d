//! SQLite store: the embedded default.
//!
//! All writes go through one dedicated OS thread that owns the only writing
//! connection. Jobs reach it over a bounded queue; it takes every job waiting
//! in the queue and commits them in one transaction (group commit), so a
//! thousand documents each waiting for one update cost one commit, not a
//! thousand. A job that fails does not fail its neighbours: its batch runs
//! again with a savepoint per job (see [`writer`]).
//!
//! Reads (loading a document, listing) run on `spawn_blocking` with their own
//! connections; WAL mode lets them proceed while the writer commits. No SQLite
//! call ever runs on an async worker thread.
//!
//! # Layout
//!
//! - this module: [`SqliteStore`], the [`DocStore`] over the two sides;
//! - [`schema`]: opening connections, the schema and its migrations;
//! - [`read`]: the reader pool and every read query (`load` included);
//! - [`writer`]: the writer thread, group commit, one function per job kind;
//! - `storage::pack` (shared with PostgreSQL): how one log row holds the
//!   updates of one actor batch.

mod read;
pub(crate) mod rows;
mod schema;
mod webhooks;
mod writer;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{mpsc, oneshot, watch};

use self::read::ReadPool;
use self::schema::{migrate, open_connection};
use self::writer::Writer;
use super::job::{Job, JobQueue, WRITE_QUEUE};
use super::{
    BoxFuture, DocMeta, DocStore, LogEntry, Reported, Snapshot, StoreError, StoredDoc, StoredEvent, VersionKind,
    VersionMeta, VersionState,
};
use super::{StoredWebhook, WebhookFailure, WebhookWrite};
use crate::clock::now_secs;
use crate::event::NewEvent;
use crate::metrics::Metrics;
use crate::name::DocName;

/// A flag of the configuration, so defined there; SQLite's names for it are
/// set in [`SqliteStore::open`].
pub use crate::config::SyncMode;

/// WAL pages (4 KiB each) after which a commit also checkpoints.
const CHECKPOINT_PAGES: u32 = 250;

pub struct SqliteStore {
    jobs: JobQueue,
    readers: Arc<ReadPool>,
    /// The highest event seq committed, bumped by the writer.
    events: Arc<watch::Sender<i64>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, applies the schema
    /// and starts the writer thread.
    pub fn open(
        path: &Path,
        sync: SyncMode,
        busy_timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StoreError> {
        let conn = open_connection(path, busy_timeout, OpenFlags::default())?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(
            None,
            "synchronous",
            match sync {
                SyncMode::Normal => "NORMAL",
                SyncMode::Full => "FULL",
            },
        )?;
        migrate(&conn)?;
        // SQLite checkpoints on the committing connection, and commits wait
        // meanwhile: the checkpoint's length is the commit latency's tail.
        // Checkpointing more often than SQLite's default (1,000 pages) makes
        // each stall shorter at the same throughput; the measurements are in
        // docs/BENCHMARKS.md (the checkpoint row of the profiling table).
        conn.pragma_update(None, "wal_autocheckpoint", CHECKPOINT_PAGES)?;

        let events = Arc::new(watch::channel(read::last_event_seq(&conn)?).0);
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let signal = events.clone();
        std::thread::Builder::new()
            .name("weft-sqlite-writer".into())
            .spawn(move || Writer::new(conn, metrics, signal).run(rx))?;
        Ok(Self {
            jobs: JobQueue(tx),
            readers: Arc::new(ReadPool::new(path.to_owned(), busy_timeout)),
            events,
        })
    }

    fn write<T: Send + 'static>(
        &self,
        job: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Job,
    ) -> BoxFuture<'_, Result<T, StoreError>> {
        self.jobs.submit(job)
    }

    /// Runs a read query on a pooled connection, off the async workers.
    fn read<T, F>(&self, f: F) -> BoxFuture<'static, Result<T, StoreError>>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let pool = self.readers.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let conn = pool.take()?;
                let result = f(&conn);
                pool.give_back(conn);
                result
            })
            .await
            .map_err(|e| StoreError::Io(std::io::Error::other(e)))?
        })
    }
}

impl DocStore for SqliteStore {
    fn load<'a>(&'a self, name: &'a DocName) -> BoxFuture<'a, Result<StoredDoc, StoreError>> {
        let name = name.clone();
        self.read(move |conn| read::load(conn, &name))
    }

    fn append_with_events<'a>(
        &'a self,
        name: &'a DocName,
        entries: Vec<LogEntry>,
        events: Vec<NewEvent>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.write(|reply| Job::Append {
            doc: name.clone(),
            entries,
            events,
            reply,
        })
    }

    fn emit(&self, events: Vec<NewEvent>, reported: Option<Reported>) -> BoxFuture<'_, Result<(), StoreError>> {
        self.jobs.submit_now(|reply| Job::Emit {
            events,
            reported,
            reply,
        })
    }

    fn events_after(&self, after_seq: i64, limit: usize) -> BoxFuture<'_, Result<Vec<StoredEvent>, StoreError>> {
        self.read(move |conn| read::events_after(conn, after_seq, limit))
    }

    fn prune_events(&self, upto_seq: i64, before_ms: i64) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.write(|reply| Job::PruneEvents {
            upto_seq,
            before_ms,
            reply,
        })
    }

    fn last_event_seq(&self) -> BoxFuture<'_, Result<i64, StoreError>> {
        self.read(read::last_event_seq)
    }

    fn committed_events(&self) -> watch::Receiver<i64> {
        self.events.subscribe()
    }

    fn unreported(&self) -> BoxFuture<'_, Result<Vec<DocName>, StoreError>> {
        self.read(read::unreported)
    }

    fn compact<'a>(&'a self, name: &'a DocName, snapshot: Snapshot) -> BoxFuture<'a, Result<(), StoreError>> {
        self.write(|reply| Job::Compact {
            doc: name.clone(),
            snapshot,
            reply,
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<DocMeta>, StoreError>> {
        self.read(read::list)
    }

    fn meta<'a>(&'a self, name: &'a DocName) -> BoxFuture<'a, Result<Option<DocMeta>, StoreError>> {
        let name = name.clone();
        self.read(move |conn| read::meta(conn, &name))
    }

    fn delete<'a>(&'a self, name: &'a DocName) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.write(|reply| Job::Delete {
            doc: name.clone(),
            reply,
        })
    }

    fn save_version<'a>(
        &'a self,
        name: &'a DocName,
        snapshot: Snapshot,
        kind: VersionKind,
        label: Option<String>,
        digest: Vec<u8>,
    ) -> BoxFuture<'a, Result<VersionMeta, StoreError>> {
        self.write(|reply| Job::SaveVersion {
            doc: name.clone(),
            snapshot,
            kind,
            label,
            digest,
            reply,
        })
    }

    fn name_version<'a>(
        &'a self,
        name: &'a DocName,
        id: i64,
        label: Option<String>,
    ) -> BoxFuture<'a, Result<Option<VersionMeta>, StoreError>> {
        self.write(|reply| Job::NameVersion {
            doc: name.clone(),
            id,
            label,
            reply,
        })
    }

    fn list_versions<'a>(&'a self, name: &'a DocName) -> BoxFuture<'a, Result<Vec<VersionMeta>, StoreError>> {
        let name = name.clone();
        self.read(move |conn| read::list_versions(conn, &name))
    }

    fn load_version<'a>(
        &'a self,
        name: &'a DocName,
        id: i64,
    ) -> BoxFuture<'a, Result<Option<VersionState>, StoreError>> {
        let name = name.clone();
        self.read(move |conn| read::load_version(conn, &name, id))
    }

    fn delete_versions<'a>(&'a self, name: &'a DocName, ids: Vec<i64>) -> BoxFuture<'a, Result<usize, StoreError>> {
        self.write(|reply| Job::DeleteVersions {
            doc: name.clone(),
            ids,
            reply,
        })
    }

    fn revoke_token(&self, token_id: String, expires_at: u64) -> BoxFuture<'_, Result<(), StoreError>> {
        self.write(|reply| Job::Revoke {
            token_id,
            expires_at,
            reply,
        })
    }

    fn revoked_tokens(&self) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        self.read(|conn| read::revoked_tokens(conn, now_secs()))
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        self.jobs.close()
    }

    fn webhook_write(&self, op: WebhookWrite) -> BoxFuture<'_, Result<bool, StoreError>> {
        self.write(|reply| Job::Webhook { op, reply })
    }

    fn webhooks(&self) -> BoxFuture<'_, Result<Vec<StoredWebhook>, StoreError>> {
        self.read(webhooks::webhooks)
    }

    fn webhook_cursors(&self) -> BoxFuture<'_, Result<Vec<(String, i64)>, StoreError>> {
        self.read(webhooks::cursors)
    }

    fn webhook_failures<'a>(
        &'a self,
        webhook_id: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<WebhookFailure>, StoreError>> {
        let id = webhook_id.to_string();
        self.read(move |conn| webhooks::failures(conn, &id, limit))
    }
}
