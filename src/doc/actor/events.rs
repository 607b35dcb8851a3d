//! The events the actor writes: `document.updated` (debounced, see
//! `doc::report`), `version.restored`, `peer.joined` and `peer.left`. The
//! store writes the others itself in the transaction of their change
//! (`document.created`, `document.deleted`, `version.created`).
//!
//! Events queued during a batch go with the batch's append, in its
//! transaction; a batch without updates writes them on their own. Nothing
//! is written per update: an edit costs an event only when its debounced
//! report is due.

use base64::Engine;
use serde_json::json;
use tokio::time::Instant;
use tracing::warn;
use yrs::updates::encoder::Encode;

use super::DocActor;
use crate::doc::PeerId;
use crate::event::{EventType, NewEvent};
use crate::storage::{Reported, StoredDoc};

/// Sleeps until `due`, forever without one (a `select!` branch).
pub(super) async fn until(due: Option<Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl DocActor {
    /// A document loaded with updates no `document.updated` reported: weft
    /// stopped (was killed) between committing them and reporting them.
    /// They are reported after the debounce, as if just made. Cluster
    /// mode keeps no such mark (the stream, not the store, holds the
    /// updates), so there edits in flight at a crash go unreported.
    pub(super) fn unreported_at_load(&mut self, stored: &StoredDoc) {
        let last = stored.next_seq.saturating_sub(1);
        if self.cluster.is_none() && last > stored.reported_seq {
            self.unreported.edited(Instant::now(), last - stored.reported_seq);
        }
    }

    /// Queues an event for the batch's commit.
    fn queue_event(&mut self, kind: EventType, data: serde_json::Value) {
        self.events.push(NewEvent::new(kind, Some(self.name.as_str()), data));
    }

    pub(super) fn peer_joined(&mut self, id: PeerId) {
        if !self.config.events.peers {
            return;
        }
        let data = json!({
            "peer": id.0,
            "user": self.peers.user(id),
            "readonly": self.peers.writable(id) == Some(false),
            "peers": self.peers.len(),
        });
        self.queue_event(EventType::PeerJoined, data);
    }

    pub(super) fn peer_left(&mut self, id: PeerId, user: Option<crate::doc::User>) {
        if !self.config.events.peers {
            return;
        }
        let data = json!({ "peer": id.0, "user": user, "peers": self.peers.len() });
        self.queue_event(EventType::PeerLeft, data);
    }

    pub(super) fn restored_event(&mut self, version: i64, backup: i64) {
        self.queue_event(
            EventType::VersionRestored,
            json!({ "version": version, "backup": backup }),
        );
    }

    /// Writes the events queued and not yet written with an append.
    pub(super) async fn write_queued_events(&mut self) {
        if self.events.is_empty() {
            return;
        }
        let events = std::mem::take(&mut self.events);
        if let Err(e) = self.store.emit(events, None).await {
            warn!(error = %e, "events could not be written; they are lost");
        }
    }

    /// When the next `document.updated` is due.
    pub(super) fn report_due(&self) -> Option<Instant> {
        self.unreported.due(&self.config.events)
    }

    /// Writes the `document.updated` of the edits not reported yet, with
    /// how far it reports the log (`documents.reported_seq`), in one
    /// transaction.
    ///
    /// Why the mark: a report is debounced, so an edit is committed
    /// seconds before its report is written. Were weft killed in between,
    /// an in-memory "to report" would be lost with the process and the
    /// edit never reported. The log itself is the durable record of the
    /// edit (committed before anyone saw it); the mark says how much of it
    /// has been reported, so whatever lies past the mark at start-up
    /// (`Registry::report_unreported`) or at load is reported then. It
    /// costs nothing per update: only the report writes it.
    pub(super) async fn report_updates(&mut self) {
        let Some(edits) = self.unreported.take() else {
            return;
        };
        let state_vector = self.state_vector().encode_v1();
        let mut data = json!({
            "state_vector": base64::engine::general_purpose::STANDARD.encode(state_vector),
            "size": self.log.stored_bytes(),
            "updates": edits.updates,
            "editors": edits.editors,
        });
        if edits.more_editors {
            data["more_editors"] = true.into();
        }
        let event = NewEvent::new(EventType::DocumentUpdated, Some(self.name.as_str()), data);
        let reported = self.cluster.is_none().then(|| Reported {
            doc: self.name.clone(),
            upto_seq: self.log.last_seq(),
        });
        if let Err(e) = self.store.emit(vec![event], reported).await {
            warn!(error = %e, "document.updated could not be written; retried with the next");
            self.unreported.put_back(Instant::now(), edits);
        }
    }
}
