//! The writer's jobs other than appends, each inside the open transaction
//! (see [`super::writer`]): compaction, deletion, versions, revocations.
//! They are rare next to appends, so they run one statement after another.

use std::collections::{BTreeMap, HashSet};

use super::read::{version_row, VERSION_COLUMNS};
use super::writer::{Failed, Tx};
use crate::event::NewEvent;
use crate::name::DocName;
use crate::storage::job::Job;
use crate::storage::outbox;
use crate::storage::{Reported, Snapshot, VersionKind, VersionMeta};

/// The advisory lock a transaction takes before it writes events, held
/// until it commits: with it, events commit in the order of their seq
/// across every node sharing the database, so a reader that has seen seq
/// n can never later find a smaller one committed ("weft" + 1).
pub(super) const EVENTS_LOCK: i64 = 0x7765_6675;

impl Tx<'_> {
    /// The document's row id, the row created if it is new.
    pub(super) async fn doc_id_or_create(&mut self, doc: &DocName) -> Result<i64, Failed> {
        let stmt = self
            .conn
            .prepare_cached(
                "WITH new AS (INSERT INTO documents (name, created_at, updated_at) VALUES ($1, $2, $2)
                              ON CONFLICT (name) DO NOTHING RETURNING id)
                 SELECT id, true FROM new UNION ALL SELECT id, false FROM documents WHERE name = $1",
            )
            .await?;
        let (id, created) = match self.conn.query_opt(&stmt, &[&doc.as_str(), &self.now]).await? {
            Some(row) => (row.get(0), row.get::<_, bool>(1)),
            // Another node inserted the row meanwhile: the conflict waited
            // for its commit, but this statement's SELECT cannot see it (its
            // snapshot is older). The next statement's can. (Two cluster
            // nodes compacting or versioning a new document at once.) That
            // node reported it created.
            None => (
                self.doc_id(doc).await?.ok_or_else(|| {
                    Failed::Job(crate::storage::StoreError::Postgres(format!(
                        "document '{doc}' was neither inserted nor found"
                    )))
                })?,
                false,
            ),
        };
        self.known.insert(doc.clone());
        if created {
            self.events(&[outbox::document_created(doc)]).await?;
        }
        Ok(id)
    }

    /// Writes events to the outbox, under [`EVENTS_LOCK`].
    pub(super) async fn events(&mut self, events: &[NewEvent]) -> Result<(), Failed> {
        self.insert_events(&events.iter().collect::<Vec<_>>()).await
    }

    /// Writes events to the outbox in one statement, pipelined behind the
    /// lock: their seqs follow their order here. One `INSERT` a row, with
    /// the lock's round trip before it, cost ~0.1 ms an event on loopback,
    /// which the writer paid in a row while every append waited.
    pub(super) async fn insert_events(&mut self, events: &[&NewEvent]) -> Result<(), Failed> {
        if events.is_empty() {
            return Ok(());
        }
        let rendered: Vec<_> = events.iter().map(|e| e.render(self.now)).collect();
        let ids: Vec<&str> = rendered.iter().map(|r| r.id.as_str()).collect();
        let bodies: Vec<&str> = rendered.iter().map(|r| r.body.as_str()).collect();
        let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
        let documents: Vec<Option<&str>> = events.iter().map(|e| e.document.as_deref()).collect();
        let conn = self.conn;
        let (lock, insert) = tokio::try_join!(
            conn.prepare_cached("SELECT pg_advisory_xact_lock($1)"),
            conn.prepare_cached(
                "INSERT INTO events (id, type, document, created_at, body)
                 SELECT v.id, v.type, v.document, $5, v.body
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) WITH ORDINALITY
                      AS v(id, type, document, body, n)
                 ORDER BY v.n
                 RETURNING seq",
            ),
        )?;
        let now = self.now;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] = [&ids, &kinds, &documents, &bodies, &now];
        let (_, rows) = tokio::try_join!(conn.execute(&lock, &[&EVENTS_LOCK]), conn.query(&insert, &params))?;
        if rows.len() != events.len() {
            return Err(Failed::Job(crate::storage::StoreError::Commit(format!(
                "{} events stored of {}",
                rows.len(),
                events.len()
            ))));
        }
        for (row, event) in rows.iter().zip(events) {
            self.written.wrote(row.get(0), event.kind);
        }
        Ok(())
    }

    /// A run of `Emit` jobs: their documents' `reported_seq` in one
    /// `UPDATE`, then the events of those still there in one `INSERT`.
    /// Debounced `document.updated` events of documents edited together
    /// come due together; one by one, a thousand of them were ~3,000 round
    /// trips in a row, and every append waited behind them (p99 of the
    /// many-documents benchmark 143 ms, 4.6 ms without them).
    pub(super) async fn emits(&mut self, jobs: &[Job]) -> Result<(), Failed> {
        // The highest seq per document: an `UPDATE ... FROM` meeting a row
        // twice applies one of the two, either.
        let mut upto: BTreeMap<&str, i64> = BTreeMap::new();
        for job in jobs {
            if let Job::Emit {
                reported: Some(Reported { doc, upto_seq }),
                ..
            } = job
            {
                let seq = upto.entry(doc.as_str()).or_default();
                *seq = (*seq).max(*upto_seq as i64);
            }
        }
        let present: HashSet<String> = if upto.is_empty() {
            HashSet::new()
        } else {
            let (names, seqs): (Vec<&str>, Vec<i64>) = upto.into_iter().unzip();
            let stmt = self
                .conn
                .prepare_cached(
                    "UPDATE documents d SET reported_seq = GREATEST(d.reported_seq, v.upto)
                     FROM unnest($1::text[], $2::int8[]) AS v(name, upto) WHERE d.name = v.name
                     RETURNING d.name",
                )
                .await?;
            let rows = self.conn.query(&stmt, &[&names, &seqs]).await?;
            rows.iter().map(|r| r.get(0)).collect()
        };
        let events: Vec<&NewEvent> = jobs
            .iter()
            .filter_map(|job| match job {
                // A document deleted meanwhile: nothing to report.
                Job::Emit { events, reported, .. }
                    if reported.as_ref().map_or(true, |r| present.contains(r.doc.as_str())) =>
                {
                    Some(events)
                }
                _ => None,
            })
            .flatten()
            .collect();
        self.insert_events(&events).await
    }

    pub(super) async fn prune_events(&mut self, upto_seq: i64, before_ms: i64) -> Result<usize, Failed> {
        let stmt = self
            .conn
            .prepare_cached("DELETE FROM events WHERE seq <= $1 AND created_at < $2")
            .await?;
        Ok(self.conn.execute(&stmt, &[&upto_seq, &before_ms]).await? as usize)
    }

    pub(super) async fn doc_id(&mut self, doc: &DocName) -> Result<Option<i64>, Failed> {
        let stmt = self
            .conn
            .prepare_cached("SELECT id FROM documents WHERE name = $1")
            .await?;
        Ok(self.conn.query_opt(&stmt, &[&doc.as_str()]).await?.map(|r| r.get(0)))
    }

    /// The new compaction snapshot replaces the previous one and the log
    /// rows it covers.
    pub(super) async fn compact(&mut self, doc: &DocName, snapshot: &Snapshot) -> Result<(), Failed> {
        let doc_id = self.doc_id_or_create(doc).await?;
        let upto = snapshot.upto_seq as i64;
        let c = self.conn;
        let insert = c
            .prepare_cached(
                "INSERT INTO snapshots (doc_id, kind, upto_seq, state, state_vector, created_at, stream_id)
                 VALUES ($1, 'compaction', $2, $3, $4, $5, $6) RETURNING id",
            )
            .await?;
        let id: i64 = c
            .query_one(
                &insert,
                &[
                    &doc_id,
                    &upto,
                    &snapshot.state,
                    &snapshot.state_vector,
                    &self.now,
                    &snapshot.stream_id,
                ],
            )
            .await?
            .get(0);
        let old = c
            .prepare_cached("DELETE FROM snapshots WHERE doc_id = $1 AND kind = 'compaction' AND id != $2")
            .await?;
        c.execute(&old, &[&doc_id, &id]).await?;
        let covered = c
            .prepare_cached("DELETE FROM updates WHERE doc_id = $1 AND seq + count - 1 <= $2")
            .await?;
        c.execute(&covered, &[&doc_id, &upto]).await?;
        let size = c
            .prepare_cached(
                "UPDATE documents SET size_bytes = $2 +
                   (SELECT COALESCE(SUM(octet_length(data)), 0) FROM updates WHERE doc_id = $1)
                 WHERE id = $1",
            )
            .await?;
        c.execute(&size, &[&doc_id, &(snapshot.state.len() as i64)]).await?;
        Ok(())
    }

    pub(super) async fn delete(&mut self, doc: &DocName) -> Result<bool, Failed> {
        self.known.remove(doc);
        // The log and snapshots go with it (ON DELETE CASCADE).
        let stmt = self
            .conn
            .prepare_cached("DELETE FROM documents WHERE name = $1")
            .await?;
        let deleted = self.conn.execute(&stmt, &[&doc.as_str()]).await? > 0;
        if deleted {
            self.events(&[outbox::document_deleted(doc)]).await?;
        }
        Ok(deleted)
    }

    pub(super) async fn save_version(
        &mut self,
        doc: &DocName,
        snapshot: &Snapshot,
        kind: VersionKind,
        label: &Option<String>,
        digest: &[u8],
    ) -> Result<VersionMeta, Failed> {
        let doc_id = self.doc_id_or_create(doc).await?;
        let stmt = self
            .conn
            .prepare_cached(
                "INSERT INTO snapshots (doc_id, kind, trigger, label, upto_seq, state, state_vector, created_at, digest, stream_id)
                 VALUES ($1, 'version', $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
            )
            .await?;
        let id: i64 = self
            .conn
            .query_one(
                &stmt,
                &[
                    &doc_id,
                    &kind.as_str(),
                    label,
                    &(snapshot.upto_seq as i64),
                    &snapshot.state,
                    &snapshot.state_vector,
                    &self.now,
                    &digest,
                    &snapshot.stream_id,
                ],
            )
            .await?
            .get(0);
        let meta = VersionMeta {
            id,
            created: self.now,
            label: label.clone(),
            kind,
            size: snapshot.state.len() as u64,
            state_vector: snapshot.state_vector.clone(),
            digest: Some(digest.to_vec()),
        };
        self.events(&[outbox::version_created(doc, &meta)]).await?;
        Ok(meta)
    }

    /// Makes a version named, keeping its label if it has one.
    pub(super) async fn name_version(
        &mut self,
        doc: &DocName,
        id: i64,
        label: &Option<String>,
    ) -> Result<Option<VersionMeta>, Failed> {
        let Some(doc_id) = self.doc_id(doc).await? else {
            return Ok(None);
        };
        let stmt = self
            .conn
            .prepare_cached(&format!(
                "UPDATE snapshots s SET trigger = 'named', label = COALESCE(s.label, $3)
                 WHERE s.doc_id = $1 AND s.kind = 'version' AND s.id = $2
                 RETURNING {VERSION_COLUMNS}"
            ))
            .await?;
        let row = self.conn.query_opt(&stmt, &[&doc_id, &id, label]).await?;
        Ok(row.as_ref().map(version_row))
    }

    pub(super) async fn delete_versions(&mut self, doc: &DocName, versions: &[i64]) -> Result<usize, Failed> {
        let Some(doc_id) = self.doc_id(doc).await? else {
            return Ok(0);
        };
        let stmt = self
            .conn
            .prepare_cached("DELETE FROM snapshots WHERE doc_id = $1 AND kind = 'version' AND id = ANY($2)")
            .await?;
        Ok(self.conn.execute(&stmt, &[&doc_id, &versions]).await? as usize)
    }

    pub(super) async fn revoke(&mut self, token_id: &str, expires_at: u64) -> Result<(), Failed> {
        let stmt = self
            .conn
            .prepare_cached(
                "INSERT INTO revoked_tokens (token_id, revoked_at, expires_at) VALUES ($1, $2, $3)
                 ON CONFLICT (token_id) DO UPDATE SET revoked_at = $2, expires_at = $3",
            )
            .await?;
        self.conn
            .execute(&stmt, &[&token_id, &self.now, &(expires_at as i64)])
            .await?;
        // Forget revocations of tokens that expired anyway.
        let old = self
            .conn
            .prepare_cached("DELETE FROM revoked_tokens WHERE expires_at < $1")
            .await?;
        self.conn.execute(&old, &[&(self.now / 1000)]).await?;
        self.events(&[outbox::token_revoked(token_id, expires_at)]).await
    }
}
