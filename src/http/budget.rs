// Over 500 lines: ~415 of code (scanner, budget, metered socket, body reader: one mechanism) and its unit tests.
//! Messages that have begun to arrive but are not complete: one byte budget
//! for the whole server, shared fairly between clients.
//!
//! tungstenite assembles a fragmented WebSocket message (or one large frame)
//! in memory, with no bound across connections: 20 connections each sending
//! 15 MiB of a message without its final fragment, then only pings, held
//! 330 MB for as long as they liked. So each connection's message in
//! progress is charged to the [`Budget`] (by `metered`, which follows the
//! frames in the bytes read) with what tungstenite allocates for it, and so
//! is each HTTP request body while it arrives ([`collect_body`]).
//!
//! The budget is the server's, and a client (IP and token) may use what
//! others do not; but when it is full, the client that holds the most gives
//! way: its largest message is evicted, or, when the message that crossed
//! the line is its own, that one is refused. So one client cannot hold the
//! budget against the others: a first version refused whoever came next, and one
//! attacker holding the budget closed honest clients' 40-byte updates with
//! 1009. The first 64 KiB of every message are not charged: most messages
//! are smaller, they come and go within a read or two, and the connection
//! caps bound them.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::task::AtomicWaker;
use http_body_util::BodyExt;
use tokio::time::Instant;

use super::{ApiError, AppState};
use crate::rate::ClientKey;

/// Bytes of every message that are never charged.
pub const FREE: u64 = 64 << 10;

/// Bytes of unfinished messages across the server. 0 = no limit.
#[derive(Debug)]
pub struct Budget {
    limit: u64,
    ledger: Mutex<Ledger>,
    /// Charges evicted so far.
    evicted: AtomicU64,
}

/// Who holds what of the budget.
#[derive(Debug, Default)]
struct Ledger {
    used: u64,
    next: u64,
    /// Charges above zero, by their number.
    holders: HashMap<u64, Holder>,
    /// Bytes each client holds, over all its charges.
    clients: HashMap<ClientKey, u64>,
}

#[derive(Debug)]
struct Holder {
    client: ClientKey,
    bytes: u64,
    slot: Arc<Slot>,
}

/// How the budget tells a charge it was evicted.
#[derive(Debug, Default)]
struct Slot {
    evicted: AtomicBool,
    waker: AtomicWaker,
}

impl Ledger {
    /// Sets charge `id` of `client` to `bytes`, creating or removing it.
    fn set(&mut self, id: u64, client: &ClientKey, bytes: u64, slot: &Arc<Slot>) {
        let old = self.holders.get(&id).map_or(0, |h| h.bytes);
        self.used = self.used - old + bytes;
        let total = self.clients.entry(client.clone()).or_default();
        *total = *total - old + bytes;
        if *total == 0 {
            self.clients.remove(client);
        }
        if bytes == 0 {
            self.holders.remove(&id);
        } else {
            self.holders
                .entry(id)
                .and_modify(|h| h.bytes = bytes)
                .or_insert_with(|| Holder {
                    client: client.clone(),
                    bytes,
                    slot: slot.clone(),
                });
        }
    }

    /// The charge that gives way when charge `id` of `client` passes the
    /// budget: its own when its client holds the most (its other messages
    /// stay, so a client's connections do not evict each other in a
    /// loop, each allocating anew), else the largest of the client that
    /// holds the most.
    fn victim(&self, id: u64, client: &ClientKey) -> Option<u64> {
        let (top, top_bytes) = self.clients.iter().max_by_key(|(_, bytes)| **bytes)?;
        if top == client || self.clients.get(client) == Some(top_bytes) {
            return Some(id);
        }
        self.holders
            .iter()
            .filter(|(_, h)| h.client == *top)
            .max_by_key(|(_, h)| h.bytes)
            .map(|(id, _)| *id)
    }
}

impl Budget {
    pub fn new(limit: u64) -> Arc<Self> {
        Arc::new(Self {
            limit,
            ledger: Mutex::default(),
            evicted: AtomicU64::new(0),
        })
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes charged now.
    pub fn used(&self) -> u64 {
        self.ledger.lock().unwrap().used
    }

    /// Its series for `/metrics`.
    pub fn render(&self) -> String {
        format!(
            "# HELP weft_unfinished_message_bytes Bytes charged to --partial-message-budget now.\n\
             # TYPE weft_unfinished_message_bytes gauge\nweft_unfinished_message_bytes {}\n\
             # HELP weft_unfinished_messages_evicted_total Unfinished messages closed to make room in the budget.\n\
             # TYPE weft_unfinished_messages_evicted_total counter\nweft_unfinished_messages_evicted_total {}\n",
            self.used(),
            self.evicted.load(Ordering::Relaxed)
        )
    }

    /// Sets charge `id` to `bytes`; while that passes the limit, evicts the
    /// largest charge of the client holding the most. `false` when this
    /// charge's client holds the most: it is then set to nothing.
    fn set(&self, id: u64, client: &ClientKey, bytes: u64, slot: &Arc<Slot>) -> bool {
        let mut ledger = self.ledger.lock().unwrap();
        ledger.set(id, client, bytes, slot);
        while self.limit != 0 && ledger.used > self.limit {
            let Some(victim) = ledger.victim(id, client) else { break };
            if victim == id {
                ledger.set(id, client, 0, slot);
                return false;
            }
            if let Some(holder) = ledger.holders.get(&victim) {
                let (their, their_slot) = (holder.client.clone(), holder.slot.clone());
                ledger.set(victim, &their, 0, &their_slot);
                their_slot.evicted.store(true, Ordering::Release);
                self.evicted.fetch_add(1, Ordering::Relaxed);
                their_slot.waker.wake();
            }
        }
        true
    }
}

/// What one message in progress holds of a [`Budget`]; given back when
/// dropped.
#[derive(Debug)]
pub struct Charge {
    budget: Arc<Budget>,
    id: u64,
    client: ClientKey,
    bytes: u64,
    slot: Arc<Slot>,
}

impl Charge {
    pub fn new(budget: Arc<Budget>, client: ClientKey) -> Self {
        let id = {
            let mut ledger = budget.ledger.lock().unwrap();
            ledger.next += 1;
            ledger.next
        };
        Self {
            budget,
            id,
            client,
            bytes: 0,
            slot: Arc::default(),
        }
    }

    /// Charges what a message in progress holds, `allocated` bytes, but for
    /// the first [`FREE`] of them. Refused when the budget is full and this
    /// is the charge to give way, or was evicted earlier.
    pub fn set(&mut self, allocated: u64) -> Result<(), Unfinished> {
        if let Some(why) = self.evicted() {
            return Err(why);
        }
        let bytes = if allocated > FREE { allocated } else { 0 };
        if bytes == self.bytes {
            return Ok(());
        }
        if self.budget.set(self.id, &self.client, bytes, &self.slot) {
            self.bytes = bytes;
            Ok(())
        } else {
            self.bytes = 0;
            Err(Unfinished::OverBudget(self.budget.limit()))
        }
    }

    /// Gives everything back.
    pub fn clear(&mut self) {
        if self.bytes != 0 {
            self.budget.set(self.id, &self.client, 0, &self.slot);
            self.bytes = 0;
        }
    }

    /// Why the message can no longer be charged, if the budget evicted it.
    pub fn evicted(&self) -> Option<Unfinished> {
        self.slot
            .evicted
            .load(Ordering::Acquire)
            .then(|| Unfinished::Evicted(self.budget.limit()))
    }

    /// [`Self::evicted`], and otherwise wakes `cx` when it is.
    pub fn poll_evicted(&self, cx: &mut Context<'_>) -> Option<Unfinished> {
        self.slot.waker.register(cx.waker());
        self.evicted()
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.clear();
    }
}

/// Why an unfinished message was refused. Short: it becomes a close reason
/// (at most 123 bytes).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unfinished {
    #[error("unfinished messages are at the server's limit of {0} bytes; send it again later")]
    OverBudget(u64),
    #[error("unfinished messages are at the server's limit of {0} bytes and this client's is the largest")]
    Evicted(u64),
    #[error("message not completed within {0} ms")]
    Late(u128),
    #[error("message stopped arriving for {0} ms")]
    Stalled(u128),
}

impl From<Unfinished> for io::Error {
    fn from(why: Unfinished) -> Self {
        io::Error::other(why)
    }
}

/// Whether a request carries a body (a length above zero, or chunked).
pub fn has_body(request: &Request) -> bool {
    !request.body().is_end_stream()
}

/// Media types a request body may have. Neither is one a form or a
/// `fetch` without a preflight can send, so a foreign page cannot post
/// anything without the server's CORS consent.
pub const BODY_TYPES: [&str; 2] = ["application/json", "application/octet-stream"];

/// Middleware for the API: a request body is read here, whole, before the
/// handler runs: at most `--max-message-size` bytes (413), with no pause
/// longer than `--idle-timeout-ms` and done within `--message-deadline-ms`
/// (408), and charged to the budget of unfinished messages while it arrives
/// and while the handler works on it (503 when it is the one to give way).
pub async fn collect_body(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if !has_body(&request) {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let client = body_client(&state, &parts);
    let mut charge = Charge::new(state.budget.clone(), client);
    let bytes = match read_body(body, &state, &mut charge).await {
        Ok(bytes) => bytes,
        Err(e) => return e.into_response(),
    };
    let response = next.run(Request::from_parts(parts, Body::from(bytes))).await;
    drop(charge);
    response
}

async fn read_body(mut body: Body, state: &AppState, charge: &mut Charge) -> Result<Bytes, ApiError> {
    let max = state.max_message_size as u64;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than --max-message-size ({max} bytes)"),
        )
    };
    if body.size_hint().lower() > max {
        return Err(too_large());
    }
    let started = Instant::now();
    let deadline = state.timeouts.message_deadline.map(|d| started + d);
    let mut buffer = Vec::new();
    loop {
        let mut wait = state.timeouts.idle.map(|idle| Instant::now() + idle);
        if let Some(deadline) = deadline {
            wait = Some(wait.map_or(deadline, |w| w.min(deadline)));
        }
        let next = async {
            tokio::select! {
                frame = body.frame() => Ok(frame),
                why = std::future::poll_fn(|cx| match charge.poll_evicted(cx) {
                    Some(why) => Poll::Ready(why),
                    None => Poll::Pending,
                }) => Err(why),
            }
        };
        let frame = match wait {
            Some(until) => tokio::time::timeout_at(until, next).await.map_err(|_| late(deadline))?,
            None => next.await,
        };
        let frame = frame.map_err(|why| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, why.to_string()))?;
        let Some(frame) = frame else {
            return Ok(Bytes::from(buffer));
        };
        let frame = frame.map_err(|e| ApiError::bad_request(format!("could not read the request body: {e}")))?;
        let Ok(data) = frame.into_data() else { continue };
        if buffer.len() as u64 + data.len() as u64 > max {
            return Err(too_large());
        }
        buffer.extend_from_slice(&data);
        // What the buffer holds: it grows by doubling.
        if let Err(why) = charge.set(buffer.capacity() as u64) {
            return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, why.to_string()));
        }
    }
}

/// 408: the deadline passed, or the body paused for the idle timeout.
fn late(deadline: Option<Instant>) -> ApiError {
    let message = if deadline.is_some_and(|d| Instant::now() >= d) {
        "request body not complete within --message-deadline-ms"
    } else {
        "request body stopped arriving (--idle-timeout-ms)"
    };
    ApiError::new(StatusCode::REQUEST_TIMEOUT, message)
}

/// Whom a request body is charged to: its client IP and, with a token, the
/// token's id (as the rate limits count it).
fn body_client(state: &AppState, parts: &axum::http::request::Parts) -> ClientKey {
    let remote = parts.extensions.get::<ConnectInfo<std::net::SocketAddr>>().map(|c| c.0);
    let ip = remote.map_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), |r| {
        state.limits.client_ip(r, &parts.headers)
    });
    let credential = super::access::credential(&parts.headers, parts.uri.query());
    let token = match state.access.authenticate(credential.as_deref()) {
        Ok(super::access::Caller::Token(claims)) => Some(claims.jti),
        _ => None,
    };
    ClientKey { ip, token }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    const KIB: u64 = 1 << 10;

    fn client(n: u8) -> ClientKey {
        ClientKey {
            ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, n)),
            token: None,
        }
    }

    #[test]
    fn small_messages_are_free_and_charges_are_given_back() {
        let budget = Budget::new(1000 * KIB);
        let mut a = Charge::new(budget.clone(), client(1));
        a.set(FREE).unwrap();
        assert_eq!(budget.used(), 0, "the first 64 KiB are free");
        a.set(FREE + 1).unwrap();
        assert_eq!(budget.used(), FREE + 1, "past them, all of it");
        let mut b = Charge::new(budget.clone(), client(1));
        b.set(500 * KIB).unwrap();
        a.set(10).unwrap();
        assert_eq!(budget.used(), 500 * KIB);
        drop(b);
        drop(a);
        assert_eq!(budget.used(), 0);
        let unlimited = Budget::new(0);
        Charge::new(unlimited, client(1)).set(u64::MAX / 2).unwrap();
    }

    /// The attack of the hostile-peer benchmark: one client holds the
    /// budget; an honest client's message still passes, and the
    /// attacker's largest message gives way.
    #[test]
    fn the_largest_of_the_client_holding_the_most_gives_way() {
        let budget = Budget::new(1000 * KIB);
        let mut held = Charge::new(budget.clone(), client(1));
        let mut other = Charge::new(budget.clone(), client(1));
        held.set(600 * KIB).unwrap();
        other.set(390 * KIB).unwrap();
        let mut honest = Charge::new(budget.clone(), client(2));
        honest.set(200 * KIB).unwrap();
        assert_eq!(held.evicted(), Some(Unfinished::Evicted(1000 * KIB)));
        assert_eq!(other.evicted(), None);
        assert_eq!(budget.used(), 590 * KIB);
        // The evicted charge can take nothing more.
        assert!(held.set(700 * KIB).is_err());
        // The client holding the most refuses its own growth when its
        // own message is the largest.
        assert_eq!(other.set(900 * KIB), Err(Unfinished::OverBudget(1000 * KIB)));
        assert_eq!(budget.used(), 200 * KIB);
        honest.set(800 * KIB).unwrap();
        drop(honest);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_client_may_use_what_nobody_else_needs_but_not_evict_itself() {
        let budget = Budget::new(1000 * KIB);
        let mut one = Charge::new(budget.clone(), client(1));
        one.set(1000 * KIB).unwrap();
        let mut two = Charge::new(budget.clone(), client(1));
        assert_eq!(
            two.set(100 * KIB),
            Err(Unfinished::OverBudget(1000 * KIB)),
            "the same client: the message that passes the budget is refused"
        );
        assert!(one.evicted().is_none());
        assert_eq!(budget.used(), 1000 * KIB);
    }
}
