//! One attachment's writer (see the parent module): drains its peer's
//! queue into the shared socket, each frame behind the address, and ends
//! the attachment when the actor lets go, kicks the peer, or its token ends.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Sink, SinkExt};
use tokio::sync::mpsc;
use tracing::warn;
use weft_core::hocuspocus as hp;

use super::{Ended, SharedSink};
use crate::close::{self, CloseReason, Closer};
use crate::doc::{OutboxReceiver, PeerId};
use crate::metrics::Metrics;
use crate::session::{Lease, Outgoing, CLOSE_GRACE, WRITE_BATCH};

/// Whether a close reason asks the client to come back later, which only
/// a reconnect of the whole socket does for a provider.
fn comes_back(reason: &CloseReason) -> bool {
    matches!(
        reason.code,
        close::GOING_AWAY | close::SLOW_CONSUMER | close::STORAGE_FAILED
    )
}

/// What the provider reads in the close message of a document whose token
/// ended: Hocuspocus's own reasons (`@hocuspocus/common`), which
/// applications compare against.
fn provider_reason(reason: &CloseReason) -> &str {
    match reason.code {
        close::TOKEN_EXPIRED => "Unauthorized",
        close::TOKEN_REVOKED => "Forbidden",
        _ => &reason.reason,
    }
}

/// One attachment's writer: drains the peer's queue into the socket, each
/// frame behind the address, until the actor lets go of the peer, kicks
/// it, or its token ends; then tells the reader.
pub(super) struct Forwarder<K> {
    pub(super) sink: SharedSink<K>,
    pub(super) address: Arc<str>,
    pub(super) peer: PeerId,
    pub(super) outbox: OutboxReceiver,
    pub(super) closer: Closer,
    pub(super) lease: Option<Lease>,
    pub(super) ended: mpsc::UnboundedSender<Ended>,
    pub(super) metrics: Arc<Metrics>,
}

impl<K> Forwarder<K>
where
    K: Sink<Outgoing> + Unpin + Send + 'static,
    K::Error: std::fmt::Display,
{
    pub(super) async fn run(self) {
        let Self {
            sink,
            address,
            peer,
            mut outbox,
            closer,
            mut lease,
            ended,
            metrics,
        } = self;
        let mut batch: Vec<Bytes> = Vec::with_capacity(16);
        let reason = loop {
            tokio::select! {
                biased;
                reason = closer.closed() => break Some(reason),
                reason = Lease::end(lease.as_mut()) => {
                    // The actor counts its own kicks; the token's end is ours.
                    if let Some(kick) = reason.kick {
                        metrics.kick(kick);
                    }
                    break Some(reason);
                }
                n = outbox.recv_many(&mut batch, WRITE_BATCH) => {
                    if n == 0 {
                        // The actor let go; when it kicked the peer, the reason
                        // was sent just before.
                        break closer.take();
                    }
                    let mut socket = sink.lock().await;
                    for frame in &batch {
                        if socket.feed(Outgoing::Binary(hp::address(&address, frame))).await.is_err() {
                            return;
                        }
                    }
                    if socket.flush().await.is_err() {
                        return;
                    }
                    drop(socket);
                    outbox.written(&batch);
                    batch.clear();
                }
            }
        };
        let reason =
            reason.unwrap_or_else(|| CloseReason::new(close::GOING_AWAY, "Server closed the connection", None));
        let socket = if comes_back(&reason) {
            Some(reason)
        } else {
            warn!(%peer, code = reason.code, reason = %reason.reason, "detaching the document");
            let frame = hp::address(&address, &hp::close(provider_reason(&reason)));
            let _ = tokio::time::timeout(CLOSE_GRACE, async {
                sink.lock().await.send(Outgoing::Binary(frame)).await
            })
            .await;
            None
        };
        let _ = ended.send(Ended { address, peer, socket });
    }
}
