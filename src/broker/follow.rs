//! Following a document's streams: a task per followed document reads new
//! entries of its updates and awareness streams with one `XREAD BLOCK`, on
//! a connection of its own (a blocking read holds its connection), and
//! hands them to the document's actor over a bounded channel, so a slow
//! actor slows the reads, never loses entries. When Redis goes away, it
//! reconnects with backoff and goes on from the last ids it handed over:
//! nothing is skipped and nothing is read twice.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::streams::StreamReadReply;
use redis::AsyncConnectionConfig;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::{awareness_key, entry, updates_key, Batch, Broker, BrokerError, EntryId, CONNECT_TIMEOUT, PAGE};
use crate::name::DocName;

/// How long one XREAD waits for entries before it is sent again: bounds how
/// long a follower outlives its actor.
const BLOCK: Duration = Duration::from_secs(1);
/// Backoff between reconnection attempts: from the first to the longest.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Batches of entries waiting for the actor.
const CHANNEL: usize = 16;
/// After a read that did not fill a page, how long to let entries gather
/// before the next one. Each read costs this node a round trip, a wake-up
/// of the actor and a write to each of its peers, whatever it holds, so
/// larger reads are cheaper per update; the pause is paid in cross-node
/// latency, which has room (bench/FINDINGS.md, *Cluster: where weft's CPU
/// per update goes*).
const GATHER: Duration = Duration::from_millis(1);

/// The receiving end, held by the actor; dropping it ends the task.
pub struct Follower {
    rx: mpsc::Receiver<Batch>,
}

impl Follower {
    pub(super) fn spawn(broker: Broker, doc: DocName, updates: EntryId, awareness: EntryId) -> Self {
        let (tx, rx) = mpsc::channel(CHANNEL);
        tokio::spawn(async move {
            let mut last = Cursors { updates, awareness };
            tokio::select! {
                _ = follow(&broker, &doc, &mut last, &tx) => {}
                _ = tx.closed() => {}
            }
        });
        Self { rx }
    }

    /// The next entries, in stream order; `None` never (the task runs until
    /// this is dropped), unless the runtime is shutting down.
    pub async fn next(&mut self) -> Option<Batch> {
        self.rx.recv().await
    }
}

/// The last id handed over, of each stream.
struct Cursors {
    updates: EntryId,
    awareness: EntryId,
}

async fn follow(broker: &Broker, doc: &DocName, last: &mut Cursors, tx: &mpsc::Sender<Batch>) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(BLOCK * 3);
        let failure = match broker
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
            Ok(mut conn) => match read(broker, &mut conn, doc, last, tx).await {
                Ok(()) => return, // the actor is gone
                Err(e) => e,
            },
            Err(e) => e.into(),
        };
        warn!(error = %failure, last = %last.updates, retry_ms = backoff.as_millis() as u64, "following the document's stream failed; reconnecting");
        broker.metrics.redis_reconnects.fetch_add(1, Relaxed);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// How old an entry is, by the milliseconds of its id (set by Redis's
/// clock); `None` when the clocks disagree the other way.
fn age(id: &str) -> Option<Duration> {
    let ms: i64 = id.split_once('-')?.0.parse().ok()?;
    let age = crate::clock::now_ms().checked_sub(ms)?;
    u64::try_from(age).ok().map(Duration::from_millis)
}

/// Reads until the actor is gone (`Ok`) or Redis fails (`Err`).
async fn read(
    broker: &Broker,
    conn: &mut MultiplexedConnection,
    doc: &DocName,
    last: &mut Cursors,
    tx: &mpsc::Sender<Batch>,
) -> Result<(), BrokerError> {
    let (updates_key, awareness_key) = (updates_key(doc), awareness_key(doc));
    loop {
        let reply: Option<StreamReadReply> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(PAGE)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(&updates_key)
            .arg(&awareness_key)
            .arg(&last.updates)
            .arg(&last.awareness)
            .query_async(conn)
            .await?;
        let Some(reply) = reply else { continue };
        let full = reply.keys.iter().any(|stream| stream.ids.len() >= PAGE);
        let mut batch = Batch::default();
        for stream in reply.keys {
            let updates = stream.key == updates_key;
            for id in stream.ids {
                if !updates {
                    last.awareness = id.id.clone();
                    batch.awareness.extend(broker.foreign_awareness(&id));
                    continue;
                }
                last.updates = id.id.clone();
                // An entry weft did not write is skipped, not retried for ever.
                match entry(doc, id) {
                    Ok(entry) => batch.updates.push(entry),
                    Err(e) => warn!(error = %e, "stream entry skipped"),
                }
            }
        }
        if batch.updates.is_empty() && batch.awareness.is_empty() {
            continue;
        }
        // The update's path between nodes (doc/actor/cluster.rs, `LATENCY`).
        tracing::trace!(target: "weft::latency", first = batch.updates.first().map_or("", |e| e.id.as_str()), last = %last.updates, "read");
        if let Some(lag) = batch.updates.last().and_then(|e| age(&e.id)) {
            broker.metrics.record_stream_lag(lag);
        }
        debug!(
            updates = batch.updates.len(),
            awareness = batch.awareness.len(),
            last = %last.updates,
            "stream entries read"
        );
        if tx.send(batch).await.is_err() {
            return Ok(());
        }
        if !full {
            tokio::time::sleep(GATHER).await;
        }
    }
}
