//! Cluster mode: the lease that lets one node deliver webhooks
//! (`events::webhook`): the key `weft:webhooks:lease`, holding the node
//! that has it, taken with `SET NX PX`, renewed by its holder every couple
//! of seconds, released at shutdown. A node that dies holds it at most
//! [`WEBHOOK_LEASE_TTL`] more; delivery then resumes on another node from
//! the stored cursors.

use std::time::Duration;

use super::{Broker, BrokerError};

pub const WEBHOOK_LEASE_KEY: &str = "weft:webhooks:lease";
/// Renewed every 2 s (`events::webhook::SYNC_EVERY`), so only a node
/// stalled for seconds loses it.
pub const WEBHOOK_LEASE_TTL: Duration = Duration::from_secs(10);

/// Take the lease, or renew it when this node has it. KEYS: lease; ARGV:
/// node, ttl in ms.
const TAKE_OR_RENEW: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

impl Broker {
    /// Takes or renews the webhook delivery lease; whether this node holds it.
    pub async fn webhook_lease(&self) -> Result<bool, BrokerError> {
        let held: i64 = redis::cmd("EVAL")
            .arg(TAKE_OR_RENEW)
            .arg(1)
            .arg(WEBHOOK_LEASE_KEY)
            .arg(&*self.node)
            .arg(WEBHOOK_LEASE_TTL.as_millis() as u64)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(held == 1)
    }

    /// Gives the webhook lease up, if this node still holds it.
    pub async fn release_webhook_lease(&self) -> Result<(), BrokerError> {
        let _: i64 = redis::cmd("EVAL")
            .arg(RELEASE)
            .arg(1)
            .arg(WEBHOOK_LEASE_KEY)
            .arg(&*self.node)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }
}
