//! The events a store writes on its own, inside the transaction of the
//! change they report (`document.created` with a document's row, and so
//! on), and the signal a writer gives after committing events. Shared by
//! both stores and the in-memory one, so their envelopes agree.

use serde_json::json;
use tokio::sync::watch;

use super::VersionMeta;
use crate::event::{EventType, NewEvent};
use crate::metrics::Metrics;
use crate::name::DocName;

pub(crate) fn document_created(doc: &DocName) -> NewEvent {
    NewEvent::new(EventType::DocumentCreated, Some(doc.as_str()), json!({}))
}

pub(crate) fn document_deleted(doc: &DocName) -> NewEvent {
    NewEvent::new(EventType::DocumentDeleted, Some(doc.as_str()), json!({}))
}

pub(crate) fn version_created(doc: &DocName, meta: &VersionMeta) -> NewEvent {
    NewEvent::new(
        EventType::VersionCreated,
        Some(doc.as_str()),
        json!({
            "id": meta.id,
            "label": meta.label,
            "kind": meta.kind.as_str(),
            "size": meta.size,
        }),
    )
}

/// A revoked token: its id (`jti`) and when it would have expired (Unix
/// seconds). No document: a token may cover many.
pub(crate) fn token_revoked(token_id: &str, expires_at: u64) -> NewEvent {
    NewEvent::new(
        EventType::TokenRevoked,
        None,
        json!({"token": token_id, "expires": expires_at}),
    )
}

/// What one transaction wrote to the outbox, told to the watchers and
/// counted (`weft_events_emitted_total`) only once it commits.
#[derive(Debug, Default)]
pub(crate) struct Written {
    /// The highest seq written.
    last_seq: i64,
    /// The type of each event written, in order.
    kinds: Vec<EventType>,
}

impl Written {
    pub(crate) fn wrote(&mut self, seq: i64, kind: EventType) {
        self.last_seq = self.last_seq.max(seq);
        self.kinds.push(kind);
    }

    /// A mark to roll back to when a savepoint is rolled back.
    pub(crate) fn mark(&self) -> usize {
        self.kinds.len()
    }

    /// The events written since `mark` were rolled back. (`last_seq` stays:
    /// past the last committed one, it only wakes readers for nothing.)
    pub(crate) fn roll_back_to(&mut self, mark: usize) {
        self.kinds.truncate(mark);
    }

    /// The transaction committed: counts its events and wakes the watchers.
    pub(crate) fn committed(self, signal: &watch::Sender<i64>, metrics: &Metrics) {
        for kind in self.kinds {
            metrics.event_emitted(kind);
        }
        if self.last_seq > 0 {
            committed(signal, self.last_seq);
        }
    }
}

/// Tells the store's watchers that events up to `seq` are committed.
pub(crate) fn committed(signal: &watch::Sender<i64>, seq: i64) {
    signal.send_if_modified(|known| {
        let newer = seq > *known;
        if newer {
            *known = seq;
        }
        newer
    });
}
