//! Compaction leases: one node at a time compacts a document, trims its
//! stream and takes its automatic versions (docs/CLUSTER.md).
//!
//! The lease is a key per document, `weft:{<name>}:lease`, holding the
//! node that has it, taken with `SET NX PX` and renewed (`PEXPIRE`) by the
//! holder at every tick of the document's actor, released with a
//! compare-and-delete when it unloads. The scripts are sent with `EVAL`
//! (a few hundred bytes, once a tick per loaded document; Redis caches
//! them compiled). A node that dies holds it at most
//! [`LEASE_TTL`] more. The same round trip answers how far the stream was
//! trimmed (`weft:{<name>}:trimmed`, the `MINID` of the last trim: every
//! entry before it is gone), so a node can tell it fell behind.

use std::time::Duration;

use super::{trimmed_key, updates_key, Broker, BrokerError, EntryId};
use crate::name::DocName;

/// How long a lease lasts without renewal. Renewed every tick (at most 1 s
/// apart), so only a node that has stopped (dead, or stalled for seconds)
/// loses it; the holder counts on it for half of this only.
pub const LEASE_TTL: Duration = Duration::from_secs(10);

/// Take the lease, or renew it when this node has it; then say how far
/// the stream was trimmed. KEYS: lease, trimmed; ARGV: node, ttl in ms.
const TAKE_OR_RENEW: &str = r"
local held = 0
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  held = 1
elseif redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  held = 1
end
local trimmed = redis.call('GET', KEYS[2]) or ''
return {held, trimmed}
";

/// Delete the lease only if this node holds it. KEYS: lease; ARGV: node.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Record the trim point (only forward), then trim. KEYS: stream, trimmed;
/// ARGV: the first id to keep. Compares ids as `<ms>-<seq>` numbers.
const TRIM: &str = r"
local function key(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms or 0), tonumber(seq or 0)
end
local old = redis.call('GET', KEYS[2])
if old then
  local oms, oseq = key(old)
  local nms, nseq = key(ARGV[1])
  if nms < oms or (nms == oms and nseq <= oseq) then return 0 end
end
redis.call('SET', KEYS[2], ARGV[1])
return redis.call('XTRIM', KEYS[1], 'MINID', ARGV[1])
";

/// What one lease round trip found.
#[derive(Debug)]
pub struct LeaseState {
    /// This node holds the lease (for [`LEASE_TTL`] from before the call).
    pub held: bool,
    /// Every entry before this one was trimmed (`None`: never trimmed).
    pub trimmed: Option<EntryId>,
}

impl Broker {
    /// Takes or renews the document's lease (see [`TAKE_OR_RENEW`]).
    pub async fn lease(&self, doc: &DocName) -> Result<LeaseState, BrokerError> {
        let (held, trimmed): (i64, String) = redis::cmd("EVAL")
            .arg(TAKE_OR_RENEW)
            .arg(2)
            .arg(super::lease_key(doc))
            .arg(trimmed_key(doc))
            .arg(&*self.node)
            .arg(LEASE_TTL.as_millis() as u64)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(LeaseState {
            held: held == 1,
            trimmed: (!trimmed.is_empty()).then_some(trimmed),
        })
    }

    /// Gives the lease up, if this node still holds it.
    pub async fn release(&self, doc: &DocName) -> Result<(), BrokerError> {
        let _: i64 = redis::cmd("EVAL")
            .arg(RELEASE)
            .arg(1)
            .arg(super::lease_key(doc))
            .arg(&*self.node)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// Deletes the stream's entries before `keep` (`XTRIM MINID`), after
    /// recording that it did; nothing when an earlier trim went further.
    /// Returns the entries deleted.
    pub async fn trim(&self, doc: &DocName, keep: &str) -> Result<u64, BrokerError> {
        let n: i64 = redis::cmd("EVAL")
            .arg(TRIM)
            .arg(2)
            .arg(updates_key(doc))
            .arg(trimmed_key(doc))
            .arg(keep)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(n.max(0) as u64)
    }

    /// Every entry before this one was trimmed (`None`: never trimmed).
    pub async fn trimmed(&self, doc: &DocName) -> Result<Option<EntryId>, BrokerError> {
        let trimmed: Option<String> = redis::AsyncCommands::get(&mut self.conn.clone(), trimmed_key(doc)).await?;
        Ok(trimmed)
    }
}
