//! Webhook delivery's series (issue 16): per subscription, labelled with
//! its id (ids, never URLs: a URL may carry a token in its query); one
//! latency histogram for every attempt, and one for how long delivered
//! events waited since their commit.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use super::histogram::{Histogram, Lag, Seconds};

/// One subscription's counters; the delivery task holds them.
#[derive(Debug, Default)]
pub struct WebhookCounters {
    /// Events the receiver accepted (2xx).
    pub delivered: AtomicU64,
    /// Attempts that failed and were tried again.
    pub retried: AtomicU64,
    /// Events given up on (recorded in `webhook_failures`).
    pub failed: AtomicU64,
    /// 1 while the event being delivered has failed at least once.
    pub failing: AtomicU64,
}

#[derive(Default)]
pub struct WebhookMetrics {
    subscriptions: Mutex<BTreeMap<String, Arc<WebhookCounters>>>,
    latency: Histogram<Seconds>,
    lag: Histogram<Lag>,
}

impl WebhookMetrics {
    /// The counters of subscription `id`, made on first use.
    pub fn counters(&self, id: &str) -> Arc<WebhookCounters> {
        self.subscriptions
            .lock()
            .unwrap()
            .entry(id.to_string())
            .or_default()
            .clone()
    }

    /// A deleted subscription's series go away.
    pub fn forget(&self, id: &str) {
        self.subscriptions.lock().unwrap().remove(id);
    }

    /// One attempt's time, from connecting to the status.
    pub fn record_attempt(&self, took: Duration) {
        self.latency.observe_duration(took);
    }

    /// An event was delivered, `lag_ms` after its commit (wall clocks: in
    /// cluster mode, the writing node's against the delivering one's).
    pub fn record_delivered(&self, lag_ms: i64) {
        self.lag.observe(u64::try_from(lag_ms).unwrap_or(0));
    }

    pub(super) fn encode(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let subs: Vec<(String, Arc<WebhookCounters>)> = self
            .subscriptions
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        type Field = fn(&WebhookCounters) -> &AtomicU64;
        let series: [(&str, &str, MetricType, Field); 4] = [
            (
                "weft_webhook_deliveries",
                "Events a webhook receiver accepted (2xx), per subscription.",
                MetricType::Counter,
                |c| &c.delivered,
            ),
            (
                "weft_webhook_retries",
                "Webhook attempts that failed and were tried again, per subscription.",
                MetricType::Counter,
                |c| &c.retried,
            ),
            (
                "weft_webhook_failures",
                "Events a webhook subscription gave up on (GET /api/webhooks/{id}/failures), per subscription.",
                MetricType::Counter,
                |c| &c.failed,
            ),
            (
                "weft_webhook_failing",
                "1 while the event a webhook subscription is delivering has failed at least once.",
                MetricType::Gauge,
                |c| &c.failing,
            ),
        ];
        for (name, help, kind, field) in series {
            let mut family = encoder.encode_descriptor(name, help, None, kind)?;
            for (id, counters) in &subs {
                let labels = [("webhook", id.as_str())];
                let value = field(counters).load(Relaxed);
                match kind {
                    MetricType::Gauge => ConstGauge::new(value).encode(family.encode_family(&labels)?)?,
                    _ => ConstCounter::new(value).encode(family.encode_family(&labels)?)?,
                }
            }
        }
        let name = "weft_webhook_attempt_duration_seconds";
        let help = "Time each webhook attempt took, from connecting to the receiver's status (or the timeout).";
        self.latency
            .encode(encoder.encode_descriptor(name, help, None, self.latency.metric_type())?)?;
        let name = "weft_webhook_delivery_lag_seconds";
        let help = "Time from an event's commit to its delivery (the receiver's 2xx), retries included.";
        self.lag
            .encode(encoder.encode_descriptor(name, help, None, self.lag.metric_type())?)
    }
}
