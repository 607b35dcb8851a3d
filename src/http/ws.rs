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

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::future::{self, Either};
use futures_util::{stream, SinkExt, Stream, StreamExt};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::sync::broadcast;
use tokio_tungstenite::WebSocketStream;
use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tungstenite::protocol::frame::Frame;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::Message;

use super::access::{self, Access, Caller};
use super::budget::Unfinished;
use super::metered::{MessageTimes, Metered};
use super::rate;
use super::{ApiError, AppState};
use crate::auth::{Claims, MAX_TOKEN_TTL_SECS};
use crate::doc::{DocError, DocName, PeerId};
use crate::rate::ClientKey;
use crate::session::{self, Grant, Incoming, Lease, Outgoing, SessionContext, TransportError};

/// tungstenite's read buffer, allocated per connection, and how much it
/// reads at once: it zero-fills that much before every read, so a larger
/// buffer costs every read of a small frame (measured in bench/FINDINGS.md,
/// *Fixed after profiling*). Its default of 128 KiB would dominate the
/// memory of idle connections.
/// y-sync frames are mostly far smaller; larger ones grow it on demand.
const READ_BUFFER: usize = 1 << 10;
/// Queued output is written to the socket once it passes this size (and on
/// every flush, which the session does after each batch).
const WRITE_BUFFER: usize = 16 << 10;
/// Binary messages larger than this go out as a fragmented message of
/// pieces this size, each a slice of the shared frame. tungstenite copies
/// every frame it writes into a buffer of the connection's, which keeps its
/// capacity: one full-state step2 of a 5 MB document left 5 MB with every
/// connection it was sent to, for the connection's life (544 MiB for 100
/// clients in the hostile-peer benchmark, 46 MiB once fragmented). Clients
/// reassemble fragments (RFC 6455 section 5.4; browsers and `ws` do).
const FRAGMENT: usize = 64 << 10;

pub async fn upgrade(
    State(state): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let (mut parts, _body) = request.into_parts();
    match admit(&state, remote, &mut parts).await {
        Ok(response) => response,
        Err(e) => {
            if e.status != StatusCode::UPGRADE_REQUIRED {
                state.metrics.requests_refused.fetch_add(1, Ordering::Relaxed);
                tracing::info!(path = %parts.uri.path(), status = %e.status, reason = %e.message, "upgrade refused");
            }
            e.into_response()
        }
    }
}

/// A person who opens a document's address in a browser (a GET that
/// accepts HTML, not an upgrade) wants to see the document, not a 426.
fn is_browser_page_load(parts: &Parts) -> bool {
    parts.method == Method::GET
        && parts
            .headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim().starts_with("text/html")))
}

/// 303 to the web demo with the document open (`/?doc=`), keeping a
/// `?token=` the link carried.
fn open_in_demo(name: &DocName, query: Option<&str>) -> Response {
    let encode = |s: &str| percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string();
    let mut location = format!("/?doc={}", encode(name.as_str()));
    if let Some(token) = access::query_param(query, "token") {
        location.push_str(&format!("&token={}", encode(&token)));
    }
    (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response()
}

/// What a WebSocket handshake request brings (RFC 6455 section 4.2.1).
pub(super) struct Handshake {
    key: HeaderValue,
    pub on_upgrade: OnUpgrade,
}

impl Handshake {
    pub fn take(parts: &mut Parts) -> Option<Self> {
        let headers = &parts.headers;
        let has_token = |name: header::HeaderName, token: &str| {
            headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        };
        let is_upgrade = parts.method == Method::GET
            && has_token(header::CONNECTION, "upgrade")
            && has_token(header::UPGRADE, "websocket")
            && headers.get(header::SEC_WEBSOCKET_VERSION).is_some_and(|v| v == "13");
        if !is_upgrade {
            return None;
        }
        let key = headers.get(header::SEC_WEBSOCKET_KEY)?.clone();
        let on_upgrade = parts.extensions.remove::<OnUpgrade>()?;
        Some(Self { key, on_upgrade })
    }

    pub fn accept(&self) -> Response {
        let accept = tungstenite::handshake::derive_accept_key(self.key.as_bytes());
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(accept) = HeaderValue::from_str(&accept) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        response
    }
}

/// Every check an upgrade must pass, in order: the name, the request being
/// an upgrade, the origin, the credential, the connection limits, the
/// client's message bucket, its allowance of new documents, and the
/// document loading. Then the handshake's answer, and the session on the
/// upgraded socket.
///
/// The handshake is done here rather than by axum's `WebSocketUpgrade`
/// (the same few lines) so that the upgraded socket can be [`Metered`]
/// before tungstenite reads it.
async fn admit(state: &AppState, remote: SocketAddr, parts: &mut Parts) -> Result<Response, ApiError> {
    let name = DocName::from_url_path(parts.uri.path())?;
    let Some(handshake) = Handshake::take(parts) else {
        if is_browser_page_load(parts) {
            return Ok(open_in_demo(&name, parts.uri.query()));
        }
        return Err(ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            format!("'/{name}' is a document: connect with a WebSocket (y-websocket) client, or use /api/docs"),
        ));
    };
    let headers = &parts.headers;
    state.origins.check_origin(headers, false)?;
    let caller = state
        .access
        .authenticate(access::credential(headers, parts.uri.query()).as_deref())?;
    caller.read(&name)?;
    let ip = state.limits.client_ip(remote, headers);
    let admission = state.limits.admit_forwarded(ip)?;
    let rate = rate::message_bucket(state, ip, &caller)?;
    let encodes = rate::encode_budget(state, ip, Some(&caller));
    let bytes = rate::byte_bucket(state, ip, Some(&caller));
    rate::admit_new_doc(state, &name, ip, &caller).await?;
    // Load the document before accepting, so that a document that cannot be
    // loaded is refused with a status instead of a socket that closes at once.
    state
        .registry
        .with_doc_or_shed(&name, |handle| async move { handle.ready().await })
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
        rate,
        encodes,
        user: caller.user(),
    };
    let peer = PeerId(state.next_peer.fetch_add(1, Ordering::Relaxed));
    let ctx = SessionContext {
        registry: state.registry.clone(),
        metrics: state.metrics.clone(),
        shutdown: state.shutdown.clone(),
    };
    let config = socket_config(state.max_message_size);
    let budget = state.budget.clone();
    let times = MessageTimes {
        deadline: state.timeouts.message_deadline,
        stall: state.timeouts.message_stall,
    };
    let client = ClientKey {
        ip,
        token: match &caller {
            Caller::Token(claims) => Some(claims.jti.clone()),
            Caller::Admin => None,
        },
    };
    let response = handshake.accept();
    state.sessions.spawn(async move {
        // Behind a proxy, the connection holds its place until it ends.
        let _admission = admission;
        let upgraded = match handshake.on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade failed");
                return;
            }
        };
        let io = Metered::new(TokioIo::new(upgraded), budget, client, times, bytes);
        let socket = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
        serve(socket, name, peer, grant, ctx).await
    });
    Ok(response)
}

/// tungstenite's settings for an upgraded socket (both endpoints).
pub(super) fn socket_config(max_message_size: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(Some(max_message_size))
        .max_frame_size(Some(max_message_size))
}

/// A token's connection ends when the token expires or is revoked.
pub(super) fn lease(access: &Arc<Access>, claims: &Claims) -> Lease {
    let remaining = claims.exp.saturating_sub(access::now_secs());
    let mut revocations = access.watch_revocations();
    let access = access.clone();
    let id = claims.jti.clone();
    // `auth::verify` keeps `exp` within a year, but no claim value may ever
    // panic here: the client would get no answer at all.
    let now = tokio::time::Instant::now();
    Lease {
        expires: now
            .checked_add(Duration::from_secs(remaining))
            .unwrap_or_else(|| now + Duration::from_secs(MAX_TOKEN_TTL_SECS)),
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

async fn serve<T>(socket: WebSocketStream<T>, name: DocName, peer: PeerId, grant: Grant, ctx: SessionContext)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sink, stream) = socket.split();
    let stream = stream.map(incoming);
    let sink = sink.with_flat_map(messages);
    session::run(stream, sink, name, peer, grant, ctx).await;
}

/// What the session layer needs to know of a WebSocket message (both
/// endpoints, y-websocket and Hocuspocus).
pub(super) fn incoming(item: Result<Message, tungstenite::Error>) -> Result<Incoming, TransportError> {
    match item {
        Ok(Message::Binary(bytes)) => Ok(Incoming::Binary(bytes)),
        Ok(Message::Text(_)) => Ok(Incoming::Text),
        Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => Ok(Incoming::Alive),
        Ok(Message::Close(_)) => Ok(Incoming::Close),
        Err(e) => Err(classify(e)),
    }
}

/// What tungstenite is asked to write for one [`Outgoing`]: one message,
/// or a binary message over [`FRAGMENT`] bytes as its fragments, sliced
/// from it (no copy).
pub(super) fn messages(out: Outgoing) -> impl Stream<Item = Result<Message, tungstenite::Error>> {
    let whole = match out {
        Outgoing::Binary(bytes) if bytes.len() > FRAGMENT => {
            let count = bytes.len().div_ceil(FRAGMENT);
            let pieces = (0..count).map(move |i| {
                let piece = bytes.slice(i * FRAGMENT..((i + 1) * FRAGMENT).min(bytes.len()));
                let opcode = OpCode::Data(if i == 0 { Data::Binary } else { Data::Continue });
                Ok(Message::Frame(Frame::message(piece, opcode, i + 1 == count)))
            });
            return Either::Right(stream::iter(pieces));
        }
        Outgoing::Binary(bytes) => Message::Binary(bytes),
        Outgoing::Ping => Message::Ping(Default::default()),
        Outgoing::Close(reason) => Message::Close(Some(CloseFrame {
            code: CloseCode::from(reason.code),
            reason: reason.reason.into(),
        })),
    };
    Either::Left(stream::once(future::ready(Ok(whole))))
}

/// Tells a message over the size limit, or an unfinished one refused by
/// the budget or its deadline, apart from other transport failures: both
/// close with 1009 and the reason.
pub(super) fn classify(e: tungstenite::Error) -> TransportError {
    match e {
        tungstenite::Error::Capacity(detail) => TransportError::TooBig(detail.to_string()),
        tungstenite::Error::Io(io) => match io.get_ref().and_then(|e| e.downcast_ref::<Unfinished>()) {
            Some(why) => TransportError::TooBig(why.to_string()),
            None => TransportError::Other(io.to_string()),
        },
        other => TransportError::Other(other.to_string()),
    }
}
