//! WebSocket upgrades at `/<document-name>`, as the y-websocket provider
//! makes them (`serverUrl + '/' + room`).
//!
//! Everything that can be refused is refused here, before the upgrade, with
//! an HTTP status and a JSON reason: the y-websocket client cannot read close
//! reasons and reconnects quickly after an accepted-then-closed socket.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::broadcast;

use super::access::{self, Access, Caller};
use super::{ApiError, AppState};
use crate::auth::Claims;
use crate::doc::{DocError, DocName, PeerId};
use crate::session::{self, Grant, Incoming, Lease, Outgoing, SessionContext, TransportError};

/// tungstenite's read buffer, allocated per connection, and how much it
/// reads at once: it zero-fills that much before every read, which at 4 KiB
/// was 8% of the server's instructions with many quiet documents (callgrind).
/// Its default of 128 KiB would dominate the memory of idle connections.
/// y-sync frames are mostly far smaller; larger ones grow it on demand.
const READ_BUFFER: usize = 1 << 10;
/// Queued output is written to the socket once it passes this size (and on
/// every flush, which the session does after each batch).
const WRITE_BUFFER: usize = 16 << 10;

pub async fn upgrade(
    State(state): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    match admit(&state, remote, &uri, &headers, ws).await {
        Ok(response) => response,
        Err(e) => {
            if e.status != StatusCode::UPGRADE_REQUIRED {
                state.metrics.requests_refused.fetch_add(1, Ordering::Relaxed);
                tracing::info!(path = %uri.path(), status = %e.status, reason = %e.message, "upgrade refused");
            }
            e.into_response()
        }
    }
}

/// Every check an upgrade must pass, in order: the name, the request being
/// an upgrade, the origin, the credential, the connection limits, and the
/// document loading.
async fn admit(
    state: &AppState,
    remote: SocketAddr,
    uri: &Uri,
    headers: &HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let name = DocName::from_url_path(uri.path())?;
    let ws = ws.map_err(|_| {
        ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            format!("'/{name}' is a document: connect with a WebSocket (y-websocket) client, or use /api/docs"),
        )
    })?;
    access::check_origin(headers, &state.allowed_origins)?;
    let caller = state
        .access
        .authenticate(access::credential(headers, uri.query()).as_deref())?;
    caller.read(&name)?;
    let admission = state.limits.admit(state.limits.client_ip(remote, headers))?;
    // Load the document before accepting, so that a document that cannot be
    // loaded is refused with a status instead of a socket that closes at once.
    state
        .registry
        .with_doc(&name, |handle| async move { handle.ready().await })
        .await?;
    // An upgrade still under way when shutdown began is refused, not
    // accepted and closed at once with 1001.
    if *state.shutdown.borrow() {
        return Err(DocError::ShuttingDown.into());
    }

    let grant = Grant {
        writable: caller.may_write(),
        lease: match &caller {
            Caller::Token(claims) => Some(lease(&state.access, claims)),
            Caller::Admin => None,
        },
    };
    let peer = PeerId(state.next_peer.fetch_add(1, Ordering::Relaxed));
    let ctx = SessionContext {
        registry: state.registry.clone(),
        metrics: state.metrics.clone(),
        shutdown: state.shutdown.clone(),
        rate_limit: state.rate_limit,
    };
    Ok(ws
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(state.max_message_size)
        .max_frame_size(state.max_message_size)
        .on_upgrade(move |socket| async move {
            // The connection holds its place in the limits until it ends.
            let _admission = admission;
            serve(socket, name, peer, grant, ctx).await
        }))
}

/// A token's connection ends when the token expires or is revoked.
fn lease(access: &Arc<Access>, claims: &Claims) -> Lease {
    let remaining = claims.exp.saturating_sub(access::now_secs());
    let mut revocations = access.watch_revocations();
    let access = access.clone();
    let id = claims.jti.clone();
    Lease {
        expires: tokio::time::Instant::now() + Duration::from_secs(remaining),
        revoked: Box::pin(async move {
            loop {
                // Checked after subscribing, so a revocation between the
                // upgrade and now is not missed.
                if access.is_revoked(&id) {
                    return;
                }
                match revocations.recv().await {
                    Ok(revoked) if revoked == id => return,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
                }
            }
        }),
    }
}

async fn serve(socket: WebSocket, name: DocName, peer: PeerId, grant: Grant, ctx: SessionContext) {
    let (sink, stream) = socket.split();
    let stream = stream.map(|item| match item {
        Ok(Message::Binary(bytes)) => Ok(Incoming::Binary(bytes)),
        Ok(Message::Text(_)) => Ok(Incoming::Text),
        Ok(Message::Ping(_) | Message::Pong(_)) => Ok(Incoming::Alive),
        Ok(Message::Close(_)) => Ok(Incoming::Close),
        Err(e) => Err(classify(e)),
    });
    let sink = sink.with(|out: Outgoing| {
        futures_util::future::ready(Ok::<_, axum::Error>(match out {
            Outgoing::Binary(bytes) => Message::Binary(bytes),
            Outgoing::Ping => Message::Ping(Default::default()),
            Outgoing::Close(reason) => Message::Close(Some(CloseFrame {
                code: reason.code,
                reason: reason.reason.into(),
            })),
        }))
    });
    session::run(stream, sink, name, peer, grant, ctx).await;
}

/// Tells a frame over the size limit apart from other transport failures.
fn classify(e: axum::Error) -> TransportError {
    let inner = e.into_inner();
    match inner.downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(detail)) => TransportError::TooBig(detail.to_string()),
        _ => TransportError::Other(inner.to_string()),
    }
}
