//! Control events every node must hear at once: a token revoked, a document
//! deleted. They ride Redis pub/sub on one channel (`weft:control`): an
//! event lost while a node reconnects costs a delay, not a safety hole,
//! because both are also checked where they are stored (PostgreSQL): a
//! revoked token is refused at every upgrade, a deleted document is gone
//! from the store.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::{Broker, BrokerError};
use crate::name::DocName;

/// The pub/sub channel of control events.
const CHANNEL: &str = "weft:control";
/// Events waiting for the node to act on them.
const QUEUE: usize = 256;
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// An event for every node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Close the connections holding this token id (4403).
    Revoked { token_id: String },
    /// Close this document's peers (4404) and unload it without saving.
    Deleted { doc: DocName },
}

impl Control {
    fn encode(&self) -> String {
        match self {
            Control::Revoked { token_id } => format!("revoked\n{token_id}"),
            Control::Deleted { doc } => format!("deleted\n{doc}"),
        }
    }

    fn decode(message: &str) -> Option<Control> {
        let (kind, value) = message.split_once('\n')?;
        match kind {
            "revoked" => Some(Control::Revoked {
                token_id: value.to_string(),
            }),
            "deleted" => DocName::parse(value).ok().map(|doc| Control::Deleted { doc }),
            _ => None,
        }
    }
}

impl Broker {
    /// Tells every node (this one too) of an event.
    pub async fn publish_control(&self, event: &Control) -> Result<(), BrokerError> {
        let _: i64 = redis::cmd("PUBLISH")
            .arg(CHANNEL)
            .arg(event.encode())
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// The control events of the cluster, as they are published; a task
    /// subscribed to them, reconnecting with backoff, until the receiver
    /// is dropped.
    pub fn control_events(&self) -> mpsc::Receiver<Control> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let client = self.client.clone();
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(50);
            while !tx.is_closed() {
                match subscribe(&client, &tx).await {
                    Ok(()) => return,
                    Err(e) => warn!(error = %e, "control events: lost Redis; subscribing again"),
                }
                metrics
                    .redis_reconnects
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        });
        rx
    }
}

/// Hands events over until the receiver is gone (`Ok`) or Redis fails.
async fn subscribe(client: &redis::Client, tx: &mpsc::Sender<Control>) -> Result<(), BrokerError> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(CHANNEL).await?;
    let mut messages = pubsub.on_message();
    while let Some(message) = messages.next().await {
        let Ok(text) = message.get_payload::<String>() else {
            continue;
        };
        match Control::decode(&text) {
            Some(event) => {
                if tx.send(event).await.is_err() {
                    return Ok(());
                }
            }
            None => debug!(message = %text, "control event not understood; skipped"),
        }
    }
    Err(BrokerError::Redis("the subscription ended".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_survive_their_encoding() {
        for event in [
            Control::Revoked {
                token_id: "abc-123".into(),
            },
            Control::Deleted {
                doc: DocName::parse("notes/a b").unwrap(),
            },
        ] {
            assert_eq!(Control::decode(&event.encode()), Some(event));
        }
        assert_eq!(Control::decode("nonsense"), None);
        assert_eq!(Control::decode("deleted\n"), None, "an empty name is not a document");
    }
}
