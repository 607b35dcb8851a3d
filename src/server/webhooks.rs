//! Wiring of webhook delivery: the settings from the flags and the cluster
//! lease over the broker (the events layer sits below `broker`, so it is
//! handed in from here). `content` subscriptions render documents through
//! the feed's content source, which `server.rs` sets.

use std::sync::Arc;

use tracing::warn;

use super::ServerError;
use crate::broker::Broker;
use crate::config::Config;
use crate::doc::Registry;
use crate::events::webhook::{DeliveryLease, Settings, Webhooks};
use crate::events::Feed;
use crate::metrics::Metrics;
use crate::storage::{BoxFuture, DocStore};

/// The flags, checked before anything starts.
pub(super) fn settings(config: &Config) -> Result<Settings, ServerError> {
    Settings::from_flags(&config.webhook).map_err(|e| ServerError::Config(e.to_string()))
}

struct BrokerLease(Arc<Broker>);

impl DeliveryLease for BrokerLease {
    fn hold(&self) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            match self.0.webhook_lease().await {
                Ok(held) => held,
                Err(e) => {
                    // Without Redis this node cannot know it is alone:
                    // it stops delivering rather than risk two senders.
                    warn!(error = %e, "webhooks: cannot renew the delivery lease");
                    false
                }
            }
        })
    }

    fn release(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Err(e) = self.0.release_webhook_lease().await {
                warn!(error = %e, "webhooks: cannot release the delivery lease");
            }
        })
    }
}

pub(super) async fn start(
    settings: Settings,
    store: Arc<dyn DocStore>,
    feed: Feed,
    registry: &Registry,
    metrics: Arc<Metrics>,
) -> Result<Webhooks, ServerError> {
    let lease = registry
        .broker()
        .map(|b| Arc::new(BrokerLease(b.clone())) as Arc<dyn DeliveryLease>);
    Webhooks::start(store, feed, settings, metrics, lease)
        .await
        .map_err(|e| ServerError::Config(e.to_string()))
}
