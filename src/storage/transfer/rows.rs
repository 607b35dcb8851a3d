//! The rows of weft's tables, as both engines store them (the schemas have
//! the same columns, but for PostgreSQL's `snapshots.stream_id`), so that a
//! copy keeps every id, seq and time.

/// A `documents` row.
pub(crate) struct DocRow {
    pub id: i64,
    pub name: String,
    pub created: i64,
    pub updated: i64,
    pub size: i64,
    /// How far `document.updated` events have reported the log: without
    /// it, the copy would report every document once more at start-up.
    pub reported_seq: i64,
}

/// An `updates` row (one actor commit, see `pack`).
pub(crate) struct UpdateRow {
    pub seq: i64,
    pub data: Vec<u8>,
    pub created: i64,
    pub count: i64,
}

/// A `snapshots` row: a compaction or a version.
pub(crate) struct SnapshotRow {
    pub id: i64,
    pub kind: String,
    pub trigger: Option<String>,
    pub label: Option<String>,
    pub upto_seq: i64,
    pub state: Vec<u8>,
    pub state_vector: Vec<u8>,
    pub created: i64,
    pub digest: Option<Vec<u8>>,
    /// Cluster mode (PostgreSQL only): the last Redis stream entry the
    /// snapshot covers. SQLite has no such column: `None` from it, and
    /// dropped into it (a single node reads no stream).
    pub stream_id: Option<String>,
}

/// A `revoked_tokens` row.
pub(crate) struct RevokedRow {
    pub token_id: String,
    pub revoked_at: i64,
    pub expires_at: i64,
}

/// Everything stored of one document.
pub(crate) struct DocDump {
    pub doc: DocRow,
    pub updates: Vec<UpdateRow>,
    pub snapshots: Vec<SnapshotRow>,
}

/// An `events` row: the outbox, with its seq (the webhooks' cursors and
/// the SSE feed's `Last-Event-ID` are seqs).
pub(crate) struct EventRow {
    pub seq: i64,
    pub id: String,
    pub kind: String,
    pub document: Option<String>,
    pub created: i64,
    pub body: String,
}

/// A `webhooks` row: a subscription made through the API.
pub(crate) struct WebhookRow {
    pub id: String,
    pub url: String,
    pub secret: String,
    pub events: Option<String>,
    pub prefix: Option<String>,
    pub content: bool,
    pub created: i64,
}

/// A `webhook_cursors` row.
pub(crate) struct CursorRow {
    pub webhook_id: String,
    pub seq: i64,
    pub updated: i64,
}

/// A `webhook_failures` row.
pub(crate) struct FailureRow {
    pub id: i64,
    pub webhook_id: String,
    pub event_seq: i64,
    pub event_id: String,
    pub event_type: String,
    pub attempts: i32,
    pub last_status: Option<i32>,
    pub last_error: String,
    pub failed: i64,
}

/// The webhook tables, whole: subscriptions, cursors (the `--webhook`
/// ones' too) and failures (at most 1,000 per subscription).
#[derive(Default)]
pub(crate) struct WebhookDump {
    pub webhooks: Vec<WebhookRow>,
    pub cursors: Vec<CursorRow>,
    pub failures: Vec<FailureRow>,
}

/// Events copied per transaction.
pub(crate) const EVENT_PAGE: i64 = 1000;

pub(crate) const DOC_COLUMNS: &str = "id, name, created_at, updated_at, size_bytes, reported_seq";
pub(crate) const EVENT_COLUMNS: &str = "seq, id, type, document, created_at, body";
pub(crate) const WEBHOOK_COLUMNS: &str = "id, url, secret, events, prefix, content, created_at";
pub(crate) const CURSOR_COLUMNS: &str = "webhook_id, seq, updated_at";
pub(crate) const FAILURE_COLUMNS: &str =
    "id, webhook_id, event_seq, event_id, event_type, attempts, last_status, last_error, failed_at";
/// The tables that must be empty in a target: a copy merged into another
/// database's would mix two histories (and two outboxes' seqs).
pub(crate) const MUST_BE_EMPTY: [&str; 4] = ["documents", "events", "webhooks", "webhook_cursors"];
pub(crate) const UPDATE_COLUMNS: &str = "seq, data, created_at, count";
pub(crate) const SNAPSHOT_COLUMNS: &str = "id, kind, trigger, label, upto_seq, state, state_vector, created_at, digest";
pub(crate) const REVOKED_COLUMNS: &str = "token_id, revoked_at, expires_at";
