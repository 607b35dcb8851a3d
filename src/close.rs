//! Why weft closes a WebSocket connection: one close code per reason.
//!
//! The y-websocket 3.x client treats codes 4400-4499 as permanent (it stops
//! reconnecting and emits `closed`) and every other code as transient (it
//! reconnects with back-off, then resyncs through step1/step2). The codes are
//! chosen with that in mind: a peer that was too slow, or whose update could
//! not be stored, should come back; a peer that sent garbage should not loop.

use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::metrics::Kick;

/// A close frame to send: code, a reason for humans (at most 123 bytes on the
/// wire), and the metric it counts under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    pub code: u16,
    pub reason: String,
    pub kick: Option<Kick>,
}

/// 1001: the server is shutting down. Transient: the client reconnects.
pub const GOING_AWAY: u16 = 1001;
/// 1003: a text frame; the y-websocket protocol is binary only.
pub const TEXT_FRAME: u16 = 1003;
/// 1009: a frame over `--max-message-size`.
pub const TOO_BIG: u16 = 1009;
/// 4400: a frame that does not decode as y-sync/awareness messages.
pub const BAD_MESSAGE: u16 = 4400;
/// 4404: the document was deleted through the HTTP API.
pub const DELETED: u16 = 4404;
/// 4401: the connection's access token expired. Permanent: the client needs a
/// new token (reconnecting with the old one is refused with 401).
pub const TOKEN_EXPIRED: u16 = 4401;
/// 4403: the connection's access token was revoked.
pub const TOKEN_REVOKED: u16 = 4403;
/// 4413: an update would grow the document past `--max-doc-size` or
/// `--max-doc-types`.
pub const DOC_TOO_LARGE: u16 = 4413;
/// 4429: more messages than `--rate-limit` allows.
pub const RATE_LIMITED: u16 = 4429;
/// 4422: an update that decodes but the document refuses to apply.
pub const BAD_UPDATE: u16 = 4422;
/// 4500: the update could not be stored (disk full, database locked...), so
/// it was not relayed. Transient: the client reconnects and resends it.
pub const STORAGE_FAILED: u16 = 4500;
/// 4503: the peer's outbound queue was full (`--peer-queue` frames or
/// `--peer-queue-bytes` bytes): it reads slower than the document changes. Transient: it reconnects and catches up with one step2.
pub const SLOW_CONSUMER: u16 = 4503;

/// Longest close reason the WebSocket protocol carries.
const MAX_REASON: usize = 123;

impl CloseReason {
    pub fn new(code: u16, reason: impl Into<String>, kick: Option<Kick>) -> Self {
        let mut reason = reason.into();
        if reason.len() > MAX_REASON {
            let mut end = MAX_REASON;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
        }
        Self { code, reason, kick }
    }

    pub fn going_away() -> Self {
        Self::new(GOING_AWAY, "server shutting down", None)
    }

    /// `frames` and `bytes`: the queue's limits (`bytes` 0: none).
    pub fn slow_consumer(frames: usize, bytes: usize) -> Self {
        let limit = match bytes {
            0 => format!("{frames} frames"),
            bytes => format!("{frames} frames or {bytes} bytes"),
        };
        Self::new(
            SLOW_CONSUMER,
            format!("too slow: over {limit} waiting; reconnect to resync"),
            Some(Kick::SlowConsumer),
        )
    }

    pub fn storage_failed() -> Self {
        Self::new(
            STORAGE_FAILED,
            "could not store your update; reconnect to retry",
            Some(Kick::StorageFailed),
        )
    }

    pub fn bad_update(detail: &str) -> Self {
        Self::new(BAD_UPDATE, format!("update refused: {detail}"), Some(Kick::BadUpdate))
    }

    pub fn doc_too_large(limit: u64) -> Self {
        Self::new(
            DOC_TOO_LARGE,
            format!("document is at its size limit of {limit} bytes; the update was not stored"),
            Some(Kick::DocTooLarge),
        )
    }

    pub fn too_many_types(limit: u64) -> Self {
        Self::new(
            DOC_TOO_LARGE,
            format!("document is at its limit of {limit} shared types; the update was not stored"),
            Some(Kick::DocTooLarge),
        )
    }

    pub fn deleted() -> Self {
        Self::new(DELETED, "document deleted", Some(Kick::Deleted))
    }
}

/// A connection's request to close: the first reason given wins, and the
/// connection's writer waits for it. What a channel of one would do, in a
/// few words instead of the kilobyte a tokio channel allocates up front for
/// its first block (every open connection holds one; bench/FINDINGS.md).
#[derive(Debug, Clone, Default)]
pub struct Closer(Arc<Slot>);

#[derive(Debug, Default)]
struct Slot {
    reason: Mutex<Option<CloseReason>>,
    given: Notify,
}

impl Closer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks for the connection to close with `reason`; ignored when a
    /// reason is waiting already.
    pub fn close(&self, reason: CloseReason) {
        let mut slot = self.0.reason.lock().unwrap();
        if slot.is_none() {
            *slot = Some(reason);
            drop(slot);
            self.0.given.notify_one();
        }
    }

    /// The reason waiting, if any, taken.
    pub fn take(&self) -> Option<CloseReason> {
        self.0.reason.lock().unwrap().take()
    }

    /// Waits for a reason and takes it. (A reason given before the wait
    /// began left a permit in `Notify`, so none is missed.)
    pub async fn closed(&self) -> CloseReason {
        loop {
            if let Some(reason) = self.take() {
                return reason;
            }
            self.0.given.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_reasons_are_cut_on_a_char_boundary() {
        let r = CloseReason::new(4400, "é".repeat(100), None);
        assert!(r.reason.len() <= MAX_REASON);
        assert!(r.reason.chars().all(|c| c == 'é'));
    }

    #[tokio::test]
    async fn the_first_reason_wins_and_a_waiting_writer_gets_it() {
        let closer = Closer::new();
        assert_eq!(closer.take(), None);
        let writer = closer.clone();
        let waiting = tokio::spawn(async move { writer.closed().await });
        tokio::task::yield_now().await;
        closer.close(CloseReason::going_away());
        closer.close(CloseReason::new(4503, "second", None));
        assert_eq!(waiting.await.unwrap().code, GOING_AWAY);
        // Taken: the slot is free again, as a channel's would be.
        assert_eq!(closer.take(), None);
        closer.close(CloseReason::new(4503, "later", None));
        assert_eq!(closer.closed().await.code, 4503);
    }
}
