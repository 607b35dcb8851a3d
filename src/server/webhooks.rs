//! Wiring of webhook delivery: the settings from the flags, the cluster
//! lease over the broker, and the document renderer for `content`
//! subscriptions (the events layer sits below `doc` and `broker`, so both
//! are handed in from here).

use std::sync::Arc;

use tracing::warn;

use super::ServerError;
use crate::broker::Broker;
use crate::config::Config;
use crate::doc::{DocName, Registry};
use crate::events::webhook::{ContentSource, DeliveryLease, Settings, Webhooks};
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
    let docs = registry.clone();
    let content: ContentSource = Arc::new(move |name: String| {
        let docs = docs.clone();
        Box::pin(async move {
            let name = DocName::parse(&name).ok()?;
            docs.with_doc(&name, |h| async move { h.content().await }).await.ok()
        })
    });
    Webhooks::start(store, feed, settings, metrics, lease, Some(content))
        .await
        .map_err(|e| ServerError::Config(e.to_string()))
}
