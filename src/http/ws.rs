//! WebSocket upgrades at `/<document-name>`, as the y-websocket provider
//! makes them (`serverUrl + '/' + room`).
//!
//! Everything that can be refused is refused here, before the upgrade, with
//! an HTTP status and a JSON reason: the y-websocket client cannot read close
//! reasons and reconnects quickly after an accepted-then-closed socket.

use std::sync::atomic::Ordering;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};

use super::{ApiError, AppState};
use crate::doc::{DocName, PeerId};
use crate::session::{self, Incoming, Outgoing, SessionContext, TransportError};

/// tungstenite's read buffer, allocated (and zero-filled) per connection.
/// Its default of 128 KiB would dominate the memory of idle connections;
/// larger frames grow it on demand.
const READ_BUFFER: usize = 4 << 10;
/// Queued output is written to the socket once it passes this size (and on
/// every flush, which the session does after each batch).
const WRITE_BUFFER: usize = 16 << 10;

pub async fn upgrade(
    State(state): State<AppState>,
    uri: Uri,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let name = match DocName::from_url_path(uri.path()) {
        Ok(name) => name,
        Err(e) => return ApiError::bad_request(e.to_string()).into_response(),
    };
    let ws = match ws {
        Ok(ws) => ws,
        Err(_) => {
            return ApiError::new(
                StatusCode::UPGRADE_REQUIRED,
                format!("'/{name}' is a document: connect with a WebSocket (y-websocket) client, or use /api/docs"),
            )
            .into_response()
        }
    };
    // Load the document before accepting, so that a document that cannot be
    // loaded is refused with a status instead of a socket that closes at once.
    let loaded = state.registry.with_doc(&name, |handle| async move { handle.ready().await }).await;
    if let Err(e) = loaded {
        return ApiError::from(e).into_response();
    }
    let peer = PeerId(state.next_peer.fetch_add(1, Ordering::Relaxed));
    let ctx = SessionContext {
        registry: state.registry.clone(),
        metrics: state.metrics.clone(),
        shutdown: state.shutdown.clone(),
    };
    ws.read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(state.max_message_size)
        .max_frame_size(state.max_message_size)
        .on_upgrade(move |socket| serve(socket, name, peer, ctx))
}

async fn serve(socket: WebSocket, name: DocName, peer: PeerId, ctx: SessionContext) {
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
    session::run(stream, sink, name, peer, true, ctx).await;
}

/// Tells a frame over the size limit apart from other transport failures.
fn classify(e: axum::Error) -> TransportError {
    let inner = e.into_inner();
    match inner.downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(detail)) => TransportError::TooBig(detail.to_string()),
        _ => TransportError::Other(inner.to_string()),
    }
}
