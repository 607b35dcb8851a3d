//! Cluster mode only: Redis Streams carry each document's updates between
//! the nodes of a cluster (`--redis`; docs/CLUSTER.md).
//!
//! One stream per document, `weft:{<name>}:updates`: the braces are Redis
//! Cluster's hash tag, so every key of one document lands on one slot. An
//! entry holds one Yjs v1 update (field `u`). Its id is the resume cursor:
//! a node that loads a document reads the stream from the start
//! ([`Broker::range`]), then follows it from the last id it read
//! ([`Broker::follow`]), reconnecting with backoff when Redis goes away.
//!
//! Awareness (cursors, presence) rides a second stream per document,
//! `weft:{<name>}:awareness`, capped at about [`AWARENESS_KEPT`] entries:
//! states are renewed every 15 s, so an old entry matters little, and the
//! follower reads both streams in one `XREAD`, on the connection it has
//! (pub/sub would need a second kind of connection, and would lose what
//! is published while a node reconnects). Entries carry the node that
//! wrote them, so a node skips its own.
//!
//! This layer knows Redis and nothing of the protocol or of yrs: bytes in,
//! bytes out. `doc/` decides what an entry means.

mod control;
mod follow;
mod lease;
mod webhook_lease;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::streams::{StreamId, StreamRangeReply};
use redis::AsyncCommands;

use crate::metrics::Metrics;
use crate::name::DocName;

pub use control::Control;
pub use follow::Follower;
pub use lease::{LeaseState, LEASE_TTL};

/// An append or a read that waits longer than this fails (the append's
/// senders are closed with 4500 and resend when they reconnect).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// Connecting to Redis gives up after this long (and is retried).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Entries asked for in one XRANGE or XREAD.
const PAGE: usize = 1000;
/// The field of a stream entry that holds the update.
const UPDATE_FIELD: &str = "u";
/// Fields of an awareness entry: the node that wrote it, the awareness
/// update (y-protocols encoding).
const NODE_FIELD: &str = "n";
const AWARENESS_FIELD: &str = "a";
/// About how many awareness entries a document's awareness stream keeps.
pub const AWARENESS_KEPT: usize = 1000;

/// Errors of the broker layer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    /// Redis refused a command, or could not be reached.
    #[error("Redis: {0}")]
    Redis(String),
    /// An entry of a document's stream is not what weft writes.
    #[error("stream of document '{doc}': entry {id} {what}")]
    Corrupt { doc: String, id: String, what: String },
}

impl From<redis::RedisError> for BrokerError {
    fn from(e: redis::RedisError) -> Self {
        BrokerError::Redis(e.to_string())
    }
}

/// An entry's id (`<ms>-<seq>`), as Redis gives it.
pub type EntryId = String;

/// The id before every entry: a stream read from here is read whole.
pub const START: &str = "0-0";

/// An entry id as numbers, to compare ids (`None`: not an id).
pub fn id_key(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// The later of two ids (an id that does not parse counts as the start).
pub fn later(a: EntryId, b: EntryId) -> EntryId {
    if id_key(&b).unwrap_or_default() > id_key(&a).unwrap_or_default() {
        b
    } else {
        a
    }
}

/// One entry of a document's stream.
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: EntryId,
    pub update: Bytes,
}

/// The Redis stream key of a document's updates.
pub fn updates_key(doc: &DocName) -> String {
    format!("weft:{{{doc}}}:updates")
}

/// The Redis stream key of a document's awareness updates.
pub fn awareness_key(doc: &DocName) -> String {
    format!("weft:{{{doc}}}:awareness")
}

/// The Redis key of a document's compaction lease (`broker/lease.rs`).
fn lease_key(doc: &DocName) -> String {
    format!("weft:{{{doc}}}:lease")
}

/// The Redis key holding how far a document's stream was trimmed.
fn trimmed_key(doc: &DocName) -> String {
    format!("weft:{{{doc}}}:trimmed")
}

/// What a follower hands its actor at a time: other nodes' entries.
#[derive(Debug, Default)]
pub struct Batch {
    /// Document updates, in stream order (this node's own included: the
    /// actor knows their ids).
    pub updates: Vec<Entry>,
    /// Awareness updates of other nodes, in stream order.
    pub awareness: Vec<Bytes>,
}

/// A node's link to Redis: one multiplexed connection for appends and
/// reads (reconnected by the connection manager), and the client from which
/// each followed stream opens its own connection for its blocking reads.
#[derive(Clone)]
pub struct Broker {
    client: redis::Client,
    conn: ConnectionManager,
    metrics: Arc<Metrics>,
    /// This process, in the awareness entries it writes.
    node: Arc<str>,
}

impl Broker {
    /// Connects; fails when the URL does not parse or Redis cannot be
    /// reached, so that a node never starts without its cluster.
    pub async fn connect(url: &str, metrics: Arc<Metrics>) -> Result<Self, BrokerError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(COMMAND_TIMEOUT)
            .set_number_of_retries(3)
            .set_max_delay(1000);
        let mut conn = ConnectionManager::new_with_config(client.clone(), config).await?;
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        let node = uuid::Uuid::new_v4().to_string().into();
        Ok(Self {
            client,
            conn,
            metrics,
            node,
        })
    }

    /// Appends a batch of updates to a document's stream in one pipeline
    /// (one round trip, and with `appendfsync always` one fsync for the
    /// batch), and returns their ids in order. Once it returns, the updates
    /// are as durable as Redis makes them.
    pub async fn append(&self, doc: &DocName, updates: &[Bytes]) -> Result<Vec<EntryId>, BrokerError> {
        let key = updates_key(doc);
        let mut pipe = redis::pipe();
        for update in updates {
            pipe.cmd("XADD").arg(&key).arg("*").arg(UPDATE_FIELD).arg(&update[..]);
        }
        let started = Instant::now();
        let ids: Vec<EntryId> = pipe.query_async(&mut self.conn.clone()).await?;
        self.metrics.record_stream_append(started.elapsed());
        Ok(ids)
    }

    /// Every entry of a document's stream after `after`, in order.
    pub async fn range(&self, doc: &DocName, after: &str) -> Result<Vec<Entry>, BrokerError> {
        let key = updates_key(doc);
        let mut conn = self.conn.clone();
        let mut entries = Vec::new();
        let mut from = format!("({after}");
        loop {
            let reply: StreamRangeReply = conn.xrange_count(&key, &from, "+", PAGE).await?;
            let n = reply.ids.len();
            for id in reply.ids {
                entries.push(entry(doc, id)?);
            }
            match entries.last() {
                Some(last) if n == PAGE => from = format!("({}", last.id),
                _ => return Ok(entries),
            }
        }
    }

    /// Whether a document has an updates stream: some node appended to it,
    /// and PostgreSQL may hold no snapshot of it yet. (A stream trimmed
    /// empty still exists; a deleted document's is gone.)
    pub async fn has_stream(&self, doc: &DocName) -> Result<bool, BrokerError> {
        let found: i64 = self.conn.clone().exists(updates_key(doc)).await?;
        Ok(found > 0)
    }

    /// Deletes a document's streams and keys (the document was deleted).
    pub async fn delete(&self, doc: &DocName) -> Result<(), BrokerError> {
        let keys = [updates_key(doc), awareness_key(doc), lease_key(doc), trimmed_key(doc)];
        let _: i64 = self.conn.clone().del(&keys).await?;
        Ok(())
    }

    /// Shares an awareness update with the other nodes. Not waited on by
    /// the actor: a lost one is renewed within 15 s.
    pub fn publish_awareness(&self, doc: &DocName, update: Vec<u8>) {
        let mut conn = self.conn.clone();
        let key = awareness_key(doc);
        let node = self.node.clone();
        tokio::spawn(async move {
            let sent: Result<String, _> = redis::cmd("XADD")
                .arg(&key)
                .arg("MAXLEN")
                .arg("~")
                .arg(AWARENESS_KEPT)
                .arg("*")
                .arg(NODE_FIELD)
                .arg(&*node)
                .arg(AWARENESS_FIELD)
                .arg(update)
                .query_async(&mut conn)
                .await;
            if let Err(e) = sent {
                tracing::debug!(error = %e, "awareness not shared with the other nodes");
            }
        });
    }

    /// The awareness updates of other nodes a document's awareness stream
    /// keeps, and the id to follow it from.
    pub async fn awareness(&self, doc: &DocName) -> Result<(Vec<Bytes>, EntryId), BrokerError> {
        let reply: StreamRangeReply = self.conn.clone().xrange_all(awareness_key(doc)).await?;
        let last = reply.ids.last().map_or_else(|| START.to_string(), |id| id.id.clone());
        let updates = reply.ids.iter().filter_map(|id| self.foreign_awareness(id)).collect();
        Ok((updates, last))
    }

    /// An awareness entry's update, unless this node wrote it.
    fn foreign_awareness(&self, id: &StreamId) -> Option<Bytes> {
        let node: String = id.get(NODE_FIELD)?;
        if *node == *self.node {
            return None;
        }
        let update: Vec<u8> = id.get(AWARENESS_FIELD)?;
        Some(Bytes::from(update))
    }

    /// Follows a document's streams from these ids (see [`Follower`]).
    pub fn follow(&self, doc: &DocName, updates_after: EntryId, awareness_after: EntryId) -> Follower {
        Follower::spawn(self.clone(), doc.clone(), updates_after, awareness_after)
    }

    /// Whether Redis answers, for `/healthz`.
    pub async fn healthy(&self) -> Result<(), BrokerError> {
        let _: String = redis::cmd("PING").query_async(&mut self.conn.clone()).await?;
        Ok(())
    }
}

/// A stream entry as weft wrote it: the update in field `u`.
fn entry(doc: &DocName, id: StreamId) -> Result<Entry, BrokerError> {
    let corrupt = |what: &str| BrokerError::Corrupt {
        doc: doc.to_string(),
        id: id.id.clone(),
        what: what.to_string(),
    };
    let value = id.map.get(UPDATE_FIELD).ok_or_else(|| corrupt("has no update"))?;
    let update: Vec<u8> = redis::from_redis_value(value).map_err(|_| corrupt("holds no bytes"))?;
    Ok(Entry {
        id: id.id,
        update: Bytes::from(update),
    })
}
