//! The HTTP edge: WebSocket upgrades, the JSON API, the web demo, health and
//! metrics. The only module that knows axum (and hyper under it).
//!
//! - `listener`: the accept loop: connection caps counted at accept, the
//!   header-read timeout, answers for connections over the caps.
//! - [`access`]: tokens, origins and hosts.
//! - [`limits`]: connection caps, counted at accept.
//! - [`origin`]: origins and host names, parsed and compared whole (pure).
//! - [`budget`]: the budget of unfinished messages, shared fairly between
//!   clients: WebSocket messages and request bodies; `metered`: the socket
//!   under tungstenite that charges it and times each message.
//! - `ws`: the upgrade, its checks and handshake, and the socket adapter for
//!   the session; `api`: the JSON API; `assets`: the web demo.
//! - `hocuspocus`: the Hocuspocus endpoint (`/hocuspocus`, many documents
//!   per socket, a token per document) and the stateless-message API.

pub mod access;
mod api;
mod assets;
pub mod budget;
mod error;
mod events;
mod hocuspocus;
pub mod limits;
pub mod listener;
mod metered;
pub mod origin;
pub mod rate;
mod ws;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{middleware, Router};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use error::ApiError;

use access::{Access, OriginPolicy};
use budget::Budget;
use limits::Limits;

use crate::config::MetricsAccess;
use crate::doc::Registry;
use crate::metrics::Metrics;

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    /// The events the outbox holds, as they come (`GET /api/events`, webhooks).
    pub feed: crate::events::Feed,
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
    /// `--metrics`: who may read `/metrics`.
    pub metrics_access: MetricsAccess,
    /// What one Hocuspocus socket may hold (`--hocuspocus-*`).
    pub hocuspocus: crate::session::hocuspocus::HocuspocusLimits,
    /// Webhook subscriptions and their delivery (`/api/webhooks`).
    pub webhooks: crate::events::webhook::Webhooks,
}

/// How long weft waits for a client to make progress; `None`: no limit.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// `--idle-timeout-ms`: a request body that stopped arriving.
    pub idle: Option<Duration>,
    /// `--message-deadline-ms`: a message or request body, once begun.
    pub message_deadline: Option<Duration>,
    /// `--message-stall-ms`: a WebSocket message with no payload arriving.
    pub message_stall: Option<Duration>,
}

pub fn router(state: AppState) -> Router {
    // Layers run outside in: the last one added first. A request is checked
    // (host, origin, media type) before it counts against its client's rate,
    // and rate-limited before its body is read.
    let mut api = api::router()
        .route("/events", get(events::feed))
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
        .route(hocuspocus::PATH, get(hocuspocus::upgrade))
        .nest("/api", api)
        // Every other path is a document name for a WebSocket upgrade.
        .fallback(ws::upgrade)
        .layer(middleware::from_fn(refuse_upgrade_to_reserved))
        .layer(middleware::from_fn_with_state(state.clone(), access::check_host))
        .layer(middleware::map_response(error::json_errors))
        .with_state(state)
}

/// A WebSocket upgrade to a reserved path is refused with the reason: a
/// client pointed at `/metrics` or `/api/...` by mistake would otherwise
/// get the route's answer (or a 404) and no word about documents.
async fn refuse_upgrade_to_reserved(request: Request, next: Next) -> Response {
    let upgrade = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("websocket"));
    let path = request.uri().path();
    if upgrade && path != hocuspocus::PATH && crate::name::is_reserved_path(path) {
        return ApiError::bad_request(format!(
            "'{path}' is reserved for weft itself, not a document: {RESERVED_HINT}"
        ))
        .into_response();
    }
    next.run(request).await
}

/// What README says about names, for refusals.
const RESERVED_HINT: &str =
    "a document name may not be empty nor start with api/, assets/, healthz, hocuspocus or metrics";

/// 503 while the store cannot commit (PostgreSQL unreachable): edits are
/// refused meanwhile, so a load balancer should send clients elsewhere.
/// In cluster mode Redis is asked too, and each is reported on its own line.
async fn healthz(State(state): State<AppState>) -> Response {
    let store = state.registry.store_healthy();
    let Some(broker) = state.registry.broker() else {
        if !store {
            return (StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n").into_response();
        }
        return healthz_response();
    };
    let ping = tokio::time::timeout(std::time::Duration::from_secs(1), broker.healthy()).await;
    let redis = matches!(ping, Ok(Ok(())));
    let word = |ok: bool| if ok { "ok" } else { "unavailable" };
    let body = format!("postgres: {}\nredis: {}\n", word(store), word(redis));
    let status = if store && redis {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body).into_response()
}

/// Also answered on connections over the caps (`listener`).
fn healthz_response() -> Response {
    "ok\n".into_response()
}

/// `GET /metrics`, as `--metrics` allows. `/healthz` stays open whatever
/// the mode: load balancers probe it, and it tells nothing.
async fn metrics(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    match state.metrics_access {
        MetricsAccess::Off => return Err(ApiError::not_found("metrics are off on this server (--metrics off)")),
        MetricsAccess::Admin => {
            let credential = access::credential(request.headers(), request.uri().query());
            state.access.authenticate(credential.as_deref())?.admin()?;
        }
        MetricsAccess::Open => {}
    }
    let mut text = state.metrics.render();
    text.push_str(&state.budget.render());
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        text,
    )
        .into_response())
}
