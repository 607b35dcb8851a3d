//! The rows of weft's four tables, as both engines store them (the schemas
//! have the same columns), so that a copy keeps every id and time.

/// A `documents` row.
pub(crate) struct DocRow {
    pub id: i64,
    pub name: String,
    pub created: i64,
    pub updated: i64,
    pub size: i64,
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

pub(crate) const DOC_COLUMNS: &str = "id, name, created_at, updated_at, size_bytes";
pub(crate) const UPDATE_COLUMNS: &str = "seq, data, created_at, count";
pub(crate) const SNAPSHOT_COLUMNS: &str = "id, kind, trigger, label, upto_seq, state, state_vector, created_at, digest";
pub(crate) const REVOKED_COLUMNS: &str = "token_id, revoked_at, expires_at";
