//! Documents being loaded, and shedding loads past a bound.
//!
//! A herd of reconnects (weft restarted under thousands of clients) asks
//! for thousands of documents at once. Each load waits for the store's
//! readers and then holds its snapshot and log in memory until the
//! document is built, so an unbounded herd is unbounded memory and a wait
//! that grows with the herd for everyone in it. Past `--max-loading-docs`
//! loads in flight, a request that would start one more is refused with
//! [`DocError::Busy`] (HTTP 503 with `Retry-After`): the client comes back
//! a moment later, when the loads ahead of it are done. A document that is
//! loaded, or already loading, is never refused: joining it costs no load.

use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed};
use std::sync::Arc;
use std::time::Duration;

use super::DocError;
use crate::metrics::Metrics;

/// Counts loads in flight against the bound. The count is the
/// `weft_documents_loading` gauge itself (`Metrics::docs_loading`).
pub(super) struct Loads {
    /// Most loads in flight before new ones are shed; 0 = no bound.
    max: usize,
    metrics: Arc<Metrics>,
}

/// Whether a request may be refused when loads are at their bound.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Shed {
    /// A client's request: refused with `Busy` past the bound.
    Allowed,
    /// weft's own work, or a session already admitted: always loads.
    Never,
}

impl Loads {
    pub(super) fn new(max: usize, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self { max, metrics })
    }

    /// A ticket for one more load, held until the load ends; `Busy` when
    /// `shed` allows refusing and the bound is reached.
    pub(super) fn start(self: &Arc<Self>, shed: Shed) -> Result<Loading, DocError> {
        let max = self.max;
        let admitted = self.metrics.docs_loading.fetch_update(AcqRel, Acquire, |n| {
            (shed == Shed::Never || max == 0 || n < max as u64).then_some(n + 1)
        });
        match admitted {
            Ok(_) => Ok(Loading { loads: self.clone() }),
            Err(_) => {
                let shed = self.metrics.loads_shed.fetch_add(1, Relaxed);
                Err(DocError::Busy {
                    loading: max,
                    // 1 or 2 s, alternately, so that a herd refused together
                    // does not come back together.
                    retry_after: Duration::from_secs(1 + shed % 2),
                })
            }
        }
    }
}

/// One load in flight; dropping it (the load ended, either way) frees its
/// place.
pub(super) struct Loading {
    loads: Arc<Loads>,
}

impl Drop for Loading {
    fn drop(&mut self) {
        self.loads.metrics.docs_loading.fetch_sub(1, AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_bound_a_client_load_is_shed_and_weft_own_is_not() {
        let metrics = Arc::new(Metrics::default());
        let loads = Loads::new(2, metrics.clone());
        let a = loads.start(Shed::Allowed).unwrap();
        let _b = loads.start(Shed::Allowed).unwrap();
        let refused = loads.start(Shed::Allowed).err().expect("a third load is shed");
        assert!(matches!(refused, DocError::Busy { loading: 2, .. }), "{refused:?}");
        let _own = loads.start(Shed::Never).expect("weft's own loads are never shed");
        assert_eq!(metrics.docs_loading.load(Relaxed), 3);
        assert_eq!(metrics.loads_shed.load(Relaxed), 1);
        drop(a);
        // Still two in flight (b and weft's own): at the bound.
        assert!(loads.start(Shed::Allowed).is_err());
        drop(_own);
        let _c = loads.start(Shed::Allowed).expect("a place was freed");
        assert_eq!(metrics.docs_loading.load(Relaxed), 2);
    }

    #[test]
    fn zero_means_no_bound() {
        let loads = Loads::new(0, Arc::new(Metrics::default()));
        let held: Vec<_> = (0..1000).map(|_| loads.start(Shed::Allowed).unwrap()).collect();
        assert_eq!(held.len(), 1000);
    }

    #[test]
    fn a_refused_herd_is_told_to_come_back_at_different_times() {
        let loads = Loads::new(1, Arc::new(Metrics::default()));
        let _held = loads.start(Shed::Allowed).unwrap();
        let waits: Vec<_> = (0..4)
            .map(|_| match loads.start(Shed::Allowed) {
                Err(DocError::Busy { retry_after, .. }) => retry_after.as_secs(),
                _ => panic!("not shed"),
            })
            .collect();
        assert_eq!(waits, [1, 2, 1, 2]);
    }
}
