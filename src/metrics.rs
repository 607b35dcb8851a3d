//! weft's series at `/metrics`, in the Prometheus text format (0.0.4)
//! written by the `prometheus-client` crate.
//!
//! Every hot path only touches atomics: a relaxed `fetch_add` on a field
//! below for counters and gauges, two for a histogram observation. A scrape
//! hands the values to the crate's encoder through a `Collector` that reads
//! the tables at the end of this file; the series names are the ones weft
//! has always exposed (users scrape them), and a unit test holds them.

mod histogram;
mod webhooks;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::event::EventType;
pub use histogram::{Buckets, Histogram};
use histogram::{Bytes, Count, Seconds};
pub use webhooks::{WebhookCounters, WebhookMetrics};

/// Why the server closed a connection; one counter each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kick {
    SlowConsumer,
    BadMessage,
    BadUpdate,
    TooBig,
    TextFrame,
    StorageFailed,
    Deleted,
    DocTooLarge,
    RateLimited,
    TokenExpired,
    TokenRevoked,
}

impl Kick {
    const ALL: [Kick; 11] = [
        Kick::SlowConsumer,
        Kick::BadMessage,
        Kick::BadUpdate,
        Kick::TooBig,
        Kick::TextFrame,
        Kick::StorageFailed,
        Kick::Deleted,
        Kick::DocTooLarge,
        Kick::RateLimited,
        Kick::TokenExpired,
        Kick::TokenRevoked,
    ];

    fn label(self) -> &'static str {
        match self {
            Kick::SlowConsumer => "slow_consumer",
            Kick::BadMessage => "bad_message",
            Kick::BadUpdate => "bad_update",
            Kick::TooBig => "too_big",
            Kick::TextFrame => "text_frame",
            Kick::StorageFailed => "storage_failed",
            Kick::Deleted => "deleted",
            Kick::DocTooLarge => "doc_too_large",
            Kick::RateLimited => "rate_limited",
            Kick::TokenExpired => "token_expired",
            Kick::TokenRevoked => "token_revoked",
        }
    }
}

#[derive(Default)]
pub struct Metrics {
    pub connections_open: AtomicU64,
    pub connections_total: AtomicU64,
    pub docs_loaded: AtomicU64,
    pub docs_loaded_total: AtomicU64,
    /// Loaded documents held as their encoding (`doc/actor/dormant.rs`).
    pub docs_dormant: AtomicU64,
    /// Dormant documents built in yrs (an edit or a request needed them).
    pub docs_woken: AtomicU64,
    /// Loads in flight (`doc/loading.rs`).
    pub docs_loading: AtomicU64,
    /// Requests refused because too many documents were loading.
    pub loads_shed: AtomicU64,
    pub docs_unloaded_total: AtomicU64,
    pub updates_applied: AtomicU64,
    pub update_bytes: AtomicU64,
    pub updates_refused: AtomicU64,
    /// Upgrades and API calls refused by access control or limits.
    pub requests_refused: AtomicU64,
    pub awareness_updates: AtomicU64,
    pub frames_sent: AtomicU64,
    /// Updates relayed inside a frame that joins several (`doc` joins a
    /// batch's consecutive updates from one sender; see weft_core::concat).
    pub updates_joined: AtomicU64,
    /// Step1 answers the actor encoded: the full state when the shared
    /// encoding was stale, or a diff (the costly part of an answer).
    pub state_encodes: AtomicU64,
    /// Step1 answers that waited for their client's encoding budget.
    pub answers_deferred: AtomicU64,
    pub compactions: AtomicU64,
    pub actor_panics: AtomicU64,
    /// Cluster mode: reconnections to Redis by the stream followers.
    pub redis_reconnects: AtomicU64,
    /// Cluster mode: compaction leases this node holds (one per document
    /// it compacts).
    pub leases_held: AtomicU64,
    /// Cluster mode: streams this node trimmed after a compaction.
    pub stream_trims: AtomicU64,
    storage_jobs: AtomicU64,
    storage_errors: AtomicU64,
    kicks: [AtomicU64; Kick::ALL.len()],
    /// Events this process committed to the outbox, by type (index in
    /// `EventType::ALL`).
    events_emitted: [AtomicU64; EventType::ALL.len()],
    /// Also the count and total time of commits (`weft_storage_commits_total`,
    /// `weft_storage_commit_seconds_total`).
    commit_seconds: Histogram<Seconds>,
    commit_updates: Histogram<Count>,
    commit_bytes: Histogram<Bytes>,
    apply_seconds: Histogram<Seconds>,
    relay_seconds: Histogram<Seconds>,
    stream_append_seconds: Histogram<Seconds>,
    stream_lag_seconds: Histogram<Seconds>,
    /// Webhook delivery, per subscription (`metrics::webhooks`).
    pub webhooks: WebhookMetrics,
}

/// One storage transaction committed (a group commit), as a store reports it.
#[derive(Debug, Clone, Copy)]
pub struct Commit {
    pub took: Duration,
    /// Jobs in the transaction: appends, compactions, versions, ...
    pub jobs: usize,
    /// Updates appended to document logs, and their bytes.
    pub updates: usize,
    pub bytes: u64,
}

impl Metrics {
    pub fn kick(&self, why: Kick) {
        self.kicks[why as usize].fetch_add(1, Relaxed);
    }

    pub fn kicked(&self, why: Kick) -> u64 {
        self.kicks[why as usize].load(Relaxed)
    }

    /// Called by a store once per transaction that committed.
    pub fn record_commit(&self, commit: Commit) {
        self.storage_jobs.fetch_add(commit.jobs as u64, Relaxed);
        self.commit_seconds.observe_duration(commit.took);
        self.commit_updates.observe(commit.updates as u64);
        self.commit_bytes.observe(commit.bytes);
    }

    /// Called by a store for each event it committed to the outbox.
    pub fn event_emitted(&self, kind: EventType) {
        self.events_emitted[kind as usize].fetch_add(1, Relaxed);
    }

    pub fn events_emitted(&self, kind: EventType) -> u64 {
        self.events_emitted[kind as usize].load(Relaxed)
    }

    /// Called by a store once per transaction that failed.
    pub fn storage_error(&self) {
        self.storage_errors.fetch_add(1, Relaxed);
    }

    /// yrs's work on one update in the actor, whether it applied or not.
    /// Cluster mode: one pipeline of XADDs (an actor's batch) was answered.
    pub fn record_stream_append(&self, took: Duration) {
        self.stream_append_seconds.observe_duration(took);
    }

    /// Cluster mode: the age of the newest entry of a batch a follower read.
    pub fn record_stream_lag(&self, lag: Duration) {
        self.stream_lag_seconds.observe_duration(lag);
    }

    pub fn record_apply(&self, took: Duration) {
        self.apply_seconds.observe_duration(took);
    }

    /// An update was relayed: queued to its document's peers once stored.
    /// `received` is when the session handed its frame to the actor.
    pub fn record_relay(&self, received: Instant) {
        self.relay_seconds.observe_duration(received.elapsed());
    }

    /// The Prometheus text exposition of every series.
    pub fn render(self: &Arc<Self>) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Scrape(self.clone())));
        let mut out = String::with_capacity(8 << 10);
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
            .expect("writing to a String does not fail");
        out
    }
}

/// Where a plain series' value comes from.
enum Value {
    Gauge(fn(&Metrics) -> u64),
    Counter(fn(&Metrics) -> u64),
    /// A counter with a fractional value.
    CounterF64(fn(&Metrics) -> f64),
}

fn load(value: &AtomicU64) -> u64 {
    value.load(Relaxed)
}

/// The plain series: name as exposed, help, value.
const PLAIN: [(&str, &str, Value); 27] = [
    (
        "weft_connections_open",
        "WebSocket connections now open.",
        Value::Gauge(|m| load(&m.connections_open)),
    ),
    (
        "weft_connections_total",
        "WebSocket connections accepted.",
        Value::Counter(|m| load(&m.connections_total)),
    ),
    (
        "weft_documents_loaded",
        "Documents now held in memory.",
        Value::Gauge(|m| load(&m.docs_loaded)),
    ),
    (
        "weft_documents_loaded_total",
        "Document loads from storage.",
        Value::Counter(|m| load(&m.docs_loaded_total)),
    ),
    (
        "weft_documents_dormant",
        "Loaded documents held as their encoding, not built in yrs (no edit since they loaded or went quiet).",
        Value::Gauge(|m| load(&m.docs_dormant)),
    ),
    (
        "weft_documents_woken_total",
        "Dormant documents built in yrs because an edit or a request needed them.",
        Value::Counter(|m| load(&m.docs_woken)),
    ),
    (
        "weft_documents_loading",
        "Documents being loaded from the store now.",
        Value::Gauge(|m| load(&m.docs_loading)),
    ),
    (
        "weft_loads_shed_total",
        "Requests refused (503) because --max-loading-docs documents were loading.",
        Value::Counter(|m| load(&m.loads_shed)),
    ),
    (
        "weft_documents_unloaded_total",
        "Documents dropped from memory after their last peer left.",
        Value::Counter(|m| load(&m.docs_unloaded_total)),
    ),
    (
        "weft_updates_applied_total",
        "Document updates applied and stored.",
        Value::Counter(|m| load(&m.updates_applied)),
    ),
    (
        "weft_update_bytes_total",
        "Bytes of document updates applied.",
        Value::Counter(|m| load(&m.update_bytes)),
    ),
    (
        "weft_updates_refused_total",
        "Document updates refused (bad input, read-only, limits).",
        Value::Counter(|m| load(&m.updates_refused)),
    ),
    (
        "weft_requests_refused_total",
        "Upgrades and API calls refused (auth, origin, limits).",
        Value::Counter(|m| load(&m.requests_refused)),
    ),
    (
        "weft_awareness_updates_total",
        "Awareness messages applied.",
        Value::Counter(|m| load(&m.awareness_updates)),
    ),
    (
        "weft_frames_sent_total",
        "Frames queued to peers.",
        Value::Counter(|m| load(&m.frames_sent)),
    ),
    (
        "weft_updates_joined_total",
        "Updates relayed to peers inside one frame with others of the same batch and sender, instead of one frame each.",
        Value::Counter(|m| load(&m.updates_joined)),
    ),
    (
        "weft_state_encodes_total",
        "Step1 answers encoded by a document's actor (the full state when the shared one was stale, or a diff).",
        Value::Counter(|m| load(&m.state_encodes)),
    ),
    (
        "weft_answers_deferred_total",
        "Step1 answers that waited because their client had used its budget of encodings.",
        Value::Counter(|m| load(&m.answers_deferred)),
    ),
    (
        "weft_compactions_total",
        "Update logs compacted into a snapshot (cluster mode: by this node, as the document's lease holder).",
        Value::Counter(|m| load(&m.compactions)),
    ),
    (
        "weft_actor_panics_total",
        "Document actors that panicked and were restarted (a bug: please report it).",
        Value::Counter(|m| load(&m.actor_panics)),
    ),
    (
        "weft_redis_reconnects_total",
        "Cluster mode: times a stream follower lost Redis and connected again.",
        Value::Counter(|m| load(&m.redis_reconnects)),
    ),
    (
        "weft_leases_held",
        "Cluster mode: documents whose compaction lease this node holds (it alone compacts them, trims their streams and takes their automatic versions).",
        Value::Gauge(|m| load(&m.leases_held)),
    ),
    (
        "weft_stream_trims_total",
        "Cluster mode: document streams this node trimmed (XTRIM MINID) up to a compaction snapshot.",
        Value::Counter(|m| load(&m.stream_trims)),
    ),
    (
        "weft_storage_commits_total",
        "Storage transactions committed (group commits).",
        Value::Counter(|m| m.commit_seconds.count()),
    ),
    (
        "weft_storage_jobs_total",
        "Storage jobs committed; jobs/commits is the mean group size.",
        Value::Counter(|m| load(&m.storage_jobs)),
    ),
    (
        "weft_storage_commit_seconds_total",
        "Time spent in storage commits.",
        Value::CounterF64(|m| m.commit_seconds.sum()),
    ),
    (
        "weft_storage_errors_total",
        "Storage transactions that failed.",
        Value::Counter(|m| load(&m.storage_errors)),
    ),
];

const DISCONNECTS: (&str, &str) = ("weft_disconnects_total", "Connections closed by the server, by reason.");
const EVENTS_EMITTED: (&str, &str) = (
    "weft_events_emitted_total",
    "Events this process wrote to the outbox (committed with the change they report), by type.",
);

/// Where a histogram is.
type HistogramOf = fn(&Metrics) -> &dyn EncodeMetric;

/// The histograms: name, help, the histogram.
const HISTOGRAMS: [(&str, &str, HistogramOf); 7] = [
    (
        "weft_storage_commit_duration_seconds",
        "Time each storage transaction (group commit) took to commit.",
        |m| &m.commit_seconds,
    ),
    (
        "weft_storage_commit_updates",
        "Document updates appended per storage transaction (group size).",
        |m| &m.commit_updates,
    ),
    (
        "weft_storage_commit_bytes",
        "Bytes of document updates appended per storage transaction.",
        |m| &m.commit_bytes,
    ),
    (
        "weft_update_apply_duration_seconds",
        "Time the document actor took to apply one update to the document.",
        |m| &m.apply_seconds,
    ),
    (
        "weft_update_relay_delay_seconds",
        "Time from the receipt of an update to its relay to the other peers, its commit included.",
        |m| &m.relay_seconds,
    ),
    (
        "weft_stream_append_duration_seconds",
        "Cluster mode: time one batch of updates took to be appended to its Redis stream.",
        |m| &m.stream_append_seconds,
    ),
    (
        "weft_stream_lag_seconds",
        "Cluster mode: replication lag, the age of the newest entry of each batch a node read from a document's stream (Redis's clock against the node's).",
        |m| &m.stream_lag_seconds,
    ),
];

/// The encoder appends `_total` to counters itself.
fn family(counter: &str) -> &str {
    counter.strip_suffix("_total").unwrap_or(counter)
}

/// What a scrape encodes: the metrics' values as they are at that moment.
struct Scrape(Arc<Metrics>);

impl std::fmt::Debug for Scrape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scrape")
    }
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let m = &*self.0;
        for (name, help, value) in &PLAIN {
            match value {
                Value::Gauge(get) => encode(&mut encoder, name, help, &ConstGauge::new(get(m)))?,
                Value::Counter(get) => encode(&mut encoder, family(name), help, &ConstCounter::new(get(m)))?,
                Value::CounterF64(get) => encode(&mut encoder, family(name), help, &ConstCounter::new(get(m)))?,
            }
        }
        let (name, help) = DISCONNECTS;
        let mut disconnects = encoder.encode_descriptor(family(name), help, None, MetricType::Counter)?;
        for why in Kick::ALL {
            let labels = [("reason", why.label())];
            ConstCounter::new(m.kicked(why)).encode(disconnects.encode_family(&labels)?)?;
        }
        let (name, help) = EVENTS_EMITTED;
        let mut emitted = encoder.encode_descriptor(family(name), help, None, MetricType::Counter)?;
        for kind in EventType::ALL {
            let labels = [("type", kind.as_str())];
            ConstCounter::new(m.events_emitted(kind)).encode(emitted.encode_family(&labels)?)?;
        }
        for (name, help, histogram) in &HISTOGRAMS {
            encode(&mut encoder, name, help, histogram(m))?;
        }
        m.webhooks.encode(&mut encoder)
    }
}

fn encode(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: &(impl EncodeMetric + ?Sized),
) -> Result<(), std::fmt::Error> {
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names and types users scrape: renaming one breaks their
    /// dashboards, so it must be a decision, not an accident.
    #[test]
    fn series_names_and_types_stay_as_users_scrape_them() {
        let metrics = Arc::new(Metrics::default());
        let out = metrics.render();
        let types: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("# TYPE ")).collect();
        assert_eq!(
            types,
            [
                "weft_connections_open gauge",
                "weft_connections_total counter",
                "weft_documents_loaded gauge",
                "weft_documents_loaded_total counter",
                "weft_documents_dormant gauge",
                "weft_documents_woken_total counter",
                "weft_documents_loading gauge",
                "weft_loads_shed_total counter",
                "weft_documents_unloaded_total counter",
                "weft_updates_applied_total counter",
                "weft_update_bytes_total counter",
                "weft_updates_refused_total counter",
                "weft_requests_refused_total counter",
                "weft_awareness_updates_total counter",
                "weft_frames_sent_total counter",
                "weft_updates_joined_total counter",
                "weft_state_encodes_total counter",
                "weft_answers_deferred_total counter",
                "weft_compactions_total counter",
                "weft_actor_panics_total counter",
                "weft_redis_reconnects_total counter",
                "weft_leases_held gauge",
                "weft_stream_trims_total counter",
                "weft_storage_commits_total counter",
                "weft_storage_jobs_total counter",
                "weft_storage_commit_seconds_total counter",
                "weft_storage_errors_total counter",
                "weft_disconnects_total counter",
                "weft_events_emitted_total counter",
                "weft_storage_commit_duration_seconds histogram",
                "weft_storage_commit_updates histogram",
                "weft_storage_commit_bytes histogram",
                "weft_update_apply_duration_seconds histogram",
                "weft_update_relay_delay_seconds histogram",
                "weft_stream_append_duration_seconds histogram",
                "weft_stream_lag_seconds histogram",
                "weft_webhook_deliveries_total counter",
                "weft_webhook_retries_total counter",
                "weft_webhook_failures_total counter",
                "weft_webhook_failing gauge",
                "weft_webhook_attempt_duration_seconds histogram",
                "weft_webhook_delivery_lag_seconds histogram",
            ]
        );
        assert!(out.contains("weft_disconnects_total{reason=\"slow_consumer\"} 0\n"));
        assert!(out.contains("weft_events_emitted_total{type=\"document.updated\"} 0\n"));
        // The counters are indexed by the enum's discriminant.
        for (i, kind) in EventType::ALL.into_iter().enumerate() {
            assert_eq!(kind as usize, i);
        }
        assert!(out.contains("# HELP weft_updates_applied_total Document updates applied and stored.\n"));
    }

    #[test]
    fn a_commit_counts_in_the_counters_and_the_histograms() {
        let metrics = Arc::new(Metrics::default());
        metrics.record_commit(Commit {
            took: Duration::from_micros(1500),
            jobs: 3,
            updates: 5,
            bytes: 700,
        });
        let out = metrics.render();
        for line in [
            "weft_storage_commits_total 1",
            "weft_storage_jobs_total 3",
            "weft_storage_commit_seconds_total 0.0015",
            "weft_storage_commit_duration_seconds_bucket{le=\"0.001\"} 0",
            "weft_storage_commit_duration_seconds_bucket{le=\"0.0025\"} 1",
            "weft_storage_commit_duration_seconds_count 1",
            "weft_storage_commit_updates_bucket{le=\"4\"} 0",
            "weft_storage_commit_updates_bucket{le=\"8\"} 1",
            "weft_storage_commit_updates_sum 5.0",
            "weft_storage_commit_bytes_bucket{le=\"1024\"} 1",
            "weft_update_apply_duration_seconds_count 0",
        ] {
            assert!(out.lines().any(|l| l == line), "no line {line:?} in:\n{out}");
        }
    }
}
