//! PostgreSQL store: the same guarantees as SQLite, on a database that
//! servers share.
//!
//! Writes go through one task owning the writing connection, which commits
//! every job waiting in its queue, from every document, in one transaction
//! (group commit, pipelined: see [`writer`]). Reads run on a small pool of
//! connections (deadpool-postgres), one statement each. Every query is
//! bounded twice: by the server's `statement_timeout` (set for every
//! session) and by weft giving up waiting after the same time, which also
//! covers a server that does not answer at all.
//!
//! When the server cannot be reached, the store is down ([`Health`]): the
//! outage is logged once, `/healthz` answers 503, writes fail at once (the
//! actor closes their senders with 4500; they resend after reconnecting),
//! and the writer reconnects with backoff until it is back.
//!
//! # Layout
//!
//! - this module: [`PostgresStore`], the [`DocStore`] over the two sides,
//!   and [`Health`];
//! - [`connect`]: from `--db postgres://…` and the `PG*` variables to a
//!   connection configuration, TLS included;
//! - [`schema`]: the schema and its migrations, under an advisory lock;
//! - [`read`]: every read query;
//! - [`writer`]: the writer task and group commit; [`jobs`]: the jobs
//!   other than appends.

mod compact;
mod connect;
mod jobs;
mod read;
pub(crate) mod rows;
mod schema;
mod webhooks;
mod writer;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod};
use tokio::sync::{mpsc, oneshot, watch};

use self::schema::{migrate, Migrated};
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

/// Reader connections (the writer has one more of its own).
const READERS: usize = 8;
/// The first wait before reconnecting, doubled after each failure up to
/// [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How to reach the server, from the configuration.
pub struct PostgresOptions {
    /// `postgres://…` as given (it may hold the password).
    pub url: String,
    pub password_file: Option<PathBuf>,
    /// Bounds every query (`statement_timeout`, and weft's own wait).
    pub statement_timeout: Duration,
    /// How long a statement waits for a lock (`lock_timeout`).
    pub lock_timeout: Duration,
}

pub struct PostgresStore {
    jobs: JobQueue,
    pool: Pool,
    health: Arc<Health>,
    timeout: Duration,
    /// The highest event seq this process committed, bumped by the writer.
    events: Arc<watch::Sender<i64>>,
    /// One compaction at a time, on a connection of its own (`compact`).
    compacting: tokio::sync::Semaphore,
    /// Counts the events a compaction's transaction writes (a new row's
    /// `document.created`), as the writer does for its own.
    metrics: Arc<Metrics>,
}

impl PostgresStore {
    /// Connects, brings the schema up to date and starts the writer task.
    /// Fails when the server cannot be reached: a store that never worked
    /// is a configuration to fix, not an outage to wait out.
    pub async fn open(options: PostgresOptions, metrics: Arc<Metrics>) -> Result<Self, StoreError> {
        let target = target(&options)?;
        let manager = Manager::from_config(
            target.config,
            target.tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let timeout = options.statement_timeout;
        let pool = Pool::builder(manager)
            .max_size(READERS + 1)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            .build()
            .map_err(|e| StoreError::Config(e.to_string()))?;
        let mut conn = pool.get().await.map_err(pool_error)?;
        let client: &mut tokio_postgres::Client = &mut conn;
        match tokio::time::timeout(timeout, migrate(client)).await {
            Ok(Ok(Migrated::Created)) => tracing::info!("database schema created (PostgreSQL)"),
            Ok(Ok(Migrated::Upgraded { from })) => {
                tracing::info!(from, to = schema::SCHEMA_VERSION, "database schema migrated")
            }
            Ok(Ok(Migrated::Current)) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(StoreError::Unavailable("schema migration timed out".into())),
        }
        let last_event = tokio::time::timeout(timeout, read::last_event_seq(&conn))
            .await
            .map_err(|_| StoreError::Unavailable("no answer from the server".into()))??;
        drop(conn);

        let health = Arc::new(Health::default());
        let events = Arc::new(watch::channel(last_event).0);
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let writer = Writer::new(pool.clone(), health.clone(), metrics.clone(), timeout, events.clone());
        tokio::spawn(writer.run(rx));
        Ok(Self {
            jobs: JobQueue(tx),
            pool,
            health,
            timeout,
            events,
            compacting: tokio::sync::Semaphore::new(1),
            metrics,
        })
    }

    fn write<T: Send + 'static>(
        &self,
        job: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Job,
    ) -> BoxFuture<'_, Result<T, StoreError>> {
        self.jobs.submit(job)
    }

    /// A pooled connection for one read, bounded by the timeout; an outage
    /// seen here marks the store down too.
    async fn reader(&self) -> Result<Object, StoreError> {
        match self.pool.get().await {
            Ok(conn) => Ok(conn),
            Err(e) => {
                let outage = !matches!(e, PoolError::Timeout(deadpool_postgres::TimeoutType::Wait));
                let e = pool_error(e);
                if outage {
                    self.health.failed(&e);
                }
                Err(e)
            }
        }
    }

    /// Runs one read with the timeout; a connection that timed out is
    /// closed rather than put back (it may still be busy).
    async fn read<T>(
        &self,
        f: impl for<'c> FnOnce(&'c Object) -> BoxFuture<'c, Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let conn = self.reader().await?;
        let result = tokio::time::timeout(self.timeout, f(&conn)).await;
        match result {
            Ok(Err(StoreError::Unavailable(e))) => {
                drop(Object::take(conn));
                let e = StoreError::Unavailable(e);
                self.health.failed(&e);
                Err(e)
            }
            Ok(result) => result,
            Err(_) => {
                drop(Object::take(conn));
                Err(StoreError::Unavailable(format!(
                    "no answer within {} ms",
                    self.timeout.as_millis()
                )))
            }
        }
    }
}

impl DocStore for PostgresStore {
    fn load<'a>(&'a self, name: &'a DocName) -> BoxFuture<'a, Result<StoredDoc, StoreError>> {
        let name = name.clone();
        Box::pin(self.read(move |c| Box::pin(async move { read::load(c, &name).await })))
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
        Box::pin(self.read(move |c| Box::pin(read::events_after(c, after_seq, limit))))
    }

    fn prune_events(&self, upto_seq: i64, before_ms: i64) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.write(|reply| Job::PruneEvents {
            upto_seq,
            before_ms,
            reply,
        })
    }

    fn last_event_seq(&self) -> BoxFuture<'_, Result<i64, StoreError>> {
        Box::pin(self.read(|c| Box::pin(read::last_event_seq(c))))
    }

    fn committed_events(&self) -> watch::Receiver<i64> {
        self.events.subscribe()
    }

    fn unreported(&self) -> BoxFuture<'_, Result<Vec<DocName>, StoreError>> {
        Box::pin(self.read(|c| Box::pin(read::unreported(c))))
    }

    fn compact<'a>(&'a self, name: &'a DocName, snapshot: Snapshot) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.compact_beside(name, snapshot))
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<DocMeta>, StoreError>> {
        Box::pin(self.read(|c| Box::pin(read::list(c))))
    }

    fn meta<'a>(&'a self, name: &'a DocName) -> BoxFuture<'a, Result<Option<DocMeta>, StoreError>> {
        let name = name.clone();
        Box::pin(self.read(move |c| Box::pin(async move { read::meta(c, &name).await })))
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
        Box::pin(self.read(move |c| Box::pin(async move { read::list_versions(c, &name).await })))
    }

    fn load_version<'a>(
        &'a self,
        name: &'a DocName,
        id: i64,
    ) -> BoxFuture<'a, Result<Option<VersionState>, StoreError>> {
        let name = name.clone();
        Box::pin(self.read(move |c| Box::pin(async move { read::load_version(c, &name, id).await })))
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
        Box::pin(self.read(|c| Box::pin(read::revoked_tokens(c, now_secs()))))
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.jobs.close().await;
            self.pool.close();
        })
    }

    fn healthy(&self) -> bool {
        self.health.is_up()
    }

    fn webhook_write(&self, op: WebhookWrite) -> BoxFuture<'_, Result<bool, StoreError>> {
        self.write(|reply| Job::Webhook { op, reply })
    }

    fn webhooks(&self) -> BoxFuture<'_, Result<Vec<StoredWebhook>, StoreError>> {
        Box::pin(self.read(|c| Box::pin(webhooks::webhooks(c))))
    }

    fn webhook_cursors(&self) -> BoxFuture<'_, Result<Vec<(String, i64)>, StoreError>> {
        Box::pin(self.read(|c| Box::pin(webhooks::cursors(c))))
    }

    fn webhook_failures<'a>(
        &'a self,
        webhook_id: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<WebhookFailure>, StoreError>> {
        let id = webhook_id.to_string();
        Box::pin(self.read(move |c| Box::pin(async move { webhooks::failures(c, &id, limit).await })))
    }
}

/// Where and how to connect, from the options and this process's `PG*`
/// variables.
fn target(options: &PostgresOptions) -> Result<connect::Target, StoreError> {
    let env = |name: &str| std::env::var(name).ok();
    connect::resolve(
        &options.url,
        options.password_file.as_deref(),
        options.statement_timeout,
        options.lock_timeout,
        &env,
    )
}

/// Whether the server can be reached, as the last attempt found, and when
/// to try again. An outage is logged once, when it begins, and once more
/// when it ends.
#[derive(Default)]
pub(super) struct Health {
    state: Mutex<Outage>,
}

#[derive(Default)]
struct Outage {
    since: Option<Instant>,
    next_attempt: Option<Instant>,
    backoff: Duration,
}

impl Health {
    pub(super) fn is_up(&self) -> bool {
        self.state.lock().unwrap().since.is_none()
    }

    /// When the writer should next try to reconnect; `None` while up.
    pub(super) fn next_attempt(&self) -> Option<Instant> {
        self.state.lock().unwrap().next_attempt
    }

    /// An attempt failed with `e`: the store is down (logged if it was up),
    /// and the next attempt waits twice as long as the last, up to a bound.
    pub(super) fn failed(&self, e: &StoreError) {
        let mut state = self.state.lock().unwrap();
        let now = Instant::now();
        if state.since.is_none() {
            state.since = Some(now);
            state.backoff = FIRST_BACKOFF;
            tracing::error!(error = %e, "PostgreSQL unreachable: edits are refused until it is back; reconnecting with backoff");
        } else {
            state.backoff = (state.backoff * 2).min(MAX_BACKOFF);
        }
        state.next_attempt = Some(now + state.backoff);
    }

    /// A connection works: the store is up (logged if it was down).
    pub(super) fn up(&self) {
        let mut state = self.state.lock().unwrap();
        if let Some(since) = state.since.take() {
            tracing::warn!(
                down_ms = since.elapsed().as_millis() as u64,
                "PostgreSQL reachable again"
            );
        }
        state.next_attempt = None;
    }
}

/// Whether an error means the connection or the server is gone (rather
/// than one statement failing): closed connections, I/O errors, and the
/// server's connection-exception and shutdown classes (08, 57P).
///
/// An error without a SQLSTATE is the client's own. Those of one statement
/// (a parameter it could not encode, a column it could not decode, another
/// number of rows than asked for) leave the connection as it was: counted
/// as an outage, they closed every sender of the batch with 4500 and
/// marked the store down for what one job did. The others (I/O, TLS, a
/// message out of place, a timeout) are the connection's.
pub(super) fn is_outage(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        Some(code) => {
            let code = code.code();
            code.starts_with("08") || code.starts_with("57P")
        }
        None => e.as_db_error().is_none() && !is_statement_error(e),
    }
}

/// tokio-postgres's errors of one statement, told by their messages (its
/// error kinds are private, their messages fixed in 0.7): `RowCount`,
/// `ColumnCount`, `ToSql`, `FromSql`, `Column`, `Parameters`.
fn is_statement_error(e: &tokio_postgres::Error) -> bool {
    const STATEMENT: [&str; 6] = [
        "query returned an unexpected number of rows",
        "query returned an unexpected number of columns",
        "error serializing parameter",
        "error deserializing column",
        "invalid column",
        "expected ",
    ];
    let message = e.to_string();
    STATEMENT.iter().any(|start| message.starts_with(start))
}

/// A tokio-postgres error as a store error, with the server's message (its
/// `Display` alone says only "db error").
pub(super) fn pg_error(e: tokio_postgres::Error) -> StoreError {
    let message = match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => match std::error::Error::source(&e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    };
    if is_outage(&e) {
        StoreError::Unavailable(message)
    } else {
        StoreError::Postgres(message)
    }
}

fn pool_error(e: PoolError) -> StoreError {
    match e {
        PoolError::Backend(e) => pg_error(e),
        PoolError::Timeout(_) => StoreError::Unavailable("no connection within the statement timeout".into()),
        other => StoreError::Unavailable(other.to_string()),
    }
}
