//! What the store keeps for webhook delivery (issue 16): subscriptions made
//! through the API, each subscription's cursor in the events outbox, and
//! the events a subscription gave up on. The rules (who may subscribe,
//! what is delivered when) are the events layer's (`events::webhook`);
//! the store only keeps rows.

/// Failures kept per subscription: the newest ones; older ones are deleted
/// as new ones arrive, so a receiver that is down for a week costs a
/// bounded number of rows.
pub const MAX_FAILURES_KEPT: i64 = 1000;

/// A subscription made through the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredWebhook {
    pub id: String,
    pub url: String,
    /// `whsec_<base64>`.
    pub secret: String,
    /// Event types (their dotted names); `None`: the default set.
    pub events: Option<Vec<String>>,
    pub prefix: Option<String>,
    pub content: bool,
    /// Unix milliseconds.
    pub created_ms: i64,
}

/// An event a subscription gave up on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookFailure {
    pub webhook_id: String,
    pub event_seq: i64,
    pub event_id: String,
    pub event_type: String,
    pub attempts: u32,
    /// The receiver's last HTTP status, if it answered at all.
    pub last_status: Option<u16>,
    pub last_error: String,
    /// Unix milliseconds.
    pub failed_ms: i64,
}

/// A write to the webhook tables. Each goes through the store's writer
/// (one transaction with whatever else it commits).
#[derive(Debug, Clone)]
pub enum WebhookWrite {
    Add(StoredWebhook),
    /// Removes the subscription, its cursor and its failures; `false` if
    /// there was none of them.
    Delete {
        id: String,
    },
    /// Delivery has dealt with every event up to `seq`.
    Cursor {
        webhook_id: String,
        seq: i64,
    },
    /// An event given up on, and the cursor moved past it, in one commit.
    Failed(WebhookFailure),
}

/// `events` as stored: a JSON array, or NULL.
pub(crate) fn events_to_text(events: &Option<Vec<String>>) -> Option<String> {
    events
        .as_ref()
        .map(|e| serde_json::to_string(e).unwrap_or_else(|_| "[]".into()))
}

pub(crate) fn events_from_text(text: Option<String>) -> Option<Vec<String>> {
    text.map(|t| serde_json::from_str(&t).unwrap_or_default())
}
