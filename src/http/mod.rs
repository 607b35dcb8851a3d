//! The HTTP edge: WebSocket upgrades, the JSON API, the web demo, health and
//! metrics. The only module that knows axum (and hyper under it).
//!
//! - `listener`: the accept loop: connection caps counted at accept, the
//!   header-read timeout, answers for connections over the caps.
//! - [`access`]: tokens, origins and hosts, connection limits.
//! - [`origin`]: origins and host names, parsed and compared whole (pure).
//! - [`budget`]: the budget and deadline of unfinished messages: WebSocket
//!   messages (a metered socket under tungstenite) and request bodies.
//! - `ws`: the upgrade, its checks and handshake, and the socket adapter for
//!   the session; `api`: the JSON API; `assets`: the web demo.

pub mod access;
mod api;
mod assets;
pub mod budget;
mod error;
pub mod listener;
pub mod origin;
pub mod rate;
mod ws;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{middleware, Router};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use error::ApiError;

use access::{Access, Limits, OriginPolicy};
use budget::Budget;

use crate::doc::Registry;
use crate::metrics::Metrics;

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub registry: Registry,
    pub metrics: Arc<Metrics>,
    pub shutdown: watch::Receiver<bool>,
    /// Every WebSocket session's task, so that shutdown can wait for them.
    pub sessions: TaskTracker,
    pub max_message_size: usize,
    pub next_peer: Arc<AtomicU64>,
    pub access: Arc<Access>,
    pub limits: Arc<Limits>,
    /// `--allowed-origin`, `--allowed-host` and what they allow.
    pub origins: Arc<OriginPolicy>,
    /// Rate limits per client: WebSocket messages, API requests, new documents.
    pub rates: Arc<rate::Rates>,
    /// Bytes of unfinished WebSocket messages and request bodies.
    pub budget: Arc<Budget>,
    pub timeouts: Timeouts,
}

/// How long weft waits for a client to make progress; `None`: no limit.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// `--idle-timeout-ms`: a request body that stopped arriving.
    pub idle: Option<Duration>,
    /// `--message-deadline-ms`: a message or request body, once begun.
    pub message_deadline: Option<Duration>,
}

pub fn router(state: AppState) -> Router {
    // Layers run outside in: the last one added first. A request is checked
    // (host, origin, media type) before it counts against its client's rate,
    // and rate-limited before its body is read.
    let mut api = api::router()
        .layer(middleware::from_fn_with_state(state.clone(), budget::collect_body))
        .layer(middleware::from_fn_with_state(state.clone(), rate::limit_requests))
        .layer(middleware::from_fn_with_state(state.clone(), access::check_api_request))
        // Bodies are limited (and read) by `collect_body`; axum's own limit
        // of 2 MB would otherwise sit below --max-message-size.
        .layer(DefaultBodyLimit::max(state.max_message_size));
    if state.origins.has_allowed_origins() {
        // Cross-origin pages may call the API only from the allowed origins;
        // without the flag no CORS headers are sent (same origin only).
        let origins = state.origins.clone();
        api = api.layer(
            CorsLayer::new()
                .allow_origin(AllowOrigin::predicate(move |origin, _| origins.cors_allows(origin)))
                .allow_methods([Method::GET, Method::POST, Method::DELETE])
                .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE]),
        );
    }
    Router::new()
        // The web demo, embedded in the binary.
        .route("/", get(assets::index))
        .route("/assets/{*path}", get(assets::asset))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .nest("/api", api)
        // Every other path is a document name for a WebSocket upgrade.
        .fallback(ws::upgrade)
        .layer(middleware::from_fn_with_state(state.clone(), access::check_host))
        .layer(middleware::map_response(error::json_errors))
        .with_state(state)
}

/// 503 while the store cannot commit (PostgreSQL unreachable): edits are
/// refused meanwhile, so a load balancer should send clients elsewhere.
async fn healthz(State(state): State<AppState>) -> Response {
    if !state.registry.store_healthy() {
        return (StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n").into_response();
    }
    healthz_response()
}

/// Also answered on connections over the caps (`listener`).
fn healthz_response() -> Response {
    "ok\n".into_response()
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics.render(),
    )
}
