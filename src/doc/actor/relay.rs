//! Relaying a committed batch's updates: consecutive updates from one
//! sender go out as one frame, joined by moving bytes (`weft_core::concat`).
//!
//! A fast writer's updates reach the actor many to a batch; relayed one by
//! one, each reader takes a frame per update, and the per-frame cost
//! (queueing, framing, waking the reader's connection task, the client's decode)
//! is most of what fan-out costs. Joined, it takes one frame per batch, as
//! Hocuspocus's broadcasts do, but without re-encoding: JSON objects keep
//! the key order their client wrote.

use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;

use super::{DocActor, Effect, Origin};
use crate::doc::handle::Reply;
use crate::doc::PeerId;
use crate::protocol;
use weft_core::hocuspocus;

impl DocActor {
    /// Performs a committed batch's effects in order, except that
    /// consecutive relays from one sender go out as one frame (see
    /// [`Relays`]).
    pub(super) fn perform_all(&mut self, effects: Vec<Effect>) {
        let mut run = Relays::default();
        for effect in effects {
            match effect {
                Effect::Relay {
                    origin,
                    raw,
                    frame,
                    received,
                } => {
                    let except = match &origin {
                        Origin::Peer(id) => Some(*id),
                        Origin::Api(_) | Origin::Actor => None,
                    };
                    if !run.admits(except, raw.len()) {
                        self.relay(&mut run);
                    }
                    run.push(except, raw, frame, received);
                    if let Origin::Api(reply) = origin {
                        run.replies.push(reply);
                    }
                }
                // Only the run's sender hears it, and the run's frame never
                // reaches that sender: their order does not matter to anyone.
                Effect::SyncStatus { peer, applied } if run.except == Some(Some(peer)) => {
                    self.send(peer, hocuspocus::sync_status(applied));
                }
                other => {
                    self.relay(&mut run);
                    self.perform(other);
                }
            }
        }
        self.relay(&mut run);
    }

    /// Sends a run of relays: one frame joining its updates when there are
    /// several and they join, else each update's own frame.
    fn relay(&mut self, run: &mut Relays) {
        let Some(except) = run.except.take() else { return };
        let frames = std::mem::take(&mut run.frames);
        let raws = std::mem::take(&mut run.raws);
        let joined = match raws.len() {
            0 | 1 => None,
            n => {
                let slices: Vec<&[u8]> = raws.iter().map(|r| r.as_ref()).collect();
                let joined = weft_core::concat::concat_v1(&slices);
                if joined.is_some() {
                    self.metrics.updates_joined.fetch_add(n as u64, Relaxed);
                }
                joined
            }
        };
        match joined {
            Some(update) => self.broadcast(protocol::encode_update(&update), except),
            None => {
                for frame in frames {
                    self.broadcast(frame, except);
                }
            }
        }
        for received in run.received.drain(..) {
            self.metrics.record_relay(received);
        }
        for reply in run.replies.drain(..) {
            let _ = reply.send(Ok(()));
        }
        run.bytes = 0;
    }
}

/// Most bytes of updates one relayed frame joins: a joined frame is one
/// message for every reader (and one entry of each peer's queue), so it
/// stays well below the frame sizes clients and proxies accept.
const JOIN_BYTES: usize = 256 * 1024;

/// Consecutive relays of a committed batch from one sender (or from the
/// API and the actor, which every peer gets), to go out as one frame.
///
/// A fast writer's updates reach the actor many to a batch; relayed one by
/// one, each reader takes a frame per update, and the per-frame cost
/// (queueing, framing, waking the reader's connection task, the client's
/// decode) is most of what fan-out costs. Joined, it takes one frame per
/// batch, as Hocuspocus's broadcasts do, but without re-encoding: the
/// updates' bytes are moved, not decoded (`weft_core::concat`).
#[derive(Default)]
struct Relays {
    /// Whom the run leaves out (`Some(None)`: nobody); `None`: empty run.
    except: Option<Option<PeerId>>,
    raws: Vec<Bytes>,
    frames: Vec<Bytes>,
    bytes: usize,
    received: Vec<std::time::Instant>,
    replies: Vec<Reply<()>>,
}

impl Relays {
    fn admits(&self, except: Option<PeerId>, len: usize) -> bool {
        match self.except {
            None => true,
            Some(e) => e == except && self.bytes + len <= JOIN_BYTES,
        }
    }

    fn push(&mut self, except: Option<PeerId>, raw: Bytes, frame: Bytes, received: Option<std::time::Instant>) {
        self.except = Some(except);
        self.bytes += raw.len();
        self.raws.push(raw);
        self.frames.push(frame);
        self.received.extend(received);
    }
}
