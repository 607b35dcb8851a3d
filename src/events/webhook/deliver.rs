//! One subscription's delivery task: reads the outbox after its cursor,
//! in order, and posts each event it wants until the receiver takes it or
//! the attempts run out; then the cursor moves past it.
//!
//! Sequential per subscription (one request in flight per destination, on
//! one kept connection, `client::Link`): events arrive in order, and a
//! receiver that is slow or down holds only its own subscription back.
//! Memory is bounded by one page of the outbox ([`PAGE`]) per
//! subscription; a hanging receiver costs the attempt's timeout, nothing
//! more.
//!
//! The cursor moves in memory at once (the feed's pruning floor follows
//! it) and is stored at most every [`STORE_EVERY`], and when delivery
//! goes idle that long after it moved: one row write per busy interval
//! instead of one per event, each a store transaction on the writer that
//! commits edits. A failure record is stored at once, with the cursor. A
//! SIGKILL sends again after the restart what was delivered since the
//! cursor was last stored (at most [`STORE_EVERY`] of deliveries):
//! delivery is at least once, and receivers deduplicate by `webhook-id`.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::client::{Client, Link, Outcome};
use super::policy::{judge, next_wait, random_unit, Verdict};
use super::subscription::Subscription;
use super::Shared;
use crate::clock::{now_ms, now_secs};
use crate::events::Feed;
use crate::metrics::WebhookCounters;
use crate::name::DocName;
use crate::storage::{StoredEvent, WebhookFailure, WebhookWrite};

/// Events read from the outbox at once.
pub const PAGE: usize = 64;
/// How long to wait after the store failed a read or a cursor write.
const STORE_RETRY: Duration = Duration::from_secs(1);
/// How often a moving cursor is stored (see the module's doc).
pub const STORE_EVERY: Duration = Duration::from_millis(500);

/// How one event ended.
enum Delivery {
    Delivered,
    Failed {
        attempts: u32,
        status: Option<u16>,
        error: String,
    },
    /// Delivery is stopping (shutdown, deletion, lease lost): the cursor
    /// stays before this event, which is sent again by whoever resumes.
    Stopped,
}

pub(super) async fn run(shared: Arc<Shared>, sub: Arc<Subscription>, mut cursor: i64, stop: CancellationToken) {
    let counters = shared.metrics.webhooks.counters(&sub.id);
    let mut latest = shared.feed.latest();
    let mut link = Link::default();
    // What the store holds; `cursor` runs ahead of it by what was
    // delivered (or skipped) since `stored_at`.
    let mut stored = cursor;
    let mut stored_at = tokio::time::Instant::now();
    debug!(webhook = %sub.id, cursor, "delivery started");
    loop {
        let page = tokio::select! {
            page = shared.store.events_after(cursor, PAGE) => page,
            () = stop.cancelled() => return store_at_stop(&shared, &sub, stored, cursor).await,
        };
        let events = match page {
            Ok(events) => events,
            Err(e) => {
                warn!(webhook = %sub.id, error = %e, "cannot read the events outbox; trying again");
                if sleep_or_stop(STORE_RETRY, &stop).await {
                    return store_at_stop(&shared, &sub, stored, cursor).await;
                }
                continue;
            }
        };
        if events.is_empty() {
            // Idle: the cursor is stored once nothing more came for
            // STORE_EVERY after it last was.
            let store_due = (stored < cursor).then_some(stored_at + STORE_EVERY);
            tokio::select! {
                // `latest` may say nothing new for a while in cluster mode
                // (it is polled); waking on it is what makes delivery prompt.
                closed = async { latest.wait_for(|&seq| seq > cursor).await.is_err() } => {
                    if closed {
                        return store_at_stop(&shared, &sub, stored, cursor).await;
                    }
                }
                () = until(store_due) => {
                    if !persist(&shared, &sub, cursor, None, &stop).await {
                        return;
                    }
                    (stored, stored_at) = (cursor, tokio::time::Instant::now());
                }
                () = stop.cancelled() => return store_at_stop(&shared, &sub, stored, cursor).await,
            }
            continue;
        }
        for event in events {
            if !sub.wants(&event.kind, event.document.as_deref()) {
                cursor = event.seq;
                shared.cursor_moved(&sub.id, cursor);
                continue;
            }
            let failure = match deliver(&shared, &sub, &event, &counters, &mut link, &stop).await {
                Delivery::Delivered => None,
                Delivery::Failed {
                    attempts,
                    status,
                    error,
                } => {
                    warn!(webhook = %sub.id, event = %event.id, attempts, error = %error, "webhook event failed; moving on");
                    Some(WebhookFailure {
                        webhook_id: sub.id.clone(),
                        event_seq: event.seq,
                        event_id: event.id.clone(),
                        event_type: event.kind.clone(),
                        attempts,
                        last_status: status,
                        last_error: error,
                        failed_ms: now_ms(),
                    })
                }
                Delivery::Stopped => return store_at_stop(&shared, &sub, stored, cursor).await,
            };
            cursor = event.seq;
            if failure.is_some() || stored_at.elapsed() >= STORE_EVERY {
                if !persist(&shared, &sub, cursor, failure, &stop).await {
                    return;
                }
                (stored, stored_at) = (cursor, tokio::time::Instant::now());
            } else {
                shared.cursor_moved(&sub.id, cursor);
            }
        }
    }
}

/// Delivery stops (shutdown, deletion, lease lost): one try at storing
/// the cursor, so that a restart does not send again what was delivered;
/// not for a subscription deleted meanwhile (its row is gone). Cursors
/// only move forward, so a late write after a lease changed hands is
/// harmless.
async fn store_at_stop(shared: &Shared, sub: &Subscription, stored: i64, cursor: i64) {
    if stored >= cursor || !shared.subscribed(&sub.id) {
        return;
    }
    let op = WebhookWrite::Cursor {
        webhook_id: sub.id.clone(),
        seq: cursor,
    };
    if let Ok(Err(e)) = tokio::time::timeout(STORE_RETRY, shared.store.webhook_write(op)).await {
        debug!(webhook = %sub.id, error = %e, "could not store the cursor at stop; those events will be sent again");
    }
}

/// Stores the cursor (with the failure, if any), retrying while the store
/// fails: moving on without it would risk losing a failure record, and
/// staying put only delays. `false`: stopped meanwhile.
async fn persist(
    shared: &Shared,
    sub: &Subscription,
    cursor: i64,
    failure: Option<WebhookFailure>,
    stop: &CancellationToken,
) -> bool {
    let op = match failure {
        Some(f) => WebhookWrite::Failed(f),
        None => WebhookWrite::Cursor {
            webhook_id: sub.id.clone(),
            seq: cursor,
        },
    };
    loop {
        match shared.store.webhook_write(op.clone()).await {
            Ok(_) => {
                shared.cursor_moved(&sub.id, cursor);
                return true;
            }
            Err(e) => {
                warn!(webhook = %sub.id, error = %e, "cannot store the webhook cursor; trying again");
                if sleep_or_stop(STORE_RETRY, stop).await {
                    return false;
                }
            }
        }
    }
}

/// Every attempt at one event, with the backoff between them.
async fn deliver(
    shared: &Shared,
    sub: &Subscription,
    event: &StoredEvent,
    counters: &WebhookCounters,
    link: &mut Link,
    stop: &CancellationToken,
) -> Delivery {
    let body = body_for(&shared.feed, sub, event).await;
    let max = shared.settings.max_attempts.max(1);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let timestamp = now_secs();
        let headers = [
            ("webhook-id", event.id.clone()),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", sub.secret.sign(&event.id, timestamp, &body)),
        ];
        let started = Instant::now();
        let outcome = tokio::select! {
            outcome = post(&shared.client, link, sub, &headers, body.clone(), shared.settings.timeout) => outcome,
            () = stop.cancelled() => return Delivery::Stopped,
        };
        shared.metrics.webhooks.record_attempt(started.elapsed());
        let status = match outcome {
            Outcome::Status(s) | Outcome::Later(s, _) => Some(s),
            _ => None,
        };
        match judge(&outcome) {
            Verdict::Delivered => {
                counters.delivered.fetch_add(1, Relaxed);
                shared.metrics.webhooks.record_delivered(now_ms() - event.created_ms);
                counters.failing.store(0, Relaxed);
                if attempt > 1 {
                    info!(webhook = %sub.id, event = %event.id, attempt, "webhook event delivered after retries");
                }
                return Delivery::Delivered;
            }
            Verdict::Final(error) => return failed(counters, attempt, status, error),
            Verdict::Retry(error) if attempt >= max => {
                return failed(counters, attempt, status, format!("{error} (after {attempt} attempts)"))
            }
            Verdict::Retry(error) => {
                counters.retried.fetch_add(1, Relaxed);
                counters.failing.store(1, Relaxed);
                let wait = next_wait(&outcome, attempt, random_unit());
                debug!(webhook = %sub.id, event = %event.id, attempt, error = %error, ?wait, "webhook attempt failed; retrying");
                if sleep_or_stop(wait, stop).await {
                    return Delivery::Stopped;
                }
            }
        }
    }
}

fn failed(counters: &WebhookCounters, attempts: u32, status: Option<u16>, error: String) -> Delivery {
    counters.failed.fetch_add(1, Relaxed);
    counters.failing.store(0, Relaxed);
    Delivery::Failed {
        attempts,
        status,
        error,
    }
}

async fn post(
    client: &Client,
    link: &mut Link,
    sub: &Subscription,
    headers: &[(&str, String); 3],
    body: Bytes,
    timeout: Duration,
) -> Outcome {
    client.post(link, &sub.url, headers, body, timeout).await
}

/// The body: the stored envelope, byte for byte; for a subscription with
/// `content`, a `document.updated` envelope gets `data.content`, the
/// document as JSON at delivery time (not at the event's time: the
/// content is read when it is sent, and a later event follows anyway).
async fn body_for(feed: &Feed, sub: &Subscription, event: &StoredEvent) -> Bytes {
    let plain = || Bytes::from(event.body.clone());
    let wanted = sub.content && event.kind == "document.updated";
    let Some(doc) = event.document.as_deref().filter(|_| wanted) else {
        return plain();
    };
    let Ok(doc) = DocName::parse(doc) else {
        return plain();
    };
    let Ok(mut envelope) = serde_json::from_str::<serde_json::Value>(&event.body) else {
        return plain();
    };
    let Ok(value) = feed.content(doc).await else {
        return plain();
    };
    if let Some(data) = envelope.get_mut("data").and_then(|d| d.as_object_mut()) {
        data.insert("content".into(), value);
    }
    serde_json::to_vec(&envelope)
        .map(Bytes::from)
        .unwrap_or_else(|_| plain())
}

/// Sleeps until `due`, forever without one (a `select!` branch).
async fn until(due: Option<tokio::time::Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Sleeps for `wait`; `true` if stopped meanwhile.
async fn sleep_or_stop(wait: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(wait) => false,
        () = stop.cancelled() => true,
    }
}
