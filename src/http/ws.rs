//! WebSocket upgrades at `/<document-name>`, as the y-websocket provider
//! makes them (`serverUrl + '/' + room`).
//!
//! Everything that can be refused is refused here, before the upgrade, with
//! an HTTP status and a JSON reason: the y-websocket client cannot read close
//! reasons and reconnects quickly after an accepted-then-closed socket.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::future::{self, Either};
use futures_util::{stream, FutureExt, Sink, SinkExt, Stream, StreamExt};
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
/// asks for at once. Every open connection keeps one, so it is small; the
/// socket itself is read in larger pieces by `Metered`, which hands
/// tungstenite the rest of a piece as it asks (one system call for a burst
/// of small frames). tungstenite also zero-fills what it asks for before
/// every read (bench/FINDINGS.md, *Fixed after profiling*); its default of
/// 128 KiB would dominate the memory of idle connections. The buffer grows
/// to a large frame's size while that frame arrives.
const READ_BUFFER: usize = 128;
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
    let sessions = state.sessions.clone();
    state.sessions.spawn(async move {
        let upgraded = match handshake.on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade failed");
                return;
            }
        };
        let io = Metered::new(TokioIo::new(upgraded), budget, client, times, bytes);
        let socket = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
        let transport = WsTransport {
            ws: socket,
            fragments: None,
        };
        // The session gets a task of its own, sized to its future alone:
        // this one (the upgrade's, with the handshake's state) ends here.
        // Behind a proxy, the connection holds its place until it ends.
        let session = session::run(transport, name, peer, grant, ctx).map(move |()| drop(admission));
        sessions.spawn(session);
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
    let expires = now
        .checked_add(Duration::from_secs(remaining))
        .unwrap_or_else(|| now + Duration::from_secs(MAX_TOKEN_TTL_SECS));
    Lease::new(expires, async move {
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
    })
}

/// A WebSocket as the y-websocket session's [`session::Transport`]: one
/// object for both directions, read and written by the session's one task
/// (a split socket needs a lock between its halves and a task per half).
struct WsTransport<T> {
    ws: WebSocketStream<T>,
    /// A binary message over [`FRAGMENT`] bytes being handed to tungstenite
    /// as fragments: the message, and how many fragments are handed over.
    fragments: Option<(Bytes, usize)>,
}

impl<T> WsTransport<T>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    /// Hands tungstenite the rest of a fragmented message.
    fn poll_fragments(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), tungstenite::Error>> {
        while let Some((bytes, sent)) = &mut self.fragments {
            ready!(self.ws.poll_ready_unpin(cx))?;
            let piece = fragment(bytes, *sent);
            *sent += 1;
            if *sent == bytes.len().div_ceil(FRAGMENT) {
                self.fragments = None;
            }
            self.ws.start_send_unpin(piece)?;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T> Stream for WsTransport<T>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    type Item = Result<Incoming, TransportError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.ws.poll_next_unpin(cx).map(|item| item.map(incoming))
    }
}

impl<T> Sink<Outgoing> for WsTransport<T>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    type Error = TransportError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        ready!(self.poll_fragments(cx)).map_err(classify)?;
        self.ws.poll_ready_unpin(cx).map_err(classify)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Outgoing) -> Result<(), TransportError> {
        match item {
            Outgoing::Binary(bytes) if bytes.len() > FRAGMENT => {
                // Handed over by the next poll_ready or poll_flush.
                self.fragments = Some((bytes, 0));
                Ok(())
            }
            other => self.ws.start_send_unpin(message(other)).map_err(classify),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        ready!(self.poll_fragments(cx)).map_err(classify)?;
        self.ws.poll_flush_unpin(cx).map_err(classify)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        ready!(self.poll_fragments(cx)).map_err(classify)?;
        self.ws.poll_close_unpin(cx).map_err(classify)
    }
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
    match out {
        Outgoing::Binary(bytes) if bytes.len() > FRAGMENT => {
            let count = bytes.len().div_ceil(FRAGMENT);
            Either::Right(stream::iter((0..count).map(move |i| Ok(fragment(&bytes, i)))))
        }
        other => Either::Left(stream::once(future::ready(Ok(message(other))))),
    }
}

/// The `i`th fragment of a binary message over [`FRAGMENT`] bytes.
fn fragment(bytes: &Bytes, i: usize) -> Message {
    let count = bytes.len().div_ceil(FRAGMENT);
    let piece = bytes.slice(i * FRAGMENT..((i + 1) * FRAGMENT).min(bytes.len()));
    let opcode = OpCode::Data(if i == 0 { Data::Binary } else { Data::Continue });
    Message::Frame(Frame::message(piece, opcode, i + 1 == count))
}

/// One [`Outgoing`] as one message (a binary one whole).
fn message(out: Outgoing) -> Message {
    match out {
        Outgoing::Binary(bytes) => Message::Binary(bytes),
        Outgoing::Ping => Message::Ping(Default::default()),
        Outgoing::Close(reason) => Message::Close(Some(CloseFrame {
            code: CloseCode::from(reason.code),
            reason: reason.reason.into(),
        })),
    }
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
