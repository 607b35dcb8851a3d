//! A peer's outbound queue, bounded in frames and in bytes.
//!
//! The actor only ever `try_send`s; the connection's writer drains the queue.
//! A frame count alone does not bound memory: 1,024 answers of 5 MB each
//! are 5 GB. So the queue also counts the bytes of the frames queued or
//! being written, against a budget (`--peer-queue-bytes`). A peer whose
//! frame would not fit is too slow and is disconnected by the actor.
//!
//! One frame larger than the whole budget is let through at a time (it does
//! not count against the budget, and a second one waits for the first to be
//! written): the full state of a document bigger than the budget must still
//! reach a peer that syncs it. A peer's queue thus holds at most the budget
//! plus one frame.
//!
//! The writer also counts the frames it has written, so the actor can tell
//! whether an answer it queued is still waiting (see `Outbox::waiting`).
//!
//! Not a tokio `mpsc` channel: that allocates its first block of slots (32
//! `Bytes`, 1 KiB) when it is made, and every connection has a queue, most
//! of them empty most of the time. Here the queue is a `VecDeque` that
//! allocates when a frame comes and gives its room back once drained, with
//! the byte accounting in the same allocation (`bench/FINDINGS.md`, *Memory
//! per connection*).

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::task::AtomicWaker;

/// Creates a queue holding at most `frames` frames and `bytes` bytes (0: no
/// byte limit).
pub fn outbox(frames: usize, bytes: usize) -> (Outbox, OutboxReceiver) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue {
            frames: VecDeque::new(),
            senders: 1,
            receiving: true,
        }),
        max_frames: frames.max(1),
        ready: AtomicWaker::new(),
        budget: Budget::new(bytes),
    });
    (Outbox { shared: shared.clone() }, OutboxReceiver { shared })
}

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The queue is full, in frames or in bytes: the peer is too slow.
    Full,
    /// The connection ended.
    Closed,
}

/// What both ends share: one allocation per peer.
#[derive(Debug)]
struct Shared {
    queue: Mutex<Queue>,
    max_frames: usize,
    /// The receiver's task, woken when a frame is queued or the last sender
    /// is dropped.
    ready: AtomicWaker,
    budget: Budget,
}

#[derive(Debug)]
struct Queue {
    frames: VecDeque<Bytes>,
    /// Live `Outbox` handles; at 0 the receiver drains and then ends.
    senders: usize,
    /// The receiver still exists.
    receiving: bool,
}

impl Shared {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding this lock leaves the queue consistent (every
        // change to it is one call on a `VecDeque` or a counter).
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The actor's end of a peer's queue.
#[derive(Debug)]
pub struct Outbox {
    shared: Arc<Shared>,
}

impl Clone for Outbox {
    fn clone(&self) -> Self {
        self.shared.queue().senders += 1;
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let last = {
            let mut queue = self.shared.queue();
            queue.senders -= 1;
            queue.senders == 0
        };
        if last {
            self.shared.ready.wake();
        }
    }
}

impl Outbox {
    /// Queues a frame without waiting. `Ok` holds the frame's ticket: the
    /// number of frames queued so far, this one included.
    pub fn try_send(&self, frame: Bytes) -> Result<u64, Refused> {
        let shared = &*self.shared;
        let len = frame.len();
        {
            let mut queue = shared.queue();
            if !queue.receiving {
                return Err(Refused::Closed);
            }
            if queue.frames.len() >= shared.max_frames || !shared.budget.reserve(len) {
                return Err(Refused::Full);
            }
            queue.frames.push_back(frame);
        }
        shared.ready.wake();
        Ok(shared.budget.queued.fetch_add(1, Relaxed) + 1)
    }

    /// Whether the frame with this ticket is still queued or being written.
    pub fn waiting(&self, ticket: u64) -> bool {
        self.shared.budget.written.load(Relaxed) < ticket
    }
}

/// The writer's end of a peer's queue.
#[derive(Debug)]
pub struct OutboxReceiver {
    shared: Arc<Shared>,
}

impl Drop for OutboxReceiver {
    fn drop(&mut self) {
        let mut queue = self.shared.queue();
        queue.receiving = false;
        // What was queued is never written: give its room back now.
        queue.frames = VecDeque::new();
    }
}

impl OutboxReceiver {
    /// Waits for frames and moves up to `limit` of them into `buf`; 0 when
    /// the actor let go of the peer and everything queued was taken.
    pub async fn recv_many(&mut self, buf: &mut Vec<Bytes>, limit: usize) -> usize {
        poll_fn(|cx| self.poll_recv_many(cx, buf, limit)).await
    }

    /// [`recv_many`](Self::recv_many) for a hand-written poll loop: frames
    /// are only taken by the poll that returns them.
    pub fn poll_recv_many(&mut self, cx: &mut Context<'_>, buf: &mut Vec<Bytes>, limit: usize) -> Poll<usize> {
        // Registered before looking, so a frame queued after the look
        // wakes this task: no wake-up is lost.
        self.shared.ready.register(cx.waker());
        let mut queue = self.shared.queue();
        let n = queue.frames.len().min(limit);
        if n > 0 {
            buf.extend(queue.frames.drain(..n));
            if queue.frames.is_empty() {
                // Most peers are idle most of the time: a drained queue
                // holds no room (a malloc per batch is cheap next to its
                // write).
                queue.frames = VecDeque::new();
            }
            Poll::Ready(n)
        } else if queue.senders == 0 {
            Poll::Ready(0)
        } else {
            Poll::Pending
        }
    }

    /// The frames have been written (and flushed): their bytes leave the
    /// budget and answers among them are no longer waiting.
    pub fn written(&self, frames: &[Bytes]) {
        let budget = &self.shared.budget;
        budget.release(frames.iter().map(Bytes::len));
        budget.written.fetch_add(frames.len() as u64, Relaxed);
    }
}

/// The byte accounting shared by both ends.
#[derive(Debug)]
struct Budget {
    /// 0: frames are not counted in bytes.
    limit: usize,
    /// Bytes of the frames queued or being written, but for an oversized one.
    bytes: AtomicUsize,
    /// A frame larger than `limit` is queued or being written.
    oversized: AtomicBool,
    /// Frames queued and frames written since the peer joined.
    queued: AtomicU64,
    written: AtomicU64,
}

impl Budget {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            bytes: AtomicUsize::new(0),
            oversized: AtomicBool::new(false),
            queued: AtomicU64::new(0),
            written: AtomicU64::new(0),
        }
    }

    /// Makes room for a frame of `len` bytes; `false` when it does not fit.
    fn reserve(&self, len: usize) -> bool {
        if self.limit == 0 {
            true
        } else if len > self.limit {
            self.oversized.compare_exchange(false, true, Relaxed, Relaxed).is_ok()
        } else {
            self.bytes
                .fetch_update(Relaxed, Relaxed, |b| (b + len <= self.limit).then_some(b + len))
                .is_ok()
        }
    }

    /// Frees the place of frames of these lengths (one atomic operation for
    /// them all: the writer releases a whole batch at once).
    fn release(&self, lens: impl IntoIterator<Item = usize>) {
        if self.limit == 0 {
            return;
        }
        let mut small = 0;
        for len in lens {
            if len > self.limit {
                self.oversized.store(false, Relaxed);
            } else {
                small += len;
            }
        }
        if small > 0 {
            self.bytes.fetch_sub(small, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: usize) -> Bytes {
        Bytes::from(vec![0u8; len])
    }

    #[tokio::test]
    async fn bounded_in_bytes_and_frames() {
        let (tx, mut rx) = outbox(4, 100);
        assert_eq!(tx.try_send(frame(60)), Ok(1));
        assert_eq!(tx.try_send(frame(50)), Err(Refused::Full), "110 bytes > 100");
        assert_eq!(tx.try_send(frame(40)), Ok(2));
        assert_eq!(tx.try_send(frame(1)), Err(Refused::Full), "101 bytes");
        let mut buf = Vec::new();
        assert_eq!(rx.recv_many(&mut buf, 10).await, 2);
        // Taken but not yet written: still counted.
        assert_eq!(tx.try_send(frame(1)), Err(Refused::Full));
        rx.written(&buf);
        buf.clear();
        for i in 0..4 {
            assert_eq!(tx.try_send(frame(1)), Ok(3 + i));
        }
        assert_eq!(tx.try_send(frame(1)), Err(Refused::Full), "4 frames");
    }

    #[tokio::test]
    async fn one_oversized_frame_at_a_time_goes_through() {
        let (tx, mut rx) = outbox(16, 100);
        assert!(tx.try_send(frame(90)).is_ok());
        // Larger than the whole budget: let through even with the budget
        // nearly used, so a big document's full state always reaches a peer.
        assert!(tx.try_send(frame(1000)).is_ok());
        assert_eq!(tx.try_send(frame(500)), Err(Refused::Full), "a second one waits");
        assert!(tx.try_send(frame(10)).is_ok(), "small frames still fit");
        let mut buf = Vec::new();
        rx.recv_many(&mut buf, 16).await;
        rx.written(&buf);
        assert!(tx.try_send(frame(500)).is_ok());
        assert!(tx.try_send(frame(100)).is_ok());
    }

    #[tokio::test]
    async fn tickets_tell_whether_a_frame_is_still_waiting() {
        let (tx, mut rx) = outbox(16, 0);
        let first = tx.try_send(frame(1)).unwrap();
        let second = tx.try_send(frame(1)).unwrap();
        assert!(tx.waiting(first) && tx.waiting(second));
        let mut buf = Vec::new();
        rx.recv_many(&mut buf, 1).await;
        rx.written(&buf);
        assert!(!tx.waiting(first) && tx.waiting(second));
        drop(rx);
        assert_eq!(tx.try_send(frame(1)), Err(Refused::Closed));
        assert!(tx.try_send(frame(1)).is_err());
    }

    #[test]
    fn no_byte_limit_when_zero() {
        let (tx, _rx) = outbox(2, 0);
        assert!(tx.try_send(frame(1 << 20)).is_ok());
        assert!(tx.try_send(frame(1 << 20)).is_ok());
        assert_eq!(tx.try_send(frame(1)), Err(Refused::Full));
    }
}
