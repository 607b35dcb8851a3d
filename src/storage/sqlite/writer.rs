//! The write side: one OS thread owns the only writing connection and
//! commits every job waiting in its queue in one transaction (group commit).
//!
//! Jobs run without savepoints: a savepoint per job costs two statements,
//! a large share of the writer's work when each batch holds one update
//! (many quiet documents; measured in bench/FINDINGS.md). A job that fails
//! (rare) rolls its whole batch back; the batch then runs again with a
//! savepoint per job, so that the failing job fails alone and its
//! neighbours commit.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::{mpsc, watch};

use super::read::{doc_id, version_row, VERSION_COLUMNS};
use crate::clock::now_ms;
use crate::event::NewEvent;
use crate::metrics::{Commit, Metrics};
use crate::name::DocName;
use crate::storage::job::{appended, finish, take_batch, Done, Job};
use crate::storage::outbox::{self, Written};
use crate::storage::pack::pack;
use crate::storage::{LogEntry, Reported, Snapshot, StoreError, VersionKind, VersionMeta};

/// Most jobs committed in one transaction.
const MAX_BATCH: usize = 2048;

pub(super) struct Writer {
    conn: Connection,
    /// name → documents.id; cleared whenever a transaction fails, since the
    /// ids it learnt may have been rolled back.
    ids: HashMap<DocName, i64>,
    metrics: Arc<Metrics>,
    /// Told the highest event seq after a commit that wrote events.
    events: Arc<watch::Sender<i64>>,
}

impl Writer {
    pub(super) fn new(conn: Connection, metrics: Arc<Metrics>, events: Arc<watch::Sender<i64>>) -> Self {
        Self {
            conn,
            ids: HashMap::new(),
            metrics,
            events,
        }
    }

    /// Takes batches off the queue until it closes or a `Close` job comes.
    pub(super) fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        while let Some(first) = rx.blocking_recv() {
            let (batch, close) = take_batch(first, &mut rx, MAX_BATCH);
            if !batch.is_empty() {
                self.commit(batch);
            }
            if let Some(reply) = close {
                // Fold the WAL back into the main file so that a copied
                // weft.db is complete on its own after a clean shutdown.
                if let Err(e) = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
                    tracing::warn!(error = %e, "checkpoint at shutdown failed");
                }
                let _ = reply.send(());
                return;
            }
        }
    }

    /// Commits `batch` and answers each job (see the module comment for
    /// what happens when one fails).
    fn commit(&mut self, batch: Vec<Job>) {
        let started = Instant::now();
        let now = now_ms();
        let outcome = match self.transact(&batch, now, false) {
            Ok(None) => {
                self.ids.clear(); // ids created in the rolled-back transaction
                self.transact(&batch, now, true)
                    .map(|results| results.unwrap_or_default())
            }
            other => other.map(|results| results.unwrap_or_default()),
        };
        let jobs = batch.len();
        match outcome {
            Ok(results) => {
                if results.iter().any(Result::is_err) {
                    self.ids.clear();
                }
                let (updates, bytes) = appended(&batch, &results);
                let took = started.elapsed();
                self.metrics.record_commit(Commit {
                    took,
                    jobs,
                    updates,
                    bytes,
                });
                for (job, result) in batch.into_iter().zip(results) {
                    finish(job, result);
                }
            }
            Err(e) => {
                self.ids.clear();
                self.metrics.storage_error();
                tracing::error!(error = %e, jobs, "storage commit failed");
                let message = e.to_string();
                for job in batch {
                    finish(job, Err(StoreError::Commit(message.clone())));
                }
            }
        }
    }

    /// Runs `batch` in one transaction: `Ok(None)` when a job failed and
    /// `isolate` was off (the transaction is rolled back); with `isolate`,
    /// each job in its own savepoint, its result whatever the others'.
    fn transact(
        &mut self,
        batch: &[Job],
        now: i64,
        isolate: bool,
    ) -> Result<Option<Vec<Result<Done, StoreError>>>, rusqlite::Error> {
        let mut tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut results = Vec::with_capacity(batch.len());
        let mut written = Written::default();
        for job in batch {
            if isolate {
                let sp = tx.savepoint()?;
                let mark = written.mark();
                let result = Tx::new(&sp, &mut self.ids, now, &mut written).apply(job);
                if result.is_ok() {
                    sp.commit()?;
                } else {
                    written.roll_back_to(mark);
                }
                results.push(result);
            } else {
                let result = Tx::new(&tx, &mut self.ids, now, &mut written).apply(job);
                if result.is_err() {
                    return Ok(None); // dropping `tx` rolls it back
                }
                results.push(result);
            }
        }
        tx.commit()?;
        written.committed(&self.events, &self.metrics);
        Ok(Some(results))
    }
}

/// One job's work inside the open transaction (or savepoint), at the
/// batch's time `now` (Unix milliseconds).
struct Tx<'a> {
    conn: &'a Connection,
    ids: &'a mut HashMap<DocName, i64>,
    now: i64,
    /// The events written.
    written: &'a mut Written,
}

impl<'a> Tx<'a> {
    fn new(conn: &'a Connection, ids: &'a mut HashMap<DocName, i64>, now: i64, written: &'a mut Written) -> Self {
        Self {
            conn,
            ids,
            now,
            written,
        }
    }

    fn apply(&mut self, job: &Job) -> Result<Done, StoreError> {
        match job {
            Job::Append {
                doc, entries, events, ..
            } => {
                self.append(doc, entries)?;
                for event in events {
                    self.event(event)?;
                }
                Ok(Done::Unit)
            }
            Job::Emit { events, reported, .. } => self.emit(events, reported).map(|()| Done::Unit),
            Job::PruneEvents {
                upto_seq, before_ms, ..
            } => self.prune_events(*upto_seq, *before_ms).map(Done::Count),
            Job::Compact { doc, snapshot, .. } => self.compact(doc, snapshot).map(|()| Done::Unit),
            Job::Delete { doc, .. } => self.delete(doc).map(Done::Bool),
            Job::SaveVersion {
                doc,
                snapshot,
                kind,
                label,
                digest,
                ..
            } => self
                .save_version(doc, snapshot, *kind, label, digest)
                .map(Done::Version),
            Job::NameVersion { doc, id, label, .. } => self.name_version(doc, *id, label).map(Done::Found),
            Job::DeleteVersions { doc, ids, .. } => self.delete_versions(doc, ids).map(Done::Count),
            Job::Revoke {
                token_id, expires_at, ..
            } => self.revoke(token_id, *expires_at).map(|()| Done::Unit),
            Job::Webhook { op, .. } => super::webhooks::write(self.conn, self.now, op).map(Done::Bool),
            Job::Close { .. } => Ok(Done::Unit),
        }
    }

    /// The document's row id, the row created if it is new.
    fn doc_id_or_create(&mut self, doc: &DocName) -> Result<i64, StoreError> {
        if let Some(&id) = self.ids.get(doc) {
            return Ok(id);
        }
        let id = match doc_id(self.conn, doc)? {
            Some(id) => id,
            None => {
                self.conn
                    .prepare_cached("INSERT INTO documents (name, created_at, updated_at) VALUES (?1, ?2, ?2)")?
                    .execute(params![doc.as_str(), self.now])?;
                let id = self.conn.last_insert_rowid();
                self.event(&outbox::document_created(doc))?;
                id
            }
        };
        self.ids.insert(doc.clone(), id);
        Ok(id)
    }

    /// One log row for the whole actor batch (see `pack`).
    fn append(&mut self, doc: &DocName, entries: &[LogEntry]) -> Result<(), StoreError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let doc_id = self.doc_id_or_create(doc)?;
        let data = pack(entries);
        self.conn
            .prepare_cached("INSERT INTO updates (doc_id, seq, count, data, created_at) VALUES (?1, ?2, ?3, ?4, ?5)")?
            .execute(params![
                doc_id,
                first.seq as i64,
                entries.len() as i64,
                &data[..],
                self.now
            ])?;
        self.conn
            .prepare_cached("UPDATE documents SET updated_at = ?2, size_bytes = size_bytes + ?3 WHERE id = ?1")?
            .execute(params![doc_id, self.now, data.len() as i64])?;
        Ok(())
    }

    /// The new compaction snapshot replaces the previous one and the log
    /// rows it covers.
    fn compact(&mut self, doc: &DocName, snapshot: &Snapshot) -> Result<(), StoreError> {
        let doc_id = self.doc_id_or_create(doc)?;
        self.conn.execute(
            "INSERT INTO snapshots (doc_id, kind, upto_seq, state, state_vector, created_at)
             VALUES (?1, 'compaction', ?2, ?3, ?4, ?5)",
            params![
                doc_id,
                snapshot.upto_seq as i64,
                snapshot.state,
                snapshot.state_vector,
                self.now
            ],
        )?;
        let id = self.conn.last_insert_rowid();
        self.conn.execute(
            "DELETE FROM snapshots WHERE doc_id = ?1 AND kind = 'compaction' AND id != ?2",
            params![doc_id, id],
        )?;
        self.conn.execute(
            "DELETE FROM updates WHERE doc_id = ?1 AND seq + count - 1 <= ?2",
            params![doc_id, snapshot.upto_seq as i64],
        )?;
        self.conn.execute(
            "UPDATE documents SET size_bytes = ?2 +
               (SELECT COALESCE(SUM(length(data)), 0) FROM updates WHERE doc_id = ?1)
             WHERE id = ?1",
            params![doc_id, snapshot.state.len() as i64],
        )?;
        Ok(())
    }

    fn delete(&mut self, doc: &DocName) -> Result<bool, StoreError> {
        self.ids.remove(doc);
        let Some(doc_id) = doc_id(self.conn, doc)? else {
            return Ok(false);
        };
        self.conn.execute("DELETE FROM updates WHERE doc_id = ?1", [doc_id])?;
        self.conn.execute("DELETE FROM snapshots WHERE doc_id = ?1", [doc_id])?;
        self.conn.execute("DELETE FROM documents WHERE id = ?1", [doc_id])?;
        self.event(&outbox::document_deleted(doc))?;
        Ok(true)
    }

    fn save_version(
        &mut self,
        doc: &DocName,
        snapshot: &Snapshot,
        kind: VersionKind,
        label: &Option<String>,
        digest: &[u8],
    ) -> Result<VersionMeta, StoreError> {
        let doc_id = self.doc_id_or_create(doc)?;
        self.conn.execute(
            "INSERT INTO snapshots (doc_id, kind, trigger, label, upto_seq, state, state_vector, created_at, digest)
             VALUES (?1, 'version', ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                doc_id,
                kind.as_str(),
                label,
                snapshot.upto_seq as i64,
                snapshot.state,
                snapshot.state_vector,
                self.now,
                digest
            ],
        )?;
        let meta = VersionMeta {
            id: self.conn.last_insert_rowid(),
            created: self.now,
            label: label.clone(),
            kind,
            size: snapshot.state.len() as u64,
            state_vector: snapshot.state_vector.clone(),
            digest: Some(digest.to_vec()),
        };
        self.event(&outbox::version_created(doc, &meta))?;
        Ok(meta)
    }

    /// Makes a version named, keeping its label if it has one.
    fn name_version(
        &mut self,
        doc: &DocName,
        id: i64,
        label: &Option<String>,
    ) -> Result<Option<VersionMeta>, StoreError> {
        let Some(doc_id) = doc_id(self.conn, doc)? else {
            return Ok(None);
        };
        self.conn.execute(
            "UPDATE snapshots SET trigger = 'named', label = COALESCE(label, ?3)
             WHERE doc_id = ?1 AND kind = 'version' AND id = ?2",
            params![doc_id, id, label],
        )?;
        Ok(self
            .conn
            .prepare_cached(&format!(
                "SELECT {VERSION_COLUMNS} FROM snapshots s WHERE s.doc_id = ?1 AND s.kind = 'version' AND s.id = ?2"
            ))?
            .query_row(params![doc_id, id], version_row)
            .optional()?)
    }

    fn delete_versions(&mut self, doc: &DocName, versions: &[i64]) -> Result<usize, StoreError> {
        let Some(doc_id) = doc_id(self.conn, doc)? else {
            return Ok(0);
        };
        let mut delete = self
            .conn
            .prepare_cached("DELETE FROM snapshots WHERE doc_id = ?1 AND kind = 'version' AND id = ?2")?;
        let mut count = 0;
        for id in versions {
            count += delete.execute(params![doc_id, id])?;
        }
        Ok(count)
    }

    fn revoke(&mut self, token_id: &str, expires_at: u64) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT OR REPLACE INTO revoked_tokens (token_id, revoked_at, expires_at) VALUES (?1, ?2, ?3)",
            params![token_id, self.now, expires_at as i64],
        )?;
        // Forget revocations of tokens that expired anyway.
        self.conn
            .execute("DELETE FROM revoked_tokens WHERE expires_at < ?1", [self.now / 1000])?;
        self.event(&outbox::token_revoked(token_id, expires_at))?;
        Ok(())
    }

    /// Writes one event to the outbox, its envelope rendered at the
    /// batch's time.
    fn event(&mut self, event: &NewEvent) -> Result<(), StoreError> {
        let rendered = event.render(self.now);
        self.conn
            .prepare_cached("INSERT INTO events (id, type, document, created_at, body) VALUES (?1, ?2, ?3, ?4, ?5)")?
            .execute(params![
                rendered.id,
                event.kind.as_str(),
                event.document,
                self.now,
                rendered.body
            ])?;
        self.written.wrote(self.conn.last_insert_rowid(), event.kind);
        Ok(())
    }

    fn emit(&mut self, events: &[NewEvent], reported: &Option<Reported>) -> Result<(), StoreError> {
        if let Some(Reported { doc, upto_seq }) = reported {
            let Some(doc_id) = doc_id(self.conn, doc)? else {
                return Ok(()); // deleted meanwhile: nothing to report
            };
            self.conn
                .prepare_cached("UPDATE documents SET reported_seq = MAX(reported_seq, ?2) WHERE id = ?1")?
                .execute(params![doc_id, *upto_seq as i64])?;
        }
        for event in events {
            self.event(event)?;
        }
        Ok(())
    }

    fn prune_events(&mut self, upto_seq: i64, before_ms: i64) -> Result<usize, StoreError> {
        Ok(self.conn.execute(
            "DELETE FROM events WHERE seq <= ?1 AND created_at < ?2",
            params![upto_seq, before_ms],
        )?)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use rusqlite::OpenFlags;

    use super::super::schema::{migrate, open_connection};
    use super::*;

    /// A job that fails (here: a sequence number stored already) fails
    /// alone; the batch's other jobs are committed.
    #[test]
    fn one_failing_job_does_not_fail_its_batch() {
        let dir = std::env::temp_dir().join(format!("weft-batch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("weft.db");
        let _ = std::fs::remove_file(&path);
        let conn = open_connection(&path, Duration::from_secs(1), OpenFlags::default()).unwrap();
        migrate(&conn).unwrap();
        let mut writer = Writer::new(conn, Arc::new(Metrics::default()), Arc::new(watch::channel(0).0));
        let doc = |n: &str| DocName::parse(n).unwrap();
        let append = |name: &str, seq: u64| {
            let (reply, rx) = tokio::sync::oneshot::channel();
            let entries = vec![LogEntry {
                seq,
                data: Bytes::from_static(b"x"),
            }];
            (
                Job::Append {
                    doc: doc(name),
                    entries,
                    events: Vec::new(),
                    reply,
                },
                rx,
            )
        };
        let (first, _) = append("a", 1);
        writer.commit(vec![first]);
        let (ok_before, mut rx1) = append("b", 1);
        let (dup, mut rx2) = append("a", 1);
        let (ok_after, mut rx3) = append("c", 1);
        writer.commit(vec![ok_before, dup, ok_after]);
        assert!(rx1.try_recv().unwrap().is_ok());
        assert!(rx2.try_recv().unwrap().is_err(), "the duplicate fails");
        assert!(rx3.try_recv().unwrap().is_ok());
        let rows: i64 = writer
            .conn
            .query_row("SELECT COUNT(*) FROM updates", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
