//! The HTTP edge: WebSocket upgrades, the JSON API, the web demo, health and
//! metrics. The only module that knows axum.

pub mod access;
mod api;
mod assets;
mod error;
pub mod rate;
mod ws;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue, Method};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::sync::watch;
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use error::ApiError;

use access::{Access, Limits};

use crate::doc::Registry;
use crate::metrics::Metrics;

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub registry: Registry,
    pub metrics: Arc<Metrics>,
    pub shutdown: watch::Receiver<bool>,
    pub max_message_size: usize,
    pub next_peer: Arc<AtomicU64>,
    pub access: Arc<Access>,
    pub limits: Arc<Limits>,
    pub allowed_origins: Arc<[String]>,
    /// Rate limits per client: WebSocket messages, API requests, new documents.
    pub rates: Arc<rate::Rates>,
}

pub fn router(state: AppState) -> Router {
    let mut api = api::router().layer(axum::middleware::from_fn_with_state(
        state.clone(),
        rate::limit_requests,
    ));
    if !state.allowed_origins.is_empty() {
        // Cross-origin pages may call the API only from the allowed origins;
        // without the flag no CORS headers are sent (same origin only).
        let origins: Vec<HeaderValue> = state.allowed_origins.iter().filter_map(|o| o.parse().ok()).collect();
        api = api.layer(
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(origins))
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
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics.render(),
    )
}
