//! The write side: one task owns the writing connection and commits every
//! job waiting in its queue, from every document, in one transaction (group
//! commit). Appends, nearly every job, go in one multi-row `INSERT` over
//! arrays; the statements of a batch of appends (`BEGIN`, new documents'
//! rows, the log rows, `COMMIT`) do not wait for each other's answers, so
//! tokio-postgres pipelines them: one round trip per batch, whatever its
//! size.
//!
//! A document's `size_bytes` and `updated_at` are added to its row about
//! [`SIZES_EVERY`] late, in one `UPDATE` over arrays riding with a commit,
//! [`SIZES_PER_COMMIT`] documents at a time (see [`Writer::sizes`]).
//!
//! A job that fails (a database error: a sequence number stored twice, a
//! lock held too long) fails its batch, which then runs again job by job,
//! each in its own transaction, so that it fails alone. A lost connection
//! fails the whole batch at once and marks the store down
//! ([`Health`](super::Health)); the task reconnects with backoff, while
//! jobs that arrive meanwhile fail at once: their senders are closed with
//! 4500 and resend their updates once they reconnect.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::{Object, Pool};
use tokio::sync::{mpsc, watch};

use super::{is_outage, pg_error, Health};
use crate::clock::now_ms;
use crate::metrics::{Commit, Metrics};
use crate::name::DocName;
use crate::storage::job::{appended, finish, take_batch, Done, Job};
use crate::storage::outbox::Written;
use crate::storage::pack::pack;
use crate::storage::StoreError;

/// Most jobs committed in one transaction: bounds the arrays of one
/// statement (and its memory) when thousands of documents wait at once.
const MAX_BATCH: usize = 2048;

/// How late a document's size and time of last write may reach its row.
/// Written with every commit, that `UPDATE` was the costliest statement of
/// the many-documents benchmark (a third of PostgreSQL's time, a new row
/// version per document per commit). Only `GET /api/docs` reads them; the
/// storage quota counts in the document's actor.
const SIZES_EVERY: Duration = Duration::from_secs(1);

/// Most documents' sizes added in one transaction: adding them is ~9 µs a
/// row, and every append waits behind it; the rest go with the commits
/// after it.
const SIZES_PER_COMMIT: usize = 100;

/// Per document: the bytes it grew by, and the time of the last commit
/// that grew it.
pub(super) type Sizes = BTreeMap<String, (i64, i64)>;

/// Why a transaction did not commit.
pub(super) enum Failed {
    /// A job's statement failed: run the batch again job by job.
    Job(StoreError),
    /// The connection is gone or does not answer: fail everything.
    Outage(StoreError),
}

impl From<tokio_postgres::Error> for Failed {
    fn from(e: tokio_postgres::Error) -> Self {
        if is_outage(&e) {
            Failed::Outage(pg_error(e))
        } else {
            Failed::Job(pg_error(e))
        }
    }
}

pub(super) struct Writer {
    pool: Pool,
    conn: Option<Object>,
    /// Documents known to have a row, so that most batches need not create
    /// any; forgotten whenever a transaction fails (it may have created
    /// some that were rolled back) and on delete.
    known: HashSet<DocName>,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    /// Bounds each transaction, also when the server does not answer at all
    /// (its own `statement_timeout` needs a server that answers).
    timeout: Duration,
    /// Told the highest event seq after a commit that wrote events.
    events: Arc<watch::Sender<i64>>,
    /// What committed appends added to documents' sizes and not yet to
    /// their rows. Flushed with the first commit [`SIZES_EVERY`] after the
    /// oldest, when the queue is idle that long, and before closing. A
    /// crash loses at most that much; the document's next compaction counts
    /// its size afresh (and, running beside the writer, may count the last
    /// second's bytes twice until the one after: `size` is a guide; the
    /// storage quota is counted by the document's actor).
    sizes: Sizes,
    /// When the oldest of `sizes` was committed.
    sizes_since: Option<Instant>,
    sizes_every: Duration,
}

impl Writer {
    pub(super) fn new(
        pool: Pool,
        health: Arc<Health>,
        metrics: Arc<Metrics>,
        timeout: Duration,
        events: Arc<watch::Sender<i64>>,
    ) -> Self {
        Self {
            pool,
            conn: None,
            known: HashSet::new(),
            health,
            metrics,
            timeout,
            events,
            sizes: Sizes::new(),
            sizes_since: None,
            sizes_every: SIZES_EVERY,
        }
    }

    /// Takes batches off the queue until it closes or a `Close` job comes.
    /// While the store is down, also tries to reconnect with backoff, so
    /// that it comes back (and `/healthz` says so) without any traffic.
    pub(super) async fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        loop {
            let reconnect_at = self.health.next_attempt();
            let flush_at = match reconnect_at {
                None => self.sizes_since.map(|since| since + self.sizes_every),
                Some(_) => None,
            };
            let first = tokio::select! {
                job = rx.recv() => job,
                () = tokio::time::sleep_until(reconnect_at.unwrap_or_else(Instant::now).into()),
                    if reconnect_at.is_some() => {
                    self.reconnect().await;
                    continue;
                }
                () = tokio::time::sleep_until(flush_at.unwrap_or_else(Instant::now).into()),
                    if flush_at.is_some() => {
                    self.flush_sizes(false).await;
                    continue;
                }
            };
            let Some(first) = first else {
                self.flush_sizes(true).await;
                return;
            };
            let (batch, close) = take_batch(first, &mut rx, MAX_BATCH);
            if !batch.is_empty() {
                self.commit(batch).await;
            }
            if let Some(reply) = close {
                self.flush_sizes(true).await;
                let _ = reply.send(());
                return;
            }
        }
    }

    /// Adds sizes waiting to their documents' rows, [`SIZES_PER_COMMIT`]
    /// of them or (`all`) every one, unless the store is down (they wait
    /// for it to come back).
    async fn flush_sizes(&mut self, all: bool) {
        while !self.sizes.is_empty() && self.health.next_attempt().is_none() {
            match self.transact(&[], now_ms(), true).await {
                Ok(_) => {}
                Err(Failed::Outage(e)) => return self.outage(&e),
                Err(Failed::Job(e)) => {
                    tracing::warn!(error = %e, docs = self.sizes.len(), "could not store documents' sizes; trying again");
                    self.sizes_since = Some(Instant::now());
                    return;
                }
            }
            if !all {
                return;
            }
        }
    }

    /// One attempt to reach the server again; the next one is scheduled by
    /// [`Health`] if it fails.
    async fn reconnect(&mut self) {
        // Judged down (by this task or a reader): start afresh.
        self.drop_connection();
        match self.connection().await {
            Ok(_) => {}
            Err(e) => self.health.failed(&e),
        }
    }

    /// The writing connection, opened (and checked) if there is none.
    async fn connection(&mut self) -> Result<&mut Object, StoreError> {
        if self.conn.is_none() {
            let conn = tokio::time::timeout(self.timeout, async {
                let conn = self
                    .pool
                    .get()
                    .await
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?;
                conn.simple_query("").await.map_err(pg_error)?;
                Ok::<_, StoreError>(conn)
            })
            .await
            .map_err(|_| StoreError::Unavailable("no answer from the server".into()))??;
            self.conn = Some(conn);
            self.health.up();
        }
        Ok(self.conn.as_mut().expect("just opened"))
    }

    /// Drops the writing connection for good (not back to the pool: it may
    /// be inside a transaction, or stuck).
    fn drop_connection(&mut self) {
        if let Some(conn) = self.conn.take() {
            drop(Object::take(conn));
        }
    }

    /// Commits `batch` and answers each job (see the module comment for
    /// what happens when one fails).
    async fn commit(&mut self, batch: Vec<Job>) {
        let started = Instant::now();
        let now = now_ms();
        let jobs = batch.len();
        if self.health.next_attempt().is_some_and(|at| Instant::now() < at) {
            // Down, and not yet time to try again: fail at once rather than
            // make every sender wait for a connection timeout.
            let e = StoreError::Unavailable("waiting to reconnect".into());
            return self.fail_all(batch, &e);
        }
        let results = match self.transact(&batch, now, false).await {
            Ok(results) => results.into_iter().map(Ok).collect(),
            Err(Failed::Job(e)) => {
                tracing::debug!(error = %e, jobs, "a job failed its batch; running each alone");
                self.known.clear();
                let mut results = Vec::with_capacity(jobs);
                for job in &batch {
                    match self.transact(std::slice::from_ref(job), now, false).await {
                        Ok(mut done) => results.push(Ok(done.pop().unwrap_or(Done::Unit))),
                        Err(Failed::Job(e)) => {
                            self.known.clear();
                            results.push(Err(e));
                        }
                        Err(Failed::Outage(e)) => {
                            // Those done so far are committed; the rest fail.
                            self.outage(&e);
                            results.resize_with(jobs, || Err(StoreError::Unavailable(e.to_string())));
                            break;
                        }
                    }
                }
                results
            }
            Err(Failed::Outage(e)) => {
                self.outage(&e);
                return self.fail_all(batch, &e);
            }
        };
        let (updates, bytes) = appended(&batch, &results);
        self.metrics.record_commit(Commit {
            took: started.elapsed(),
            jobs,
            updates,
            bytes,
        });
        if results.iter().any(Result::is_err) {
            self.metrics.storage_error();
        }
        for (job, result) in batch.into_iter().zip(results) {
            finish(job, result);
        }
    }

    fn outage(&mut self, e: &StoreError) {
        self.known.clear();
        self.drop_connection();
        self.health.failed(e);
    }

    fn fail_all(&mut self, batch: Vec<Job>, e: &StoreError) {
        self.metrics.storage_error();
        let message = e.to_string();
        for job in batch {
            finish(job, Err(StoreError::Unavailable(message.clone())));
        }
    }

    /// Runs `batch` in one transaction, bounded by the timeout; with
    /// `flush` (or when due, see [`Writer::sizes`]) adds the sizes waiting.
    async fn transact(&mut self, batch: &[Job], now: i64, flush: bool) -> Result<Vec<Done>, Failed> {
        let timeout = self.timeout;
        let flush = flush
            || self
                .sizes_since
                .is_some_and(|since| since.elapsed() >= self.sizes_every);
        // Copied, not taken: kept if the transaction fails.
        let sizes: Sizes = match flush {
            true => self
                .sizes
                .iter()
                .take(SIZES_PER_COMMIT)
                .map(|(d, s)| (d.clone(), *s))
                .collect(),
            false => Sizes::new(),
        };
        let flushed: Vec<String> = sizes.keys().cloned().collect();
        let known = std::mem::take(&mut self.known);
        let conn = self.connection().await.map_err(Failed::Outage)?;
        let mut tx = Tx {
            conn,
            known,
            now,
            written: Written::default(),
            sizes,
            flush,
        };
        let outcome = match tokio::time::timeout(timeout, tx.run(batch)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Failed::Outage(StoreError::Unavailable(format!(
                "no answer within {} ms",
                timeout.as_millis()
            )))),
        };
        let Tx {
            known, written, sizes, ..
        } = tx;
        self.known = known;
        if outcome.is_ok() {
            written.committed(&self.events, &self.metrics);
            for doc in flushed {
                self.sizes.remove(&doc);
            }
            // What this transaction's appends added, unless it flushed.
            for (doc, (bytes, at)) in sizes {
                let entry = self.sizes.entry(doc).or_default();
                entry.0 += bytes;
                entry.1 = entry.1.max(at);
            }
            if self.sizes.is_empty() {
                self.sizes_since = None;
            } else {
                // Kept when only some were flushed: the rest is due as well.
                self.sizes_since.get_or_insert_with(Instant::now);
            }
        }
        outcome
    }
}

/// One transaction on the writing connection, at the batch's time `now`
/// (Unix milliseconds). The jobs other than appends are in [`super::jobs`].
pub(super) struct Tx<'a> {
    pub(super) conn: &'a Object,
    pub(super) known: HashSet<DocName>,
    pub(super) now: i64,
    /// The events this transaction wrote.
    pub(super) written: Written,
    /// What its appends added to documents' sizes, with those waiting when
    /// `flush`; then written to the rows (and emptied) by each statement
    /// that can.
    pub(super) sizes: Sizes,
    pub(super) flush: bool,
}

impl Tx<'_> {
    /// Runs the jobs in order: each run of consecutive appends as one
    /// pipelined group, each run of events (`Emit`) as another, every other
    /// job on its own. Ends with the
    /// transaction committed, or not open (rolled back) on any error.
    async fn run(&mut self, batch: &[Job]) -> Result<Vec<Done>, Failed> {
        if Self::plain_appends(batch, &self.known) {
            // The common case, in one round trip.
            self.appends(batch, true).await?;
            return Ok(batch.iter().map(|_| Done::Unit).collect());
        }
        self.conn.batch_execute("BEGIN").await?;
        let mut results = Vec::with_capacity(batch.len());
        let outcome: Result<(), Failed> = async {
            self.add_sizes().await?;
            let mut i = 0;
            while i < batch.len() {
                let run = batch[i..]
                    .iter()
                    .take_while(|j| matches!(j, Job::Append { .. }))
                    .count();
                if run > 0 {
                    let appends = &batch[i..i + run];
                    for job in appends {
                        if let Job::Append { doc, entries, .. } = job {
                            if !entries.is_empty() && !self.known.contains(doc) {
                                self.doc_id_or_create(doc).await?; // with its document.created
                            }
                        }
                    }
                    self.appends(appends, false).await?;
                    let events: Vec<_> = appends
                        .iter()
                        .filter_map(|job| match job {
                            Job::Append { events, .. } => Some(events),
                            _ => None,
                        })
                        .flatten()
                        .collect();
                    self.insert_events(&events).await?;
                    results.extend((0..run).map(|_| Done::Unit));
                    i += run;
                    continue;
                }
                // Events due together (see `emits`), in one round trip or two.
                let run = batch[i..].iter().take_while(|j| matches!(j, Job::Emit { .. })).count();
                if run > 0 {
                    self.emits(&batch[i..i + run]).await?;
                    results.extend((0..run).map(|_| Done::Unit));
                    i += run;
                } else {
                    results.push(self.apply(&batch[i]).await?);
                    i += 1;
                }
            }
            Ok(())
        }
        .await;
        match outcome {
            Ok(()) => {
                self.conn.batch_execute("COMMIT").await?;
                Ok(results)
            }
            Err(e) => {
                if let Failed::Job(_) = e {
                    self.conn.batch_execute("ROLLBACK").await?;
                }
                Err(e)
            }
        }
    }

    /// Whether `batch` is only appends of documents known to have a row,
    /// without events: the common case, one round trip. Appends that write
    /// events (a new document's `document.created`, a restore's) are rare.
    fn plain_appends(batch: &[Job], known: &HashSet<DocName>) -> bool {
        batch
            .iter()
            .all(|j| matches!(j, Job::Append { doc, events, .. } if events.is_empty() && known.contains(doc)))
    }

    /// The `UPDATE` that adds [`Sizes`] to documents' rows.
    const ADD_SIZES: &'static str = "UPDATE documents d
         SET updated_at = GREATEST(d.updated_at, v.at), size_bytes = d.size_bytes + v.bytes
         FROM unnest($1::text[], $2::int8[], $3::int8[]) AS v(name, bytes, at) WHERE d.name = v.name";

    fn sizes_params(&self) -> (Vec<&str>, Vec<i64>, Vec<i64>) {
        let mut names = Vec::with_capacity(self.sizes.len());
        let mut bytes = Vec::with_capacity(self.sizes.len());
        let mut at = Vec::with_capacity(self.sizes.len());
        for (name, (b, t)) in &self.sizes {
            names.push(name.as_str());
            bytes.push(*b);
            at.push(*t);
        }
        (names, bytes, at)
    }

    /// Adds the sizes this transaction holds to their rows, when it flushes.
    async fn add_sizes(&mut self) -> Result<(), Failed> {
        if !self.flush || self.sizes.is_empty() {
            return Ok(());
        }
        let stmt = self.conn.prepare_cached(Self::ADD_SIZES).await?;
        let (names, bytes, at) = self.sizes_params();
        self.conn.execute(&stmt, &[&names, &bytes, &at]).await?;
        self.sizes.clear();
        Ok(())
    }

    /// The appends `jobs` (one log row each, see `pack`): new documents'
    /// rows, the log rows in one `INSERT`, when flushing the documents'
    /// sizes in one `UPDATE`, all sent without waiting for each other. With
    /// `own_tx` the transaction is begun and committed in the same
    /// pipeline; a failing statement aborts it and the `COMMIT` then rolls
    /// it back.
    async fn appends(&mut self, jobs: &[Job], own_tx: bool) -> Result<(), Failed> {
        let mut names = Vec::with_capacity(jobs.len());
        let mut seqs = Vec::with_capacity(jobs.len());
        let mut counts = Vec::with_capacity(jobs.len());
        let mut data = Vec::with_capacity(jobs.len());
        let mut new_docs: Vec<&str> = Vec::new();
        for job in jobs {
            let Job::Append { doc, entries, .. } = job else {
                continue;
            };
            let Some(first) = entries.first() else { continue };
            let row = pack(entries);
            let grown = self.sizes.entry(doc.as_str().to_owned()).or_default();
            grown.0 += row.len() as i64;
            grown.1 = self.now;
            if !self.known.contains(doc) && !new_docs.contains(&doc.as_str()) {
                new_docs.push(doc.as_str());
            }
            names.push(doc.as_str());
            seqs.push(first.seq as i64);
            counts.push(entries.len() as i64);
            data.push(row);
        }
        let add_sizes = self.flush && !self.sizes.is_empty();
        if names.is_empty() && !add_sizes {
            return Ok(());
        }
        let data: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
        let (size_names, size_bytes, size_at) = self.sizes_params();
        let conn = self.conn;
        let begin = conn.prepare_cached("BEGIN");
        let create = conn.prepare_cached(
            "INSERT INTO documents (name, created_at, updated_at)
             SELECT n, $2, $2 FROM unnest($1::text[]) AS n ON CONFLICT (name) DO NOTHING",
        );
        // A scalar subquery, not a join: a document missing here (deleted
        // meanwhile by another process) makes doc_id NULL and the
        // statement fail, instead of dropping its rows silently.
        let insert = conn.prepare_cached(
            "INSERT INTO updates (doc_id, seq, count, data, created_at)
             SELECT (SELECT id FROM documents WHERE name = v.name), v.seq, v.count, v.data, $5
             FROM unnest($1::text[], $2::int8[], $3::int8[], $4::bytea[]) AS v(name, seq, count, data)",
        );
        let sizes = conn.prepare_cached(Self::ADD_SIZES);
        let commit = conn.prepare_cached("COMMIT");
        let (begin, create, insert, sizes, commit) = tokio::try_join!(begin, create, insert, sizes, commit)?;
        let now = self.now;
        let no_params: [&(dyn tokio_postgres::types::ToSql + Sync); 0] = [];
        let insert_params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] = [&names, &seqs, &counts, &data, &now];
        let sizes_params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] = [&size_names, &size_bytes, &size_at];
        let (r_begin, r_create, r_insert, r_sizes, r_commit) = tokio::join!(
            async {
                if own_tx {
                    conn.execute(&begin, &no_params).await.map(|_| ())
                } else {
                    Ok(())
                }
            },
            async {
                if new_docs.is_empty() {
                    Ok(0)
                } else {
                    conn.execute(&create, &[&new_docs, &now]).await
                }
            },
            async {
                if names.is_empty() {
                    Ok(0)
                } else {
                    conn.execute(&insert, &insert_params).await
                }
            },
            async {
                if add_sizes {
                    conn.execute(&sizes, &sizes_params).await
                } else {
                    Ok(0)
                }
            },
            async {
                if own_tx {
                    conn.execute(&commit, &no_params).await.map(|_| ())
                } else {
                    Ok(())
                }
            },
        );
        // The first error is the cause; those after it are "transaction
        // aborted", and the COMMIT of an aborted transaction rolls it back.
        r_begin?;
        r_create?;
        let inserted = r_insert?;
        r_sizes?;
        r_commit?;
        if inserted != names.len() as u64 {
            return Err(Failed::Job(StoreError::Commit(format!(
                "{inserted} log rows stored of {}",
                names.len()
            ))));
        }
        if add_sizes {
            self.sizes.clear();
        }
        for job in jobs {
            if let Job::Append { doc, .. } = job {
                self.known.insert(doc.clone());
            }
        }
        Ok(())
    }

    async fn apply(&mut self, job: &Job) -> Result<Done, Failed> {
        {
            Ok(match job {
                Job::Append { .. } => {
                    self.appends(std::slice::from_ref(job), false).await?;
                    Done::Unit
                }
                Job::Compact { doc, snapshot, .. } => {
                    self.compact(doc, snapshot).await?;
                    Done::Unit
                }
                Job::Delete { doc, .. } => Done::Bool(self.delete(doc).await?),
                Job::SaveVersion {
                    doc,
                    snapshot,
                    kind,
                    label,
                    digest,
                    ..
                } => Done::Version(self.save_version(doc, snapshot, *kind, label, digest).await?),
                Job::NameVersion { doc, id, label, .. } => Done::Found(self.name_version(doc, *id, label).await?),
                Job::DeleteVersions { doc, ids, .. } => Done::Count(self.delete_versions(doc, ids).await?),
                Job::Revoke {
                    token_id, expires_at, ..
                } => {
                    self.revoke(token_id, *expires_at).await?;
                    Done::Unit
                }
                Job::Webhook { op, .. } => Done::Bool(self.webhook(op).await?),
                Job::Emit { .. } => {
                    self.emits(std::slice::from_ref(job)).await?;
                    Done::Unit
                }
                Job::PruneEvents {
                    upto_seq, before_ms, ..
                } => Done::Count(self.prune_events(*upto_seq, *before_ms).await?),
                Job::Close { .. } => Done::Unit,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use deadpool_postgres::{Manager, ManagerConfig, RecyclingMethod};
    use tokio::sync::oneshot;

    use super::super::{connect, schema};
    use super::*;
    use crate::storage::LogEntry;

    /// The shared test server, as the integration tests find it
    /// (`tests/common/postgres.rs`): required unless `WEFT_TEST_POSTGRES=skip`.
    fn test_server() -> Option<String> {
        match std::env::var("WEFT_TEST_POSTGRES") {
            Ok(url) if url == "skip" => None,
            Ok(url) if !url.is_empty() => Some(url),
            _ => panic!("WEFT_TEST_POSTGRES is not set (a PostgreSQL URL, or `skip`): see README, Development"),
        }
    }

    /// A pool on a fresh database of the test server, with weft's schema.
    async fn fresh_pool(server: &str, name: &str) -> Pool {
        let second = Duration::from_secs(5);
        let env = |_: &str| None;
        let admin = connect::resolve(server, None, second, second, &env).unwrap();
        let (client, conn) = admin.config.connect(admin.tls).await.unwrap();
        tokio::spawn(conn);
        // Two statements: a multi-statement query is one transaction, which
        // neither may run in.
        for sql in [
            format!("DROP DATABASE IF EXISTS {name}"),
            format!("CREATE DATABASE {name}"),
        ] {
            client.batch_execute(&sql).await.unwrap();
        }
        let mut config = connect::resolve(server, None, second, second, &env).unwrap();
        config.config.dbname(name);
        let manager = Manager::from_config(
            config.config,
            config.tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager).max_size(2).build().unwrap();
        let mut conn = pool.get().await.unwrap();
        let client: &mut tokio_postgres::Client = &mut conn;
        schema::migrate(client).await.unwrap();
        pool
    }

    /// A writer on `pool` with a 5 s timeout, as the store opens one.
    fn test_writer(pool: &Pool) -> Writer {
        Writer::new(
            pool.clone(),
            Arc::new(Health::default()),
            Arc::new(Metrics::default()),
            Duration::from_secs(5),
            Arc::new(watch::channel(0).0),
        )
    }

    /// An append of one update (`data`) to `doc` at `seq`, and its answer.
    fn append_job(doc: &str, seq: u64, data: Bytes) -> (Job, oneshot::Receiver<Result<(), StoreError>>) {
        let (reply, rx) = oneshot::channel();
        let job = Job::Append {
            doc: DocName::parse(doc).unwrap(),
            entries: vec![LogEntry { seq, data }],
            events: Vec::new(),
            reply,
        };
        (job, rx)
    }

    /// A job that fails (here: a sequence number stored already) fails
    /// alone; the batch's other jobs are committed.
    #[tokio::test]
    async fn one_failing_job_does_not_fail_its_batch() {
        let Some(server) = test_server() else {
            return;
        };
        let name = format!("weft_unit_batch_{}", std::process::id());
        let pool = fresh_pool(&server, &name).await;
        let mut writer = test_writer(&pool);
        let append = |doc: &str, seq: u64| append_job(doc, seq, Bytes::from_static(b"x"));
        let (first, _) = append("a", 1);
        writer.commit(vec![first]).await;
        let (ok_before, rx1) = append("b", 1);
        let (dup, rx2) = append("a", 1);
        let (ok_after, rx3) = append("c", 1);
        writer.commit(vec![ok_before, dup, ok_after]).await;
        assert!(rx1.await.unwrap().is_ok());
        assert!(rx2.await.unwrap().is_err(), "the duplicate fails");
        assert!(rx3.await.unwrap().is_ok());
        let conn = pool.get().await.unwrap();
        let rows: i64 = conn
            .query_one("SELECT COUNT(*) FROM updates", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(rows, 3);
        let docs: i64 = conn
            .query_one("SELECT COUNT(*) FROM documents", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(docs, 3, "b and c created in the batch that failed first");
        drop(conn);
        pool.close();
        drop_database(&server, &name).await;
    }

    /// Sizes wait (here: for an hour) whatever the jobs, and reach the
    /// rows when flushed; once due, with the next commit. Both counts are
    /// the stored rows' bytes, as a compaction counts them.
    #[tokio::test]
    async fn sizes_reach_the_rows_late_but_whole() {
        let Some(server) = test_server() else {
            return;
        };
        let name = format!("weft_unit_sizes_{}", std::process::id());
        let pool = fresh_pool(&server, &name).await;
        let mut writer = test_writer(&pool);
        writer.sizes_every = Duration::from_secs(3600);
        let doc = DocName::parse("sized").unwrap();
        let append = |seq: u64| append_job("sized", seq, Bytes::from(vec![7u8; 100]));
        let conn = pool.get().await.unwrap();
        let sql = "SELECT d.size_bytes, (SELECT SUM(octet_length(data)) FROM updates WHERE doc_id = d.id)::int8
                   FROM documents d WHERE name = 'sized'";
        let sizes = || async {
            conn.query_one(sql, &[])
                .await
                .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1)))
        };

        // A new document (its row created), plain appends, a version.
        for seq in [1, 2, 3] {
            let (job, rx) = append(seq);
            writer.commit(vec![job]).await;
            rx.await.unwrap().unwrap();
        }
        let (reply, rx) = oneshot::channel();
        let snapshot = crate::storage::Snapshot {
            state: vec![0; 4],
            upto_seq: 3,
            state_vector: vec![0],
            stream_id: None,
        };
        let version = Job::SaveVersion {
            doc: doc.clone(),
            snapshot,
            kind: crate::storage::VersionKind::Named,
            label: Some("v".into()),
            digest: vec![1; 32],
            reply,
        };
        writer.commit(vec![version]).await;
        rx.await.unwrap().unwrap();
        let (waiting, stored) = sizes().await.unwrap();
        assert_eq!(waiting, 0, "the size waits");
        assert!(stored > 0);

        writer.flush_sizes(true).await;
        assert_eq!(sizes().await.unwrap(), (stored, stored), "flushed");

        let (job, rx) = append(4);
        writer.commit(vec![job]).await;
        rx.await.unwrap().unwrap();
        assert_eq!(sizes().await.unwrap().0, stored, "waits again");
        writer.sizes_every = Duration::ZERO;
        let (job, rx) = append(5);
        writer.commit(vec![job]).await;
        rx.await.unwrap().unwrap();
        let (row, stored) = sizes().await.unwrap();
        assert_eq!(row, stored, "due: with the commit");
        assert!(writer.sizes.is_empty());
        drop(conn);
        pool.close();
        drop_database(&server, &name).await;
    }

    /// A statement the client refuses (a row asked for and none returned,
    /// a parameter of the wrong type, a column read as the wrong type)
    /// fails its job only: counted as an outage, it closed every sender
    /// of the batch with 4500 and marked the store down. A connection the
    /// server ends is an outage.
    #[tokio::test]
    async fn a_statement_error_is_not_an_outage() {
        let Some(server) = test_server() else {
            return;
        };
        let name = format!("weft_unit_outage_{}", std::process::id());
        let pool = fresh_pool(&server, &name).await;
        let conn = pool.get().await.unwrap();
        let none = conn.query_one("SELECT 1 WHERE false", &[]).await.unwrap_err();
        assert!(!is_outage(&none), "{none}");
        let wrong_param = conn.query_one("SELECT $1::int8", &[&"text"]).await.unwrap_err();
        assert!(!is_outage(&wrong_param), "{wrong_param}");
        let row = conn.query_one("SELECT 'x'::text", &[]).await.unwrap();
        let wrong_column = row.try_get::<_, i64>(0).unwrap_err();
        assert!(!is_outage(&wrong_column), "{wrong_column}");
        let db = conn.query_one("SELECT 1/0", &[]).await.unwrap_err();
        assert!(!is_outage(&db), "{db}");
        assert!(
            conn.query_one("SELECT 1", &[]).await.is_ok(),
            "the connection still serves"
        );

        let _ = conn
            .batch_execute("SELECT pg_terminate_backend(pg_backend_pid())")
            .await;
        let gone = conn.query_one("SELECT 1", &[]).await.unwrap_err();
        assert!(is_outage(&gone), "{gone}");
        drop(Object::take(conn));
        pool.close();
        drop_database(&server, &name).await;
    }

    async fn drop_database(server: &str, name: &str) {
        let second = Duration::from_secs(5);
        let admin = connect::resolve(server, None, second, second, &|_| None).unwrap();
        let (client, conn) = admin.config.connect(admin.tls).await.unwrap();
        tokio::spawn(conn);
        client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await
            .unwrap();
    }
}
