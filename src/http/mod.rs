//! The HTTP edge: WebSocket upgrades, the JSON API, the web demo, health and
//! metrics. The only module that knows axum.

mod api;
mod assets;
mod error;
mod ws;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::sync::watch;

pub use error::ApiError;

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
}

pub fn router(state: AppState) -> Router {
    Router::new()
        // The web demo, embedded in the binary.
        .route("/", get(assets::index))
        .route("/assets/{*path}", get(assets::asset))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .nest("/api", api::router())
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
