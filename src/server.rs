//! Wiring: builds the store, the registry and the router from a [`Config`],
//! serves until `shutdown` resolves, then stops in order.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::broker::{Broker, Control};
use crate::config::{Config, DbLocation, StorageKind};
use crate::doc::{DocConfig, EventPolicy, Registry, VersionPolicy, VersionQuota};
use crate::events::{self, Feed, FeedConfig};
use crate::http::access::{Access, OriginPolicy};
use crate::http::budget::Budget;
use crate::http::limits::{Limits, REFUSAL_RESERVE};
use crate::http::listener::{self, ConnLimits};
use crate::http::{self, AppState, Timeouts};
use crate::metrics::Metrics;
use crate::storage::{DocStore, MemoryStore, PostgresOptions, PostgresStore, SqliteStore, StoreError};

mod webhooks;

/// How long shutdown waits for sessions to deliver their close frames and
/// apply what their clients sent before the close.
const DRAIN: Duration = Duration::from_secs(3);
/// Descriptors kept free of connections: the database and its WAL, the
/// reader pool, the listener, the runtime's own.
const SPARE_FDS: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0}")]
    Auth(#[from] crate::auth::AuthError),
    #[error("{0}")]
    Config(String),
    #[error("could not open the database {path}: {source}")]
    Store { path: String, source: StoreError },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Opens the configured store: `--storage none` keeps documents in memory;
/// otherwise `--db` is a SQLite file or a PostgreSQL URL.
async fn open_store(config: &Config, metrics: Arc<Metrics>) -> Result<Arc<dyn DocStore>, ServerError> {
    let failed = |source| ServerError::Store {
        path: config.db.to_string(),
        source,
    };
    Ok(match (&config.storage, &config.db) {
        (StorageKind::None, _) => Arc::new(MemoryStore::default()),
        (StorageKind::Sqlite, DbLocation::Sqlite(path)) => Arc::new(
            SqliteStore::open(
                path,
                config.sync,
                Duration::from_millis(config.db_busy_timeout_ms),
                metrics,
            )
            .map_err(failed)?,
        ),
        (StorageKind::Sqlite, DbLocation::Postgres(url)) => {
            let options = PostgresOptions {
                url: url.secret().to_string(),
                password_file: config.db_password_file.clone(),
                statement_timeout: Duration::from_millis(config.db_statement_timeout_ms),
                lock_timeout: Duration::from_millis(config.db_busy_timeout_ms),
            };
            Arc::new(PostgresStore::open(options, metrics).await.map_err(failed)?)
        }
    })
}

/// Open mode lets anyone who reaches weft read and rewrite every document:
/// fine on loopback, refused elsewhere unless asked for.
pub fn check_exposure(config: &Config, addr: SocketAddr, token_mode: bool) -> Result<(), ServerError> {
    if !token_mode && !addr.ip().is_loopback() && !config.allow_open {
        return Err(ServerError::Config(format!(
            "refusing to serve {addr} in open mode: anyone who reaches it could read and rewrite every \
             document. Set a key (--auth-key-file or WEFT_AUTH_KEY) for token mode, or pass --allow-open."
        )));
    }
    Ok(())
}

/// `--max-connections`, lowered so that connections, the answers to those
/// over the caps and the server's own files fit under the open-file limit:
/// weft must never fail to accept because it ran out of descriptors (it
/// could not even answer `/healthz` then).
/// `wanted` 0: as many as fit.
fn connection_cap(wanted: usize, open_file_limit: Option<u64>) -> usize {
    let fits = open_file_limit
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
        .map(|n| n.saturating_sub(SPARE_FDS + REFUSAL_RESERVE).max(1));
    match (wanted, fits) {
        (0, Some(fits)) => fits,
        (wanted, Some(fits)) if wanted > fits => {
            warn!(
                wanted,
                lowered_to = fits,
                "--max-connections lowered to stay under the open-file limit ({}); raise it with `ulimit -n`",
                open_file_limit.unwrap_or_default()
            );
            fits
        }
        (wanted, _) => wanted,
    }
}

/// The soft limit on open files, which weft raised to the hard limit at
/// start-up (main.rs).
fn open_file_limit() -> Option<u64> {
    open_file_limits().0
}

/// The soft and hard limits on open files (`None`: unlimited or unknown).
fn open_file_limits() -> (Option<u64>, Option<u64>) {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit only writes the struct it is given.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
            // rlim_t is u64 here, not on every platform.
            #[allow(clippy::unnecessary_cast)]
            let finite = |n: libc::rlim_t| (n != libc::RLIM_INFINITY).then_some(n as u64);
            return (finite(limit.rlim_cur), finite(limit.rlim_max));
        }
    }
    (None, None)
}

/// The start-up line that says how many connections weft can hold and what
/// bounds it: an operator sizing a machine for 100,000 connections learns
/// here, not at the 20,001st, that the hard limit (which only root raises)
/// is 20,000.
fn capacity_line(cap: usize, wanted: usize, (soft, hard): (Option<u64>, Option<u64>)) -> String {
    let show = |n: Option<u64>| n.map_or_else(|| "unlimited".to_string(), |n| n.to_string());
    let bound = if wanted != 0 && cap == wanted {
        "--max-connections".to_string()
    } else {
        format!(
            "the open-file limit (raise the hard limit to hold more; {} kept for weft's own files and refusals)",
            SPARE_FDS + REFUSAL_RESERVE
        )
    };
    format!(
        "open files: limit {} (hard {}); weft holds up to {cap} connections, bounded by {bound}",
        show(soft),
        show(hard)
    )
}

/// Settings that cannot work together, refused with a reason.
fn check_limits(config: &Config) -> Result<(), ServerError> {
    if config.partial_message_budget != 0 && config.partial_message_budget < config.max_message_size as u64 {
        return Err(ServerError::Config(format!(
            "--partial-message-budget ({}) is below --max-message-size ({}): a message of the largest \
             allowed size could never arrive",
            config.partial_message_budget, config.max_message_size
        )));
    }
    // A warning, not a refusal: the burst (two messages of the largest
    // size) lets any client that is not already in debt send one at once,
    // and a short --message-deadline-ms alone must not stop weft starting.
    if config.byte_rate_limit != 0
        && config.message_deadline_ms != 0
        && u128::from(config.byte_rate_limit) * u128::from(config.message_deadline_ms)
            < config.max_message_size as u128 * 1000
    {
        warn!(
            "--byte-rate-limit ({} bytes/s) is low for --max-message-size ({}) and --message-deadline-ms ({}): \
             a client that has spent its burst could not send a message of the largest size in time",
            config.byte_rate_limit, config.max_message_size, config.message_deadline_ms
        );
    }
    if config.hocuspocus_max_docs == 0 || config.hocuspocus_pending_bytes == 0 {
        return Err(ServerError::Config(
            "--hocuspocus-max-docs and --hocuspocus-pending-bytes must be at least 1: a Hocuspocus \
             connection holds at least one document, and sends a frame or two before its token"
                .into(),
        ));
    }
    if config.webhook_max_wait_ms == 0 || config.webhook_max_wait_ms < config.webhook_debounce_ms {
        return Err(ServerError::Config(format!(
            "--webhook-max-wait-ms ({}) must be at least 1 and at least --webhook-debounce-ms ({}): \
             it is how long edits that never pause wait for their document.updated",
            config.webhook_max_wait_ms, config.webhook_debounce_ms
        )));
    }
    if config.db_statement_timeout_ms == 0 {
        return Err(ServerError::Config(
            "--db-statement-timeout-ms must be at least 1: every query needs a bound".into(),
        ));
    }
    if let Some(redis) = &config.redis {
        if config.storage == StorageKind::None || !config.db.is_postgres() {
            return Err(ServerError::Config(format!(
                "--redis {redis} needs a PostgreSQL --db (postgres://...): the nodes of a cluster share \
                 their documents, and a SQLite file (or --storage none) cannot be shared between machines"
            )));
        }
    }
    if config.db_password_file.is_some() && !config.db.is_postgres() {
        // Harmless (a SQLite file has no password), but likely a mistake.
        warn!(db = %config.db, "--db-password-file is ignored: --db is a SQLite file, not a postgres:// URL");
    }
    Ok(())
}

/// The document layer's tunables, from the configuration.
fn doc_config(config: &Config) -> DocConfig {
    DocConfig {
        peer_queue: config.peer_queue.max(1),
        peer_queue_bytes: config.peer_queue_bytes,
        max_awareness_clients: config.max_awareness_clients,
        max_awareness_state: config.max_awareness_state,
        unload_after: Duration::from_millis(config.unload_after_ms),
        dormant_after: Duration::from_millis(config.dormant_after_ms),
        awareness_timeout: Duration::from_millis(config.awareness_timeout_ms),
        compact_after_updates: config.compact_updates.max(1),
        compact_after_bytes: config.compact_bytes.max(1),
        trim_grace: Duration::from_millis(config.trim_grace_ms),
        max_doc_size: config.max_doc_size,
        max_doc_types: config.max_doc_types.max(1),
        max_loading: config.max_loading_docs,
        events: EventPolicy {
            debounce: Duration::from_millis(config.webhook_debounce_ms),
            max_wait: Duration::from_millis(config.webhook_max_wait_ms),
            peers: config.events_peers,
        },
        versions: VersionPolicy {
            after_idle: Duration::from_secs(config.version_idle_secs),
            every: Duration::from_secs(config.version_every_secs),
            hourly_after: Duration::from_secs(config.version_hourly_after_hours * 3600),
            daily_after: Duration::from_secs(config.version_daily_after_days * 86_400),
            quota: VersionQuota {
                max_versions: config.max_versions,
                max_storage: config.max_doc_storage,
            },
        },
    }
}

/// Cluster mode: what other nodes tell every node (`broker::Control`).
async fn control_events(mut events: tokio::sync::mpsc::Receiver<Control>, registry: Registry, access: Arc<Access>) {
    while let Some(event) = events.recv().await {
        match event {
            Control::Revoked { token_id } => access.revoked_elsewhere(&token_id),
            Control::Deleted { doc } => registry.evict(&doc).await,
        }
    }
}

fn millis(ms: u64) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms))
}

/// Serves on `listener` until `shutdown` resolves. Then: stop accepting,
/// close every socket with 1001, let every document save, close the store.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let key = config.auth_key()?;
    check_exposure(&config, listener.local_addr()?, key.is_some())?;
    check_limits(&config)?;
    let webhook_settings = webhooks::settings(&config)?;
    let origins = OriginPolicy::new(&config.allowed_origins, &config.allowed_hosts, key.is_none())
        .map_err(|e| ServerError::Config(format!("--allowed-origin / --allowed-host: {e}")))?;
    let cap = connection_cap(config.max_connections, open_file_limit());
    info!("{}", capacity_line(cap, config.max_connections, open_file_limits()));
    let limits = Arc::new(Limits::new(
        cap,
        config.max_connections_per_ip,
        config.trust_forwarded_for,
    ));
    let metrics = Arc::new(Metrics::default());
    let store = open_store(&config, metrics.clone()).await?;
    let access = Access::new(key, store.clone())
        .await
        .map_err(|source| ServerError::Store {
            path: config.db.to_string(),
            source,
        })?;
    let feed = Feed::start(
        store.clone(),
        FeedConfig {
            retention: Duration::from_secs(config.events_retention),
            poll: config.redis.is_some().then_some(events::CLUSTER_POLL),
        },
    )
    .await
    .map_err(|source| ServerError::Store {
        path: config.db.to_string(),
        source,
    })?;
    let mut registry =
        Registry::new(store.clone(), doc_config(&config), metrics.clone()).with_peer_counts(feed.peer_counts().clone());
    if let Some(url) = &config.redis {
        let broker = Broker::connect(url.secret(), metrics.clone())
            .await
            .map_err(|e| ServerError::Config(format!("--redis {url}: {e}")))?;
        info!(redis = %url, "cluster mode: documents' updates go through Redis Streams");
        registry = registry.with_broker(Arc::new(broker));
    }
    let access = Arc::new(access);
    if let Some(broker) = registry.broker() {
        tokio::spawn(control_events(
            broker.control_events(),
            registry.clone(),
            access.clone(),
        ));
    }
    {
        let registry = registry.clone();
        feed.set_content_source(Arc::new(move |name| {
            let registry = registry.clone();
            Box::pin(async move {
                registry
                    .with_doc(&name, |handle| async move { handle.content().await })
                    .await
                    .map_err(|e| e.to_string())
            })
        }));
    }
    {
        let registry = registry.clone();
        tokio::spawn(async move { registry.report_unreported().await });
    }
    let webhooks = webhooks::start(
        webhook_settings,
        store.clone(),
        feed.clone(),
        &registry,
        metrics.clone(),
    )
    .await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let sessions = TaskTracker::new();
    let state = AppState {
        feed,
        registry: registry.clone(),
        metrics: metrics.clone(),
        shutdown: stop_rx,
        sessions: sessions.clone(),
        max_message_size: config.max_message_size,
        next_peer: Arc::new(AtomicU64::new(1)),
        access,
        limits: limits.clone(),
        origins: Arc::new(origins),
        rates: Arc::new(http::rate::Rates::new(&config)),
        budget: Budget::new(config.partial_message_budget),
        metrics_access: config.metrics,
        hocuspocus: crate::session::hocuspocus::HocuspocusLimits {
            max_docs: config.hocuspocus_max_docs,
            max_pending_bytes: config.hocuspocus_pending_bytes,
        },
        timeouts: Timeouts {
            idle: millis(config.idle_timeout_ms),
            message_deadline: millis(config.message_deadline_ms),
            message_stall: millis(config.message_stall_ms),
        },
        webhooks: webhooks.clone(),
    };
    let app = http::router(state);
    // Announced only once the store is open: a client (or a test) that
    // reads this line can connect and find its documents.
    if let Ok(addr) = listener.local_addr() {
        info!("listening on ws://{addr} (web demo at http://{addr}/)");
    }
    let signal = async move {
        shutdown.await;
        info!("shutting down: closing connections and saving documents");
        let _ = stop_tx.send(true);
    };
    let conn_limits = ConnLimits {
        header_read: millis(config.header_read_timeout_ms),
        write_stall: millis(config.idle_timeout_ms),
    };
    listener::serve(listener, app, limits, conn_limits, metrics.clone(), signal).await;
    // An attempt in flight is abandoned: its event is sent again after the
    // restart (the cursor is stored only once an event is dealt with).
    webhooks.shutdown().await;

    // Every upgrade has been answered, so no session starts from now on.
    // Those open are closing with 1001; what their clients sent before the
    // close reached them is still applied. Wait for them all to end (for at
    // most DRAIN), then every document saves.
    sessions.close();
    if tokio::time::timeout(DRAIN, sessions.wait()).await.is_err() {
        warn!(
            sessions = sessions.len(),
            "sessions still open after the drain period; saving anyway"
        );
    }
    let docs = registry.loaded_count();
    registry.shutdown().await;
    store.close().await;
    info!(documents = docs, "stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 20,020 idle connections once used up 20,000 descriptors: the cap now
    /// leaves room for the refusals and the server's own files.
    #[test]
    fn the_connection_cap_fits_under_the_open_file_limit() {
        let room = SPARE_FDS + REFUSAL_RESERVE;
        assert_eq!(connection_cap(20_000, Some(20_000)), 20_000 - room);
        assert_eq!(connection_cap(1000, Some(20_000)), 1000);
        assert_eq!(connection_cap(0, Some(4096)), 4096 - room);
        assert_eq!(connection_cap(500, None), 500);
        assert_eq!(connection_cap(500, Some(10)), 1, "always at least one");
    }

    #[test]
    fn the_capacity_line_names_what_bounds_it() {
        let line = capacity_line(19_808, 100_000, (Some(20_000), Some(20_000)));
        assert!(line.contains("limit 20000 (hard 20000)"), "{line}");
        assert!(line.contains("up to 19808 connections"), "{line}");
        assert!(line.contains("bounded by the open-file limit"), "{line}");
        let line = capacity_line(1000, 1000, (Some(20_000), None));
        assert!(line.contains("hard unlimited"), "{line}");
        assert!(line.contains("bounded by --max-connections"), "{line}");
    }
}
