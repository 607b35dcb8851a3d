//! A histogram with fixed buckets, on atomics.
//!
//! prometheus-client's own `Histogram` takes a mutex per observation, and
//! ours are observed per update by every document actor at once (apply
//! time, relay delay); this one costs two relaxed `fetch_add`s. The crate
//! still writes it out (`EncodeMetric`), so the format is the crate's.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

/// A histogram's buckets: upper bounds in the unit observed (ascending), and
/// how many of that unit make one of the unit exposed.
pub trait Buckets {
    const BOUNDS: &'static [u64];
    const PER_UNIT: f64;
}

/// Durations, observed in nanoseconds and exposed in seconds: 1 µs to 10 s
/// in 1-2.5-5 steps, from a fast `apply` to a commit stuck on a slow disk.
pub struct Seconds;

impl Buckets for Seconds {
    const BOUNDS: &'static [u64] = &[
        1_000,
        2_500,
        5_000,
        10_000,
        25_000,
        50_000,
        100_000,
        250_000,
        500_000,
        1_000_000,
        2_500_000,
        5_000_000,
        10_000_000,
        25_000_000,
        50_000_000,
        100_000_000,
        250_000_000,
        500_000_000,
        1_000_000_000,
        2_500_000_000,
        5_000_000_000,
        10_000_000_000,
    ];
    const PER_UNIT: f64 = 1e9;
}

/// Items per event (updates per group commit): powers of 2 up to 4096
/// (the writer takes up to 2048 jobs per commit, each one or more updates).
pub struct Count;

impl Buckets for Count {
    const BOUNDS: &'static [u64] = &[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096];
    const PER_UNIT: f64 = 1.0;
}

/// Bytes per event: powers of 4 from 64 B to 64 MiB.
pub struct Bytes;

impl Buckets for Bytes {
    const BOUNDS: &'static [u64] = &[
        64,
        256,
        1 << 10,
        4 << 10,
        16 << 10,
        64 << 10,
        256 << 10,
        1 << 20,
        4 << 20,
        16 << 20,
        64 << 20,
    ];
    const PER_UNIT: f64 = 1.0;
}

/// Ages, observed in milliseconds and exposed in seconds: 10 ms to an
/// hour, for the wait between a commit and a webhook's delivery (retries
/// with backoff, a receiver down for a while).
pub struct Lag;

impl Buckets for Lag {
    const BOUNDS: &'static [u64] = &[
        10, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 300_000, 900_000, 3_600_000,
    ];
    const PER_UNIT: f64 = 1e3;
}

pub struct Histogram<B> {
    /// Observations per bucket, not cumulative; the last one is `+Inf`.
    counts: Box<[AtomicU64]>,
    /// In the observed unit.
    sum: AtomicU64,
    buckets: PhantomData<B>,
}

impl<B: Buckets> Default for Histogram<B> {
    fn default() -> Self {
        Self {
            counts: (0..=B::BOUNDS.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            buckets: PhantomData,
        }
    }
}

impl<B: Buckets> Histogram<B> {
    pub fn observe(&self, value: u64) {
        let bucket = B::BOUNDS.partition_point(|&bound| bound < value);
        self.counts[bucket].fetch_add(1, Relaxed);
        self.sum.fetch_add(value, Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Relaxed)).sum()
    }

    /// The sum of the observations, in the exposed unit.
    pub fn sum(&self) -> f64 {
        self.sum.load(Relaxed) as f64 / B::PER_UNIT
    }
}

impl Histogram<Seconds> {
    pub fn observe_duration(&self, took: Duration) {
        self.observe(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
    }
}

impl<B: Buckets> EncodeMetric for Histogram<B> {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let bounds = B::BOUNDS.iter().map(|&b| b as f64 / B::PER_UNIT).chain([f64::INFINITY]);
        let buckets: Vec<(f64, u64)> = bounds.zip(self.counts.iter().map(|c| c.load(Relaxed))).collect();
        // The count from the buckets read, so that it and `+Inf` agree.
        let count = buckets.iter().map(|(_, n)| n).sum();
        encoder.encode_histogram::<NoLabelSet>(self.sum(), count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

impl<B> std::fmt::Debug for Histogram<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram").field("counts", &self.counts).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_falls_in_the_first_bucket_whose_bound_it_does_not_exceed() {
        let h = Histogram::<Count>::default();
        for v in [0, 1, 2, 3, 4096, 4097] {
            h.observe(v);
        }
        let counts: Vec<u64> = h.counts.iter().map(|c| c.load(Relaxed)).collect();
        assert_eq!(&counts[..3], &[2, 1, 1]); // ≤1: 0 and 1; ≤2: 2; ≤4: 3
        assert_eq!(counts[Count::BOUNDS.len() - 1], 1); // ≤4096
        assert_eq!(counts[Count::BOUNDS.len()], 1); // +Inf
        assert_eq!(h.count(), 6);
        assert_eq!(h.sum.load(Relaxed), 1 + 2 + 3 + 4096 + 4097);
    }

    #[test]
    fn bounds_ascend() {
        fn ascending<B: Buckets>() -> bool {
            B::BOUNDS.windows(2).all(|w| w[0] < w[1])
        }
        assert!(ascending::<Seconds>() && ascending::<Count>() && ascending::<Bytes>() && ascending::<Lag>());
    }
}
