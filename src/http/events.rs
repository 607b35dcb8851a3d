//! `GET /api/events`: the feed of events as Server-Sent Events.
//!
//! Each SSE message is one event: `id:` its seq in the outbox (what a
//! client sends back as `Last-Event-ID` to resume), `data:` its envelope
//! (README, *Events*). Filters: `?types=document.updated,version.created`
//! and `?prefix=notes/`. A token sees the events of the documents it
//! covers (never `token.revoked`, which concerns no document); the admin
//! key, or open mode, sees all. Without `Last-Event-ID` (or
//! `?last_event_id=`) the feed starts with the next event; `0` starts with
//! the oldest the outbox holds. When the event a client resumes after was
//! pruned already, the first message says so (`event: pruned`), and the
//! feed goes on with the oldest event left.
//!
//! `document.peers` (a document's live peer count, `events::PeerCounts`)
//! is sent only to subscribers that name it in `?types=`: it is not in
//! the outbox, so its messages have no `id:` and are not replayed on
//! resume, which a consumer of stored events should not have to expect.

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use serde_json::json;
use tokio::sync::{broadcast, watch};

use super::access::Caller;
use super::{ApiError, AppState};
use crate::event::EventType;
use crate::events::{PeerCount, Subscription, PEER_COUNTS};
use crate::storage::StoredEvent;

/// How often an idle feed sends a comment, so that proxies and clients
/// see the connection alive.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Which events a subscriber wants and may see.
struct Filter {
    /// `None`: every type.
    types: Option<HashSet<EventType>>,
    /// `document.peers` asked for.
    peers: bool,
    prefix: Option<String>,
    caller: Caller,
}

impl Filter {
    fn parse(params: &HashMap<String, String>, caller: Caller) -> Result<Self, ApiError> {
        let mut peers = false;
        let types = match params.get("types").map(|t| t.trim()).filter(|t| !t.is_empty()) {
            None => None,
            Some(list) => Some(
                list.split(',')
                    .map(str::trim)
                    .filter(|t| {
                        let live = *t == PEER_COUNTS;
                        peers |= live;
                        !live
                    })
                    .map(|t| {
                        t.parse::<EventType>()
                            .map_err(|e| ApiError::bad_request(format!("?types: {e}, or {}", PEER_COUNTS)))
                    })
                    .collect::<Result<HashSet<_>, _>>()?,
            ),
        };
        Ok(Self {
            types,
            peers,
            prefix: params.get("prefix").filter(|p| !p.is_empty()).cloned(),
            caller,
        })
    }

    fn admits_count(&self, count: &PeerCount) -> bool {
        let doc = count.document.as_str();
        self.peers && self.prefix.as_deref().map_or(true, |p| doc.starts_with(p)) && self.caller.sees(doc)
    }

    fn admits(&self, event: &StoredEvent) -> bool {
        if let Some(types) = &self.types {
            if !event.kind.parse().is_ok_and(|t| types.contains(&t)) {
                return false;
            }
        }
        match &event.document {
            Some(doc) => self.prefix.as_deref().map_or(true, |p| doc.starts_with(p)) && self.caller.sees(doc),
            // No document (a revoked token): the admin's only, and not
            // when a prefix asks for documents.
            None => self.prefix.is_none() && matches!(self.caller, Caller::Admin),
        }
    }
}

/// Where to resume: `Last-Event-ID`, or `?last_event_id=` (for clients
/// that cannot set headers on a first connection).
fn resume_from(headers: &HeaderMap, params: &HashMap<String, String>) -> Result<Option<i64>, ApiError> {
    let given = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .or(params.get("last_event_id").map(String::as_str))
        .map(str::trim)
        .filter(|v| !v.is_empty());
    given
        .map(|v| {
            v.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "Last-Event-ID '{v}' is not an event seq (the number in the feed's `id:` field)"
                ))
            })
        })
        .transpose()
}

pub async fn feed(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let filter = Filter::parse(&params, caller)?;
    let feed = state.feed.clone();
    let (after, notice) = match resume_from(&headers, &params)? {
        None => (*feed.latest().borrow(), None),
        Some(after) => match feed.resumable(after).await? {
            Ok(()) => (after, None),
            Err(first) => {
                let notice = Event::default().event("pruned").data(
                    json!({
                        "last_event_id": after,
                        "first_available": first,
                        "message": "the events after this id are no longer all in the outbox \
                                    (pruned after --events-retention, or another database); \
                                    the feed goes on with the oldest it holds",
                    })
                    .to_string(),
                );
                let latest = *feed.latest().borrow();
                (first.map_or(after.min(latest), |f| f - 1), Some(notice))
            }
        },
    };
    let subscription = feed.subscribe(after);
    let counts = filter.peers.then(|| feed.peer_counts().subscribe());
    let pending: VecDeque<Event> = notice.into_iter().collect();
    let stream = stream::unfold(
        Reader {
            subscription,
            counts,
            filter,
            pending,
            shutdown: state.shutdown.clone(),
        },
        |mut reader| async move {
            let event = reader.next().await?;
            Some((Ok::<_, Infallible>(event), reader))
        },
    );
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"))
        .into_response())
}

/// One subscriber's stream: its subscription, filtered, until shutdown.
struct Reader {
    subscription: Subscription,
    /// Live peer counts, when asked for.
    counts: Option<broadcast::Receiver<Arc<PeerCount>>>,
    filter: Filter,
    pending: VecDeque<Event>,
    shutdown: watch::Receiver<bool>,
}

impl Reader {
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            if *self.shutdown.borrow() {
                return None;
            }
            let batch = tokio::select! {
                batch = self.subscription.next() => batch,
                count = next_count(&mut self.counts) => {
                    if let Some(count) = count.filter(|c| self.filter.admits_count(c)) {
                        // No id: a count is not in the outbox, and must not
                        // move the client's Last-Event-ID.
                        self.pending.push_back(Event::default().data(&count.body));
                    }
                    continue;
                }
                _ = self.shutdown.changed() => return None,
            };
            match batch {
                Ok(Some(events)) => self.pending.extend(
                    events
                        .iter()
                        .filter(|e| self.filter.admits(e))
                        .map(|e: &Arc<StoredEvent>| Event::default().id(e.seq.to_string()).data(&e.body)),
                ),
                Ok(None) => return None,
                Err(e) => {
                    // The client reconnects with its Last-Event-ID.
                    tracing::warn!(error = %e, "the events feed could not read the outbox; closing it");
                    return None;
                }
            }
        }
    }
}

/// The next live count; forever without a subscription. A subscriber that
/// lagged skips to the newest: a count replaces the ones before it, and
/// the ones it missed were of other documents at worst (corrected by the
/// page's next `GET /api/docs`).
async fn next_count(counts: &mut Option<broadcast::Receiver<Arc<PeerCount>>>) -> Option<Arc<PeerCount>> {
    let Some(rx) = counts else {
        return std::future::pending().await;
    };
    loop {
        match rx.recv().await {
            Ok(count) => return Some(count),
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => {
                *counts = None;
                return None;
            }
        }
    }
}
