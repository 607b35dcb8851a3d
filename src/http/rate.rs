//! The rate limits the HTTP edge applies, each a [`RateBook`] of clients:
//! messages and bytes on a WebSocket (the buckets a connection holds), API
//! requests, and new documents. Refusals are 429 with a JSON reason and
//! `Retry-After`, before anything is done: for a WebSocket, before the
//! upgrade. Bytes are never refused, only paced (`http::metered`).
//!
//! A client is its IP (`Limits::client_ip`, so behind a trusted proxy the
//! forwarded one) and, in token mode, its token's id. The admin key is not
//! limited in token mode: whoever holds it can mint tokens anyway. In open
//! mode every caller counts by IP.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::access::{self, Caller};
use super::{ApiError, AppState};
use crate::config::STATE_ENCODES_BURST;
use crate::doc::DocName;
use crate::rate::{ClientKey, RateBook, RateLimiter, SharedBucket, HANDSHAKE};

/// Who a creation counts against: its IP and its token, each on its own, so
/// that neither many tokens from one address nor one token from many
/// addresses escapes the limit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Creator {
    Ip(IpAddr),
    Token(String),
}

/// The rate books, `None` where a limit is off.
pub struct Rates {
    /// WebSocket messages: each connection checks out its bucket.
    messages: Option<Arc<RateBook<ClientKey>>>,
    /// Bytes read from WebSockets: one bucket per client, shared by its
    /// connections.
    bytes: Option<Arc<RateBook<ClientKey>>>,
    /// API requests.
    requests: Option<RateBook<ClientKey>>,
    /// New documents, by any route.
    creations: Option<RateBook<Creator>>,
    /// Encodings for step1 answers: one bucket per client, shared by its
    /// connections.
    encodes: Option<Arc<RateBook<ClientKey>>>,
}

impl Rates {
    pub fn new(config: &crate::config::Config) -> Self {
        let clients = config.rate_clients;
        let per_minute = config.max_new_docs_per_minute;
        Self {
            // The burst clamped to a peer queue (`Config::rate_limit`).
            messages: config.rate_limit().map(|(rate, burst)| {
                let book = RateBook::new(f64::from(rate), f64::from(burst), clients);
                Arc::new(book.with_handshake(HANDSHAKE))
            }),
            bytes: config
                .byte_rate_limit()
                .map(|(rate, burst)| Arc::new(RateBook::new(rate as f64, burst as f64, clients))),
            requests: (config.http_rate_limit > 0).then(|| {
                RateBook::new(
                    f64::from(config.http_rate_limit),
                    f64::from(config.http_rate_burst),
                    clients,
                )
            }),
            creations: (per_minute > 0)
                .then(|| RateBook::new(f64::from(per_minute) / 60.0, f64::from(per_minute), clients)),
            encodes: (config.state_encodes_per_minute > 0).then(|| {
                let rate = f64::from(config.state_encodes_per_minute) / 60.0;
                Arc::new(RateBook::new(rate, f64::from(STATE_ENCODES_BURST), clients))
            }),
        }
    }
}

/// Whole seconds to tell a client, at least 1.
fn secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

/// The client behind a caller, or `None` when limits do not apply to it.
fn client(state: &AppState, ip: IpAddr, caller: Option<&Caller>) -> Option<ClientKey> {
    match caller {
        Some(Caller::Admin) if !state.access.is_open() => None,
        Some(Caller::Token(claims)) => Some(ClientKey {
            ip,
            token: Some(claims.jti.clone()),
        }),
        _ => Some(ClientKey { ip, token: None }),
    }
}

/// Middleware over `/api`: one token from the client's request bucket per
/// request. A request whose credential is refused counts against its IP.
pub async fn limit_requests(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(book) = &state.rates.requests else {
        return next.run(request).await;
    };
    let ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| {
            state.limits.client_ip(c.0, request.headers())
        });
    let credential = access::credential(request.headers(), request.uri().query());
    let caller = state.access.authenticate(credential.as_deref()).ok();
    let Some(key) = client(&state, ip, caller.as_ref()) else {
        return next.run(request).await;
    };
    match book.take(&[key], 1.0, Instant::now()) {
        Ok(()) => next.run(request).await,
        Err(wait) => {
            state.metrics.requests_refused.fetch_add(1, Ordering::Relaxed);
            ApiError::too_many(
                format!(
                    "too many requests from this client: at most {} a second, {} at once (--http-rate-limit); retry in {} s",
                    book.rate(),
                    book.burst(),
                    secs(wait)
                ),
                wait,
            )
            .into_response()
        }
    }
}

/// Counts a new document against its creator's allowance, or refuses it
/// with 429. A document is new when it is neither loaded nor stored; asking
/// costs a read only for documents not in memory, which loading reads anyway.
pub async fn admit_new_doc(state: &AppState, name: &DocName, ip: IpAddr, caller: &Caller) -> Result<(), ApiError> {
    let Some(book) = &state.rates.creations else {
        return Ok(());
    };
    let Some(key) = client(state, ip, Some(caller)) else {
        return Ok(());
    };
    if state.registry.loaded(name).is_some() || state.registry.stored(name).await?.is_some() {
        return Ok(());
    }
    let mut creators = vec![Creator::Ip(key.ip)];
    creators.extend(key.token.map(Creator::Token));
    book.take(&creators, 1.0, Instant::now()).map_err(|wait| {
        state.metrics.requests_refused.fetch_add(1, Ordering::Relaxed);
        ApiError::too_many(
            format!(
                "too many new documents from this client: at most {} a minute (--max-new-docs-per-minute); \
                 retry in {} s, or use an existing document",
                book.burst(),
                secs(wait)
            ),
            wait,
        )
    })
}

/// The message bucket of a new WebSocket connection, checked out of the
/// client's book; refused (429) when it does not hold a handshake's worth:
/// the connection would be closed at its first messages.
pub fn message_bucket(state: &AppState, ip: IpAddr, caller: &Caller) -> Result<Option<RateLimiter>, ApiError> {
    let Some(book) = &state.rates.messages else {
        return Ok(None);
    };
    let token = match caller {
        Caller::Token(claims) => Some(claims.jti.clone()),
        Caller::Admin => None,
    };
    let mut limiter = RateLimiter::from_book(book.clone(), ClientKey { ip, token });
    match limiter.ready() {
        Ok(()) => Ok(Some(limiter)),
        Err(wait) => Err(ApiError::too_many(
            format!(
                "too many messages from this client (--rate-limit): retry in {} s",
                secs(wait)
            ),
            wait,
        )),
    }
}

/// The budget of encodings a new WebSocket connection's step1 answers are
/// charged to: its client's, shared with the client's other connections
/// (`None`: no limit, or the admin key in token mode). A connection that
/// shows no credential at the upgrade (a Hocuspocus socket: its tokens come
/// later, per document) passes no caller and is charged by its IP.
pub fn encode_budget(state: &AppState, ip: IpAddr, caller: Option<&Caller>) -> Option<SharedBucket> {
    let book = state.rates.encodes.as_ref()?;
    let key = client(state, ip, caller)?;
    Some(SharedBucket::new(book.clone(), key))
}

/// The byte bucket a new WebSocket connection is read under: its
/// client's, shared with the client's other connections (`None`: no limit,
/// or the admin key in token mode). Shared, unlike the message bucket,
/// because what it bounds is what a client makes weft read however many
/// connections it opens: a bucket per connection let a client that
/// reconnects while its closing connections still held theirs mint a fresh
/// burst each time. Never refused at the upgrade: a client in debt is only
/// read more slowly, so a neighbour behind the same address and token is
/// at worst slowed, never closed.
pub fn byte_bucket(state: &AppState, ip: IpAddr, caller: Option<&Caller>) -> Option<SharedBucket> {
    let book = state.rates.bytes.as_ref()?;
    let key = client(state, ip, caller)?;
    Some(SharedBucket::new(book.clone(), key))
}
