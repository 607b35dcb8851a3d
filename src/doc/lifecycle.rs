//! `Lifecycle`: when a document actor leaves. It unloads once it has had no
//! peer for `--unload-after-ms`, or at once when its document may differ
//! from the store (poisoned); it leaves the registry through the callback
//! the registry gave it, and counts itself in `weft_documents_loaded` while
//! it lives.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::DocConfig;
use crate::metrics::Metrics;

/// Takes the actor out of the registry: called once, when it leaves (the
/// registry drops the entry only if it still belongs to this actor).
pub(super) type Deregister = Box<dyn FnOnce() + Send>;

pub(super) struct Lifecycle {
    /// Since when the document has had no peer; `None` while it has some.
    idle_since: Option<Instant>,
    /// The in-memory document may differ from the store and could not be
    /// rebuilt: the actor unloads without saving anything.
    poisoned: bool,
    deregister: Option<Deregister>,
    _loaded: LoadedGauge,
}

impl Lifecycle {
    /// A document just loaded, with no peer yet.
    pub fn new(deregister: Deregister, metrics: &Arc<Metrics>, now: Instant) -> Self {
        Self {
            idle_since: Some(now),
            poisoned: false,
            deregister: Some(deregister),
            _loaded: LoadedGauge::new(metrics),
        }
    }

    /// A peer joined.
    pub fn busy(&mut self) {
        self.idle_since = None;
    }

    /// The last peer left (or a leave found no peer): the unload timer starts
    /// again.
    pub fn idle(&mut self, now: Instant) {
        self.idle_since = Some(now);
    }

    /// Whether the actor should unload now: it has no peer, and has had none
    /// for `unload_after`.
    pub fn unload_due(&self, now: Instant, has_peers: bool, unload_after: Duration) -> bool {
        !has_peers
            && self
                .idle_since
                .is_some_and(|t| now.saturating_duration_since(t) >= unload_after)
    }

    pub fn poison(&mut self) {
        self.poisoned = true;
    }

    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// Leaves the registry; later calls do nothing.
    pub fn deregister(&mut self) {
        if let Some(deregister) = self.deregister.take() {
            deregister();
        }
    }
}

/// How often the actor's tick runs (awareness expiry, automatic versions,
/// unloading): often enough for the shortest of its timeouts, at most once
/// a second and at least every 10 ms.
pub(super) fn tick_period(config: &DocConfig) -> Duration {
    [
        Duration::from_secs(1),
        config.awareness_timeout / 4,
        config.unload_after / 4,
    ]
    .into_iter()
    .min()
    .unwrap_or(Duration::from_secs(1))
    .max(Duration::from_millis(10))
}

/// Counts a document in `weft_documents_loaded` while it lives, however the
/// actor ends.
struct LoadedGauge(Arc<Metrics>);

impl LoadedGauge {
    fn new(metrics: &Arc<Metrics>) -> Self {
        metrics.docs_loaded.fetch_add(1, Relaxed);
        Self(metrics.clone())
    }
}

impl Drop for LoadedGauge {
    fn drop(&mut self) {
        self.0.docs_loaded.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn unloads_after_a_while_without_peers() {
        let metrics = Arc::new(Metrics::default());
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let after = Duration::from_millis(100);
        let mut life = Lifecycle::new(Box::new(|| {}), &metrics, t0);
        assert!(!life.unload_due(at(99), false, after));
        assert!(life.unload_due(at(100), false, after));
        life.busy();
        assert!(!life.unload_due(at(1000), true, after));
        assert!(!life.unload_due(at(1000), false, after), "not idle since the join");
        life.idle(at(1000));
        assert!(!life.unload_due(at(1050), false, after));
        assert!(life.unload_due(at(1100), false, after));
    }

    #[test]
    fn deregisters_once_and_counts_itself_while_it_lives() {
        let metrics = Arc::new(Metrics::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let mut life = Lifecycle::new(
            Box::new(move || {
                counted.fetch_add(1, Relaxed);
            }),
            &metrics,
            Instant::now(),
        );
        assert_eq!(metrics.docs_loaded.load(Relaxed), 1);
        life.deregister();
        life.deregister();
        assert_eq!(calls.load(Relaxed), 1);
        drop(life);
        assert_eq!(metrics.docs_loaded.load(Relaxed), 0);
    }

    #[test]
    fn the_tick_follows_the_shortest_timeout_within_bounds() {
        let with = |awareness_ms, unload_ms| DocConfig {
            awareness_timeout: Duration::from_millis(awareness_ms),
            unload_after: Duration::from_millis(unload_ms),
            ..DocConfig::default()
        };
        assert_eq!(tick_period(&with(30_000, 10_000)), Duration::from_secs(1));
        assert_eq!(tick_period(&with(2_000, 10_000)), Duration::from_millis(500));
        assert_eq!(tick_period(&with(30_000, 200)), Duration::from_millis(50));
        assert_eq!(tick_period(&with(0, 0)), Duration::from_millis(10));
    }
}
