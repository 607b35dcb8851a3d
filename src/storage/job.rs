//! A write, as a store's writer takes it off its queue: both stores commit
//! every job waiting in one transaction (group commit), so both share the
//! job type, the queue in front of the writer, and how a result goes back.

use tokio::sync::{mpsc, oneshot};

use crate::event::NewEvent;
use crate::name::DocName;
use crate::storage::{BoxFuture, LogEntry, Reported, Snapshot, StoreError, VersionKind, VersionMeta};

/// Jobs waiting for the writer; senders wait (asynchronously) when it is full.
pub(crate) const WRITE_QUEUE: usize = 4096;

/// A write and the channel its answer goes back on.
pub(crate) enum Job {
    Append {
        doc: DocName,
        entries: Vec<LogEntry>,
        /// Written with the log row; empty but for a restore's update.
        events: Vec<NewEvent>,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Events on their own, and how far a `document.updated` among them
    /// reports its document.
    Emit {
        events: Vec<NewEvent>,
        reported: Option<Reported>,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    PruneEvents {
        upto_seq: i64,
        before_ms: i64,
        reply: oneshot::Sender<Result<u64, StoreError>>,
    },
    Compact {
        doc: DocName,
        snapshot: Snapshot,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    Delete {
        doc: DocName,
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
    SaveVersion {
        doc: DocName,
        snapshot: Snapshot,
        kind: VersionKind,
        label: Option<String>,
        digest: Vec<u8>,
        reply: oneshot::Sender<Result<VersionMeta, StoreError>>,
    },
    NameVersion {
        doc: DocName,
        id: i64,
        label: Option<String>,
        reply: oneshot::Sender<Result<Option<VersionMeta>, StoreError>>,
    },
    DeleteVersions {
        doc: DocName,
        ids: Vec<i64>,
        reply: oneshot::Sender<Result<usize, StoreError>>,
    },
    Revoke {
        token_id: String,
        expires_at: u64,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    Webhook {
        op: crate::storage::WebhookWrite,
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
    Close {
        reply: oneshot::Sender<()>,
    },
}

/// What a job produced, before the batch commits.
pub(crate) enum Done {
    Unit,
    Bool(bool),
    Count(usize),
    Version(VersionMeta),
    Found(Option<VersionMeta>),
}

/// Answers a job with what it produced, in the type its caller waits for.
/// The updates a committed batch appended, and their bytes.
pub(crate) fn appended(batch: &[Job], results: &[Result<Done, StoreError>]) -> (usize, u64) {
    let committed = batch.iter().zip(results).filter(|(_, result)| result.is_ok());
    committed.fold((0, 0), |(updates, bytes), (job, _)| match job {
        Job::Append { entries, .. } => (
            updates + entries.len(),
            bytes + entries.iter().map(|e| e.data.len() as u64).sum::<u64>(),
        ),
        _ => (updates, bytes),
    })
}

pub(crate) fn finish(job: Job, result: Result<Done, StoreError>) {
    match job {
        Job::Append { reply, .. }
        | Job::Compact { reply, .. }
        | Job::Revoke { reply, .. }
        | Job::Emit { reply, .. } => {
            let _ = reply.send(result.map(|_| ()));
        }
        Job::Delete { reply, .. } | Job::Webhook { reply, .. } => {
            let _ = reply.send(result.map(|done| matches!(done, Done::Bool(true))));
        }
        Job::SaveVersion { reply, .. } => {
            let _ = reply.send(result.and_then(|done| match done {
                Done::Version(meta) => Ok(meta),
                _ => Err(StoreError::Commit("version not saved".into())),
            }));
        }
        Job::NameVersion { reply, .. } => {
            let _ = reply.send(result.map(|done| match done {
                Done::Found(meta) => meta,
                _ => None,
            }));
        }
        Job::DeleteVersions { reply, .. } => {
            let _ = reply.send(result.map(|done| match done {
                Done::Count(n) => n,
                _ => 0,
            }));
        }
        Job::PruneEvents { reply, .. } => {
            let _ = reply.send(result.map(|done| match done {
                Done::Count(n) => n as u64,
                _ => 0,
            }));
        }
        Job::Close { .. } => {}
    }
}

/// The sending side of a writer's queue.
pub(crate) struct JobQueue(pub(crate) mpsc::Sender<Job>);

impl JobQueue {
    /// Queues the job `job` makes with its reply channel for the writer, and
    /// waits for the answer.
    pub(crate) fn submit<T: Send + 'static>(
        &self,
        job: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Job,
    ) -> BoxFuture<'_, Result<T, StoreError>> {
        let (reply, answer) = oneshot::channel();
        let job = job(reply);
        Box::pin(async move {
            self.0.send(job).await.map_err(|_| StoreError::Closed)?;
            answer.await.map_err(|_| StoreError::Closed)?
        })
    }

    /// Like [`submit`](Self::submit), but the job is queued before this
    /// returns when the queue has room, so that jobs a caller submits one
    /// after another without waiting are committed in that order (peers'
    /// events of one document).
    pub(crate) fn submit_now<T: Send + 'static>(
        &self,
        job: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Job,
    ) -> BoxFuture<'_, Result<T, StoreError>> {
        let (reply, answer) = oneshot::channel();
        let queued = match self.0.try_send(job(reply)) {
            Ok(()) => None,
            Err(mpsc::error::TrySendError::Full(job)) => Some(job),
            Err(mpsc::error::TrySendError::Closed(_)) => return Box::pin(async { Err(StoreError::Closed) }),
        };
        Box::pin(async move {
            if let Some(job) = queued {
                self.0.send(job).await.map_err(|_| StoreError::Closed)?;
            }
            answer.await.map_err(|_| StoreError::Closed)?
        })
    }

    /// Asks the writer to finish and waits until it has.
    pub(crate) fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let (reply, rx) = oneshot::channel();
            if self.0.send(Job::Close { reply }).await.is_ok() {
                let _ = rx.await;
            }
        })
    }
}

/// Takes the jobs of one batch: `first` and whatever else waits, up to
/// `max`; a `Close` among them is taken out and returned apart.
pub(crate) fn take_batch(
    first: Job,
    rx: &mut mpsc::Receiver<Job>,
    max: usize,
) -> (Vec<Job>, Option<oneshot::Sender<()>>) {
    let mut batch = vec![first];
    while batch.len() < max {
        match rx.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
    let mut close = None;
    batch.retain_mut(|job| match job {
        Job::Close { reply } => {
            close = Some(std::mem::replace(reply, oneshot::channel().0));
            false
        }
        _ => true,
    });
    (batch, close)
}
