//! The Hocuspocus endpoint, `/hocuspocus`: the WebSocket that
//! `@hocuspocus/provider` (and Tiptap's providers built on it) connects to,
//! serving the same documents as the y-websocket endpoint; and
//! `POST /api/docs/{name}/stateless`, which sends a stateless message to a
//! document's Hocuspocus peers.
//!
//! The upgrade itself is checked as a y-websocket upgrade is (origin,
//! connection caps, the client's message bucket), but it names no document
//! and carries no token: the provider sends a token per document inside
//! the socket, so access is checked per document, by [`authorize`], with
//! the same rules as `?token=`, and a refusal is a PermissionDenied for
//! that document, not an HTTP status.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::{FutureExt, SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::WebSocketStream;
use tungstenite::protocol::Role;

use super::access::Caller;
use super::metered::{MessageTimes, Metered};
use super::ws::{self, Handshake};
use super::{rate, ApiError, AppState};
use crate::doc::{DocError, DocName};
use crate::rate::ClientKey;
use crate::session::hocuspocus::{self as session, Authorize, DocAccess, HocuspocusContext};
use crate::session::SessionContext;

/// The path of the endpoint: reserved, so no document is named after it.
pub const PATH: &str = "/hocuspocus";

/// `GET /hocuspocus` with an upgrade.
pub async fn upgrade(
    State(state): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let (mut parts, _body) = request.into_parts();
    let Some(handshake) = Handshake::take(&mut parts) else {
        return ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "/hocuspocus is the Hocuspocus endpoint: connect with @hocuspocus/provider (url ws://host:port/hocuspocus)",
        )
        .into_response();
    };
    match admit(&state, remote, &parts, handshake) {
        Ok(response) => response,
        Err(e) => {
            state.metrics.requests_refused.fetch_add(1, Ordering::Relaxed);
            tracing::info!(path = PATH, status = %e.status, reason = %e.message, "upgrade refused");
            e.into_response()
        }
    }
}

fn admit(
    state: &AppState,
    remote: SocketAddr,
    parts: &axum::http::request::Parts,
    handshake: Handshake,
) -> Result<Response, ApiError> {
    let headers = &parts.headers;
    state.origins.check_origin(headers, false)?;
    let ip = state.limits.client_ip(remote, headers);
    let admission = state.limits.admit_forwarded(ip)?;
    // One bucket for the socket, whatever documents it attaches: the
    // tokens come later, per document.
    let rate = rate::message_bucket(state, ip, &Caller::Admin)?;
    let encodes = rate::encode_budget(state, ip, None);
    let bytes = rate::byte_bucket(state, ip, None);
    if *state.shutdown.borrow() {
        return Err(DocError::ShuttingDown.into());
    }
    let socket = state.next_peer.fetch_add(1, Ordering::Relaxed);
    let hctx = HocuspocusContext {
        ctx: SessionContext {
            registry: state.registry.clone(),
            metrics: state.metrics.clone(),
            shutdown: state.shutdown.clone(),
        },
        authorize: authorizer(state.clone(), ip),
        limits: state.hocuspocus,
        next_peer: state.next_peer.clone(),
        rate,
        encodes,
    };
    let config = ws::socket_config(state.max_message_size);
    let budget = state.budget.clone();
    let times = MessageTimes {
        deadline: state.timeouts.message_deadline,
        stall: state.timeouts.message_stall,
    };
    let client = ClientKey { ip, token: None };
    let response = handshake.accept();
    state.sessions.spawn(async move {
        let _admission = admission;
        let upgraded = match handshake.on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade failed");
                return;
            }
        };
        let io = Metered::new(hyper_util::rt::TokioIo::new(upgraded), budget, client, times, bytes);
        let socket_io = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
        serve(socket_io, socket, hctx).await
    });
    Ok(response)
}

async fn serve<T>(socket: WebSocketStream<T>, id: u64, hctx: HocuspocusContext)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sink, stream) = socket.split();
    let stream = stream.map(ws::incoming);
    let sink = sink.with_flat_map(ws::messages);
    session::run(stream, sink, id, hctx).await;
}

/// Access to one document for the token a provider sent, by the rules of
/// `?token=` on the y-websocket endpoint. In open mode every token (or
/// none) is read-write; in token mode the admin key is too.
fn authorizer(state: AppState, ip: IpAddr) -> Authorize {
    std::sync::Arc::new(move |name: DocName, token: String| {
        let state = state.clone();
        async move {
            let caller = if state.access.is_open() {
                Caller::Admin
            } else {
                state.access.authenticate(Some(&token)).map_err(|e| e.to_string())?
            };
            caller.read(&name).map_err(|e| e.to_string())?;
            rate::admit_new_doc(&state, &name, ip, &caller)
                .await
                .map_err(|e| e.message)?;
            let lease = match &caller {
                Caller::Token(claims) => Some(ws::lease(&state.access, claims)),
                Caller::Admin => None,
            };
            Ok(DocAccess {
                writable: caller.may_write(),
                lease,
                user: caller.user(),
            })
        }
        .boxed()
    })
}

/// `POST /api/docs/{name}/stateless` `{"payload": "..."}`: the payload (a
/// string, usually JSON itself) goes to every Hocuspocus peer of the
/// document as a stateless message (the provider's `onStateless`). Needs
/// write access. Nothing is stored; a document nobody has open is not
/// loaded for it. Answers `{"sent": n}`, the peers that got it.
pub async fn post_stateless(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let name = DocName::parse(&name)?;
    caller.write(&name)?;
    #[derive(serde::Deserialize)]
    struct Stateless {
        payload: String,
    }
    let Stateless { payload } = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("expected {{\"payload\": \"a string\"}}: {e}")))?;
    let sent = match state.registry.loaded(&name) {
        Some(handle) => match handle.stateless(payload).await {
            Ok(sent) => sent,
            // Unloading as we asked: nobody was attached.
            Err(DocError::Unloaded) => 0,
            Err(e) => return Err(e.into()),
        },
        None => 0,
    };
    Ok(Json(json!({ "sent": sent })))
}
