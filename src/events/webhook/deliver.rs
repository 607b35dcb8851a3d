//! One subscription's delivery task: reads the outbox after its cursor,
//! in order, and posts each event it wants until the receiver takes it or
//! the attempts run out; then the cursor moves past it and is stored.
//!
//! Sequential per subscription (one request in flight per destination):
//! events arrive in order, and a receiver that is slow or down holds only
//! its own subscription back. Memory is bounded by one page of the outbox
//! ([`PAGE`]) per subscription; a hanging receiver costs the attempt's
//! timeout, nothing more. A SIGKILL between an accepted POST and the
//! cursor's commit sends that event again after the restart: delivery is
//! at least once, and receivers deduplicate by `webhook-id`.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::client::{Client, Outcome};
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
    debug!(webhook = %sub.id, cursor, "delivery started");
    loop {
        let page = tokio::select! {
            page = shared.store.events_after(cursor, PAGE) => page,
            () = stop.cancelled() => return,
        };
        let events = match page {
            Ok(events) => events,
            Err(e) => {
                warn!(webhook = %sub.id, error = %e, "cannot read the events outbox; trying again");
                if sleep_or_stop(STORE_RETRY, &stop).await {
                    return;
                }
                continue;
            }
        };
        if events.is_empty() {
            tokio::select! {
                // `latest` may say nothing new for a while in cluster mode
                // (it is polled); waking on it is what makes delivery prompt.
                changed = latest.wait_for(|&seq| seq > cursor) => {
                    if changed.is_err() {
                        return;
                    }
                }
                () = stop.cancelled() => return,
            }
            continue;
        }
        let mut skipped = false;
        for event in events {
            if !sub.wants(&event.kind, event.document.as_deref()) {
                cursor = event.seq;
                skipped = true;
                continue;
            }
            if skipped {
                // Before a delivery that may take long, so that the floor
                // and the stored cursor do not hold events nobody wants.
                persist(&shared, &sub, cursor, None, &stop).await;
                skipped = false;
            }
            let failure = match deliver(&shared, &sub, &event, &counters, &stop).await {
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
                Delivery::Stopped => return,
            };
            cursor = event.seq;
            if !persist(&shared, &sub, cursor, failure, &stop).await {
                return;
            }
        }
        if skipped {
            persist(&shared, &sub, cursor, None, &stop).await;
        }
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
            outcome = post(&shared.client, sub, &headers, body.clone(), shared.settings.timeout) => outcome,
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
    sub: &Subscription,
    headers: &[(&str, String); 3],
    body: Bytes,
    timeout: Duration,
) -> Outcome {
    client.post(&sub.url, headers, body, timeout).await
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

/// Sleeps for `wait`; `true` if stopped meanwhile.
async fn sleep_or_stop(wait: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(wait) => false,
        () = stop.cancelled() => true,
    }
}
