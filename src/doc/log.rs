//! `Log`: the bookkeeping of a document's stored log, as the actor sees it:
//! the next sequence number, the updates accepted but not yet committed,
//! and the sizes of the log and of the last snapshot, which decide when to
//! compact and whether an update still fits the size limit.

use bytes::Bytes;

use crate::storage::{LogEntry, StoredDoc};

/// When the log is compacted into a snapshot (`--compact-updates`,
/// `--compact-bytes`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Compaction {
    pub after_updates: u64,
    pub after_bytes: u64,
}

#[derive(Debug, Default)]
pub(super) struct Log {
    /// Sequence number of the next accepted update.
    next_seq: u64,
    /// Accepted in this batch, not yet committed.
    pending: Vec<LogEntry>,
    /// Updates in the stored log since the last snapshot, and their bytes.
    updates: u64,
    bytes: u64,
    /// Size of the last snapshot written or loaded.
    snapshot_bytes: u64,
}

impl Log {
    /// The log of a document as it was loaded.
    pub fn loaded(stored: &StoredDoc) -> Self {
        Self {
            next_seq: stored.next_seq,
            pending: Vec::new(),
            updates: stored.log.len() as u64,
            bytes: stored.log_bytes(),
            snapshot_bytes: stored.snapshot.as_ref().map_or(0, |s| s.len() as u64),
        }
    }

    /// An accepted update gets the next sequence number and waits for the
    /// batch's commit.
    pub fn push(&mut self, data: Bytes) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.pending.push(LogEntry { seq, data });
    }

    /// Whether updates wait for the batch's commit.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The batch's updates, to append; [`Log::appended`] once committed.
    pub fn take_pending(&mut self) -> Vec<LogEntry> {
        std::mem::take(&mut self.pending)
    }

    /// `count` updates of `bytes` bytes were committed.
    pub fn appended(&mut self, count: u64, bytes: u64) {
        self.updates += count;
        self.bytes += bytes;
    }

    /// Whether an update of `extra` bytes would grow what is stored of the
    /// document (the snapshot, the log, and this batch) past `limit`
    /// bytes; 0 = no limit.
    pub fn would_exceed(&self, extra: u64, limit: u64) -> bool {
        let pending: u64 = self.pending.iter().map(|e| e.data.len() as u64).sum();
        limit > 0 && self.stored_bytes() + pending + extra > limit
    }

    /// Bytes stored for the current state: the last snapshot and the log.
    pub fn stored_bytes(&self) -> u64 {
        self.snapshot_bytes + self.bytes
    }

    /// Whether to write a compaction snapshot now (with `force`: whenever
    /// the log is not empty, as on unload and shutdown).
    ///
    /// A snapshot re-encodes the whole document, so taking one every N
    /// updates would make the work quadratic in the document's life.
    /// Waiting until the log also holds a quarter of the last snapshot's
    /// bytes bounds it to a few bytes encoded per byte logged, and a load to
    /// the snapshot plus a log of at most about a quarter of it.
    pub fn compaction_due(&self, limits: Compaction, force: bool) -> bool {
        let grown = self.bytes >= self.snapshot_bytes / 4;
        (self.updates >= limits.after_updates && grown)
            || self.bytes >= limits.after_bytes.max(self.snapshot_bytes)
            || (force && self.updates > 0)
    }

    /// A snapshot of `size` bytes now covers the log as it was when the
    /// snapshot was taken, `covered` (its [`Log::size`] then); what was
    /// committed since (the snapshot was written while the actor went on)
    /// stays in the log.
    pub fn compacted(&mut self, covered: (u64, u64), size: u64) {
        self.updates = self.updates.saturating_sub(covered.0);
        self.bytes = self.bytes.saturating_sub(covered.1);
        self.snapshot_bytes = size;
    }

    /// The document was deleted: nothing is left to compact.
    pub fn forget(&mut self) {
        self.updates = 0;
    }

    /// The sequence number of the last accepted update (0: none).
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Updates and bytes in the stored log, for the log lines.
    pub fn size(&self) -> (u64, u64) {
        (self.updates, self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Compaction = Compaction {
        after_updates: 10,
        after_bytes: 1000,
    };

    fn log(updates: u64, bytes: u64, snapshot_bytes: u64) -> Log {
        Log {
            next_seq: updates + 1,
            updates,
            bytes,
            snapshot_bytes,
            ..Log::default()
        }
    }

    #[test]
    fn compaction_by_count_waits_for_a_quarter_of_the_snapshot() {
        assert!(!log(9, 100, 0).compaction_due(LIMITS, false));
        assert!(log(10, 100, 0).compaction_due(LIMITS, false));
        // a big snapshot: ten small updates are not worth re-encoding it
        assert!(!log(10, 100, 800).compaction_due(LIMITS, false));
        assert!(log(10, 200, 800).compaction_due(LIMITS, false));
    }

    #[test]
    fn compaction_by_bytes_waits_for_the_snapshot_size() {
        assert!(log(1, 1000, 0).compaction_due(LIMITS, false));
        assert!(!log(1, 1000, 2000).compaction_due(LIMITS, false));
        assert!(log(1, 2000, 2000).compaction_due(LIMITS, false));
    }

    #[test]
    fn forced_compaction_needs_a_log() {
        assert!(log(1, 1, 5000).compaction_due(LIMITS, true));
        assert!(!log(0, 0, 5000).compaction_due(LIMITS, true));
        let mut l = log(3, 30, 0);
        l.forget();
        assert!(!l.compaction_due(LIMITS, true), "a deleted document leaves nothing");
        let mut l = log(30, 3000, 100);
        l.compacted(l.size(), 500);
        assert_eq!((l.size(), l.stored_bytes()), ((0, 0), 500));
        assert!(!l.compaction_due(LIMITS, true));
    }

    #[test]
    fn updates_committed_while_a_snapshot_is_written_stay_in_the_log() {
        let mut l = log(30, 3000, 100);
        let covered = l.size();
        l.appended(2, 40); // committed while the snapshot was written
        l.compacted(covered, 500);
        assert_eq!((l.size(), l.stored_bytes()), ((2, 40), 540));
        assert!(l.compaction_due(LIMITS, true), "they are compacted next time");
    }

    #[test]
    fn updates_are_numbered_and_counted_once_committed() {
        let mut l = log(2, 20, 100);
        l.push(Bytes::from_static(b"abc"));
        l.push(Bytes::from_static(b"de"));
        assert_eq!(l.last_seq(), 4);
        assert_eq!(l.stored_bytes(), 120, "pending updates are not stored yet");
        let entries = l.take_pending();
        assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 4]);
        l.appended(2, 5);
        assert_eq!((l.size(), l.stored_bytes()), ((4, 25), 125));
        assert!(l.take_pending().is_empty());
    }

    #[test]
    fn the_size_limit_counts_the_snapshot_the_log_and_the_batch() {
        let mut l = log(1, 50, 40);
        assert!(!l.would_exceed(10, 100));
        assert!(l.would_exceed(11, 100));
        l.push(Bytes::from_static(b"12345"));
        assert!(l.would_exceed(6, 100));
        assert!(!l.would_exceed(u64::MAX / 2, 0), "0 = no limit");
    }
}
