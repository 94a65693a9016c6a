//! A latency histogram with fixed buckets, made of relaxed atomics.
//!
//! Why not a library histogram: prometheus-client's takes a lock per
//! observation, and hdrhistogram is not shared between threads. Requests
//! record on the hot path, so an observation here is one bucket search over
//! [`BUCKET_BOUNDS_US`] and three `fetch_add`s: no lock, no allocation.
//! Promise: [`Histogram::snapshot`] returns each bucket's own count under
//! its inclusive upper bound (Prometheus' `le`), ending with `+Inf`; the
//! text encoder (prometheus-client) makes them cumulative.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in microseconds: 50 µs to 30 s. A
/// duration above the last bound counts only in `+Inf`.
pub const BUCKET_BOUNDS_US: [u64; 18] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000, 30_000_000,
];

/// Observations per bucket (not cumulative), the sum and the count.
#[derive(Debug)]
pub struct Histogram {
    /// `buckets[i]` counts durations in `(BOUNDS[i-1], BOUNDS[i]]`; the last
    /// slot counts those above every bound.
    buckets: [AtomicU64; BUCKET_BOUNDS_US.len() + 1],
    sum_ns: AtomicU64,
    count: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_ns: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }
}

/// A histogram read at one moment, in Prometheus' terms.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramSnapshot {
    pub sum_seconds: f64,
    pub count: u64,
    /// (upper bound in seconds, observations in this bucket only, i.e.
    /// above the previous bound); the last bound is +Inf.
    pub buckets: Vec<(f64, u64)>,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        let i = BUCKET_BOUNDS_US.partition_point(|&b| b < us);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Per-bucket counts. Reads are not one atomic snapshot: an observation
    /// racing the read may be in a bucket and not yet in `count`; `count` is
    /// therefore the sum of the buckets read, so the two always agree.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut buckets = Vec::with_capacity(self.buckets.len());
        let mut total = 0u64;
        for (i, b) in self.buckets.iter().enumerate() {
            let n = b.load(Ordering::Relaxed);
            total += n;
            let le = BUCKET_BOUNDS_US.get(i).map_or(f64::INFINITY, |&us| us as f64 / 1e6);
            buckets.push((le, n));
        }
        HistogramSnapshot { sum_seconds: self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9, count: total, buckets }
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bounds are inclusive (Prometheus `le`), each duration counts in one
    /// bucket only, and a duration past the last bound lands in +Inf.
    #[test]
    fn each_duration_lands_in_its_inclusive_bucket() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50)); // ≤ 50 µs
        h.observe(Duration::from_micros(51)); // ≤ 100 µs
        h.observe(Duration::from_millis(3)); // ≤ 5 ms
        h.observe(Duration::from_secs(60)); // +Inf only
        let s = h.snapshot();
        assert_eq!(s.count, 4);
        assert_eq!(h.count(), 4);
        assert_eq!(s.buckets.len(), BUCKET_BOUNDS_US.len() + 1);
        let at = |le: f64| s.buckets.iter().find(|(b, _)| *b == le).unwrap().1;
        assert_eq!(at(0.00005), 1);
        assert_eq!(at(0.0001), 1);
        assert_eq!(at(0.0025), 0);
        assert_eq!(at(0.005), 1);
        assert_eq!(at(30.0), 0);
        assert_eq!(s.buckets.last().unwrap(), &(f64::INFINITY, 1));
        assert_eq!(s.buckets.iter().map(|b| b.1).sum::<u64>(), 4);
        assert!((s.sum_seconds - (0.00005 + 0.000051 + 0.003 + 60.0)).abs() < 1e-9, "{}", s.sum_seconds);
        assert!(s.buckets.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
