//! Wiring: builds the store, the registry and the router from a [`Config`],
//! serves until `shutdown` resolves, then stops in order.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::info;

use crate::config::{Config, StorageKind};
use crate::doc::Registry;
use crate::http::access::{Access, Limits};
use crate::http::{self, AppState};
use crate::metrics::Metrics;
use crate::storage::{DocStore, MemoryStore, SqliteStore, StoreError};

/// How long shutdown waits for connections to deliver their close frames.
const DRAIN: Duration = Duration::from_secs(3);

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

/// Opens the configured store.
pub fn open_store(config: &Config, metrics: Arc<Metrics>) -> Result<Arc<dyn DocStore>, ServerError> {
    Ok(match config.storage {
        StorageKind::Sqlite => Arc::new(
            SqliteStore::open(
                &config.db,
                config.sync,
                Duration::from_millis(config.db_busy_timeout_ms),
                metrics,
            )
            .map_err(|source| ServerError::Store {
                path: config.db.display().to_string(),
                source,
            })?,
        ),
        StorageKind::None => Arc::new(MemoryStore::default()),
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

/// Serves on `listener` until `shutdown` resolves. Then: stop accepting,
/// close every socket with 1001, let every document save, close the store.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let key = config.auth_key()?;
    check_exposure(&config, listener.local_addr()?, key.is_some())?;
    let metrics = Arc::new(Metrics::default());
    let store = open_store(&config, metrics.clone())?;
    let access = Access::new(key, store.clone())
        .await
        .map_err(|source| ServerError::Store {
            path: config.db.display().to_string(),
            source,
        })?;
    let registry = Registry::new(store.clone(), config.doc_config(), metrics.clone());
    let (stop_tx, stop_rx) = watch::channel(false);
    let state = AppState {
        registry: registry.clone(),
        metrics: metrics.clone(),
        shutdown: stop_rx,
        max_message_size: config.max_message_size,
        next_peer: Arc::new(AtomicU64::new(1)),
        access: Arc::new(access),
        limits: Arc::new(Limits::new(
            config.max_connections,
            config.max_connections_per_ip,
            config.trust_forwarded_for,
        )),
        allowed_origins: config.allowed_origins.clone().into(),
        rate_limit: config.rate_limit(),
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
    // y-sync frames are small and latency-bound: with Nagle's algorithm a
    // second small write waits for the client's delayed ACK (40 ms on Linux).
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    });
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(signal)
        .await?;

    // Sessions are closing with 1001; what their clients sent before the
    // close reached them is still applied. Then every document saves.
    let deadline = Instant::now() + DRAIN;
    while metrics.connections_open.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let docs = registry.loaded_count();
    registry.shutdown().await;
    store.close().await;
    info!(documents = docs, "stopped");
    Ok(())
}
