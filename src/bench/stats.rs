//! Counting what came back: latency histograms per request kind, errors by
//! kind, and the merge of every client's numbers into one.
//!
//! Each client records into its own [`ClientStats`] (no sharing on the hot
//! path); the driver merges them once at the end. Latencies are HDR
//! histograms in microseconds with 3 significant digits, from 1 µs to
//! [`LATENCY_US_MAX`] (longer ones are recorded as the maximum). Only
//! successful requests enter the histograms: a timeout's "latency" is the
//! deadline, which would say more about the setting than about the store.
//! Errors are counted per [`ErrorKind`]; the earliest message is kept
//! (truncated to [`ERROR_MESSAGE_MAX_BYTES`]) so a failed run can say why.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::workload::RequestKind;

/// Largest latency the histograms distinguish: one hour, in µs.
pub const LATENCY_US_MAX: u64 = 3_600_000_000;
/// Significant decimal digits of the histograms (0.1 % resolution).
pub const LATENCY_SIGNIFICANT_DIGITS: u8 = 3;
/// Longest error message kept, in bytes.
pub const ERROR_MESSAGE_MAX_BYTES: usize = 1_024;

/// How a request failed, as far as a benchmark cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The level (or RPC) is not built on the server: UNIMPLEMENTED.
    Unimplemented,
    /// Nothing was applied: unreachable, no quorum, no leader.
    Unavailable,
    /// A write whose outcome is unknown (lost reply, deadline passed).
    Indeterminate,
    /// The deadline passed (reads, etcd, ping).
    Timeout,
    InvalidArgument,
    FailedPrecondition,
    /// A local I/O error (the fsync workload).
    Io,
    Other,
}

impl ErrorKind {
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Unimplemented => "unimplemented",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Indeterminate => "indeterminate",
            ErrorKind::Timeout => "timeout",
            ErrorKind::InvalidArgument => "invalid_argument",
            ErrorKind::FailedPrecondition => "failed_precondition",
            ErrorKind::Io => "io",
            ErrorKind::Other => "other",
        }
    }

    /// Errors that retrying or waiting cannot fix: set-up stops on them.
    pub fn is_permanent(self) -> bool {
        matches!(self, ErrorKind::Unimplemented | ErrorKind::InvalidArgument | ErrorKind::FailedPrecondition)
    }
}

/// One failed request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", kind.name())]
pub struct OpError {
    pub kind: ErrorKind,
    pub message: String,
}

impl OpError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        let mut message = message.into();
        if message.len() > ERROR_MESSAGE_MAX_BYTES {
            let mut cut = ERROR_MESSAGE_MAX_BYTES;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        OpError { kind, message }
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, LATENCY_SIGNIFICANT_DIGITS).expect("valid histogram bounds")
}

/// Counts of one request kind.
#[derive(Clone, Debug)]
pub struct KindStats {
    pub latency_us: Histogram<u64>,
    pub errors: u64,
}

impl Default for KindStats {
    fn default() -> Self {
        KindStats { latency_us: new_histogram(), errors: 0 }
    }
}

impl KindStats {
    pub fn ok(&self) -> u64 {
        self.latency_us.len()
    }
}

/// What one client (or, after [`ClientStats::merge`], all of them) measured.
#[derive(Clone, Debug, Default)]
pub struct ClientStats {
    pub by_kind: BTreeMap<RequestKind, KindStats>,
    pub errors_by_kind: BTreeMap<ErrorKind, u64>,
    /// The earliest error and when it happened.
    pub first_error: Option<(Instant, OpError)>,
    pub cas_swapped: u64,
    pub cas_failed_compare: u64,
    /// With `--timeline-ms`: when requests finished.
    pub timeline: Option<Timeline>,
}

impl ClientStats {
    pub fn record_ok(&mut self, kind: RequestKind, latency: Duration) {
        let us = (latency.as_micros().min(u64::MAX as u128) as u64).max(1);
        self.by_kind.entry(kind).or_default().latency_us.saturating_record(us);
    }

    pub fn record_cas(&mut self, swapped: bool) {
        if swapped {
            self.cas_swapped += 1;
        } else {
            self.cas_failed_compare += 1;
        }
    }

    pub fn record_error(&mut self, kind: RequestKind, error: &OpError, at: Instant) {
        self.by_kind.entry(kind).or_default().errors += 1;
        *self.errors_by_kind.entry(error.kind).or_default() += 1;
        if self.first_error.as_ref().is_none_or(|(t, _)| at < *t) {
            self.first_error = Some((at, error.clone()));
        }
    }

    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: &ClientStats) {
        for (kind, s) in &other.by_kind {
            let mine = self.by_kind.entry(*kind).or_default();
            mine.latency_us.add(&s.latency_us).expect("histograms share their bounds");
            mine.errors += s.errors;
        }
        for (kind, n) in &other.errors_by_kind {
            *self.errors_by_kind.entry(*kind).or_default() += n;
        }
        if let Some((t, e)) = &other.first_error {
            if self.first_error.as_ref().is_none_or(|(mine, _)| t < mine) {
                self.first_error = Some((*t, e.clone()));
            }
        }
        self.cas_swapped += other.cas_swapped;
        self.cas_failed_compare += other.cas_failed_compare;
        match (&mut self.timeline, &other.timeline) {
            (Some(mine), Some(theirs)) => mine.merge(theirs),
            (None, Some(theirs)) => self.timeline = Some(theirs.clone()),
            (_, None) => {}
        }
    }

    /// All kinds in one histogram.
    pub fn overall(&self) -> KindStats {
        let mut all = KindStats::default();
        for s in self.by_kind.values() {
            all.latency_us.add(&s.latency_us).expect("histograms share their bounds");
            all.errors += s.errors;
        }
        all
    }

    pub fn ok(&self) -> u64 {
        self.by_kind.values().map(KindStats::ok).sum()
    }

    pub fn errors(&self) -> u64 {
        self.errors_by_kind.values().sum()
    }
}

/// Most buckets one client's [`Timeline`] holds: 100,000 (about 17 min at
/// 10 ms); `--timeline-ms` is refused when the run would need more.
pub const MAX_TIMELINE_BUCKETS: usize = 100_000;
/// Bytes of one bucket of a [`Timeline`] (two `u32` counters).
pub const TIMELINE_BUCKET_BYTES: usize = 2 * std::mem::size_of::<u32>();
/// Bytes all clients' timelines may hold together: each client keeps its
/// own until the run ends, so [`MAX_TIMELINE_BUCKETS`] alone would allow
/// 800 kB per client, times every client.
pub const MAX_TIMELINE_TOTAL_BYTES: usize = 256 * 1024 * 1024;

/// Successes and errors per fixed interval of the measured phase, as they
/// *finished* (`--timeline-ms`): what the clients saw over time, e.g.
/// while a node is killed. Fixed-size and preallocated, so recording costs
/// one index per request; merged by adding bucket to bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timeline {
    pub bucket: Duration,
    pub ok: Vec<u32>,
    pub errors: Vec<u32>,
}

/// The longest run of buckets in which nothing succeeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Stall {
    /// From the start of the measured phase to the first empty bucket.
    pub start_ms: u64,
    /// Length, in whole buckets: the true stall is at most this long and
    /// longer than this minus two buckets.
    pub length_ms: u64,
}

impl Timeline {
    /// `buckets` intervals of `bucket` each (at most [`MAX_TIMELINE_BUCKETS`]).
    pub fn new(bucket: Duration, buckets: usize) -> Timeline {
        assert!(!bucket.is_zero(), "a timeline bucket has a length");
        assert!(buckets <= MAX_TIMELINE_BUCKETS, "{buckets} timeline buckets, at most {MAX_TIMELINE_BUCKETS}");
        Timeline { bucket, ok: vec![0; buckets], errors: vec![0; buckets] }
    }

    fn index(&self, since_start: Duration) -> Option<usize> {
        let i = (since_start.as_nanos() / self.bucket.as_nanos()) as usize;
        (i < self.ok.len()).then_some(i)
    }

    /// Counts one request that finished `since_start` into the measured
    /// phase; past the last bucket it is not counted here (it still is in
    /// the totals).
    pub fn record(&mut self, since_start: Duration, ok: bool) {
        if let Some(i) = self.index(since_start) {
            let slot = if ok { &mut self.ok[i] } else { &mut self.errors[i] };
            *slot = slot.saturating_add(1);
        }
    }

    /// Adds `other`'s counts bucket by bucket (same bucket length).
    pub fn merge(&mut self, other: &Timeline) {
        assert_eq!(self.bucket, other.bucket, "timelines of different buckets");
        if other.ok.len() > self.ok.len() {
            self.ok.resize(other.ok.len(), 0);
            self.errors.resize(other.errors.len(), 0);
        }
        for (i, (&ok, &errors)) in other.ok.iter().zip(&other.errors).enumerate() {
            self.ok[i] = self.ok[i].saturating_add(ok);
            self.errors[i] = self.errors[i].saturating_add(errors);
        }
    }

    /// The longest run of buckets without a success among the first
    /// `within` of the measured phase (the tail, where clients stop, is
    /// left out); `None` when every bucket had one. Empty buckets before
    /// the first success are not a stall: requests already in flight when
    /// measuring began are not recorded, so the first answers come one
    /// latency in. With no success at all, the whole span is one stall.
    pub fn longest_stall(&self, within: Duration) -> Option<Stall> {
        let end = ((within.as_nanos() / self.bucket.as_nanos()) as usize).min(self.ok.len());
        let ms = self.bucket.as_millis() as u64;
        let Some(first) = self.ok[..end].iter().position(|&n| n > 0) else {
            return (end > 0).then_some(Stall { start_ms: 0, length_ms: end as u64 * ms });
        };
        let mut best: Option<(usize, usize)> = None;
        let mut run_start = None;
        for i in first..=end {
            match (i < end && self.ok[i] == 0, run_start) {
                (true, None) => run_start = Some(i),
                (false, Some(s)) => {
                    if best.is_none_or(|(_, len)| i - s > len) {
                        best = Some((s, i - s));
                    }
                    run_start = None;
                }
                _ => {}
            }
        }
        best.map(|(s, len)| Stall { start_ms: s as u64 * ms, length_ms: len as u64 * ms })
    }
}

/// Throughput and latency percentiles of one histogram.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// Successful requests.
    pub ops: u64,
    pub errors: u64,
    pub ops_per_sec: f64,
    pub mean_us: f64,
    pub min_us: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl Summary {
    /// `elapsed`: the measured wall time the requests were spread over.
    pub fn of(stats: &KindStats, elapsed: Duration) -> Summary {
        let h = &stats.latency_us;
        let secs = elapsed.as_secs_f64();
        let empty = h.is_empty();
        let q = |q: f64| if empty { 0 } else { h.value_at_quantile(q) };
        Summary {
            ops: h.len(),
            errors: stats.errors,
            ops_per_sec: if secs > 0.0 { h.len() as f64 / secs } else { 0.0 },
            mean_us: if empty { 0.0 } else { h.mean() },
            min_us: if empty { 0 } else { h.min() },
            p50_us: q(0.5),
            p90_us: q(0.9),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: if empty { 0 } else { h.max() },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Percentiles of a known distribution: 1..=1000 ms, one each.
    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut s = ClientStats::default();
        for i in 1..=1000 {
            s.record_ok(RequestKind::Get, ms(i));
        }
        let sum = Summary::of(&s.overall(), Duration::from_secs(10));
        assert_eq!(sum.ops, 1000);
        assert_eq!(sum.ops_per_sec, 100.0);
        // 3 significant digits: within 0.1 % of the exact value.
        let near = |got: u64, want_ms: u64| {
            let want = want_ms * 1000;
            assert!(got.abs_diff(want) <= want / 1000 + 1, "{got} µs vs {want} µs");
        };
        near(sum.p50_us, 500);
        near(sum.p90_us, 900);
        near(sum.p99_us, 990);
        near(sum.p999_us, 999);
        near(sum.max_us, 1000);
        near(sum.min_us, 1);
    }

    /// Merging per-client stats equals recording everything in one place.
    #[test]
    fn merge_equals_recording_together() {
        let mut together = ClientStats::default();
        let mut clients = vec![ClientStats::default(), ClientStats::default(), ClientStats::default()];
        for i in 0..3_000u64 {
            let kind = if i % 3 == 0 { RequestKind::Set } else { RequestKind::Get };
            let c = &mut clients[(i % 3) as usize];
            c.record_ok(kind, Duration::from_micros(i * 7 + 1));
            together.record_ok(kind, Duration::from_micros(i * 7 + 1));
        }
        let mut merged = ClientStats::default();
        for c in &clients {
            merged.merge(c);
        }
        assert_eq!(merged.ok(), 3_000);
        for kind in [RequestKind::Get, RequestKind::Set] {
            assert_eq!(
                Summary::of(&merged.by_kind[&kind], ms(1)),
                Summary::of(&together.by_kind[&kind], ms(1)),
                "{kind:?}"
            );
        }
        assert_eq!(Summary::of(&merged.overall(), ms(1)), Summary::of(&together.overall(), ms(1)));
    }

    /// Errors are counted per kind and the earliest message survives the merge.
    #[test]
    fn errors_are_counted_and_the_first_is_kept() {
        let t0 = Instant::now();
        let mut a = ClientStats::default();
        let mut b = ClientStats::default();
        a.record_error(RequestKind::Set, &OpError::new(ErrorKind::Timeout, "late"), t0 + ms(5));
        b.record_error(RequestKind::Set, &OpError::new(ErrorKind::Unavailable, "first"), t0 + ms(1));
        b.record_error(RequestKind::Get, &OpError::new(ErrorKind::Unavailable, "second"), t0 + ms(2));
        a.merge(&b);
        assert_eq!(a.errors(), 3);
        assert_eq!(a.errors_by_kind[&ErrorKind::Unavailable], 2);
        assert_eq!(a.by_kind[&RequestKind::Set].errors, 2);
        assert_eq!(a.first_error.as_ref().unwrap().1.message, "first");
        assert_eq!(a.ok(), 0);
        // An all-error run has empty percentiles rather than a panic.
        let s = Summary::of(&a.overall(), ms(100));
        assert_eq!((s.ops, s.errors, s.p99_us, s.ops_per_sec), (0, 3, 0, 0.0));
    }

    /// Latencies past the histogram's range are clamped, not lost; zero
    /// becomes the 1 µs floor.
    #[test]
    fn extreme_latencies_are_recorded() {
        let mut s = ClientStats::default();
        s.record_ok(RequestKind::Ping, Duration::from_secs(10 * 3600));
        s.record_ok(RequestKind::Ping, Duration::ZERO);
        let sum = Summary::of(&s.overall(), ms(1));
        assert_eq!(sum.ops, 2);
        assert_eq!(sum.min_us, 1);
        assert!(sum.max_us >= LATENCY_US_MAX);
    }

    #[test]
    fn long_error_messages_are_truncated() {
        let e = OpError::new(ErrorKind::Other, "é".repeat(ERROR_MESSAGE_MAX_BYTES));
        assert!(e.message.len() <= ERROR_MESSAGE_MAX_BYTES + '…'.len_utf8());
    }

    /// Requests land in the bucket of when they finished; merging adds
    /// bucket to bucket; the longest stall is the longest run of buckets
    /// without a success (errors do not count), the tail left out.
    #[test]
    fn timelines_count_per_bucket_and_find_the_longest_stall() {
        let mut a = Timeline::new(ms(10), 10);
        let mut b = Timeline::new(ms(10), 10);
        for t in [0, 5, 15, 25, 85, 95] {
            a.record(ms(t), true);
        }
        b.record(ms(35), false);
        b.record(ms(36), false);
        b.record(ms(75), true);
        b.record(ms(100), true); // past the last bucket: not in the timeline
        a.merge(&b);
        assert_eq!(a.ok, vec![2, 1, 1, 0, 0, 0, 0, 1, 1, 1]);
        assert_eq!(a.errors, vec![0, 0, 0, 2, 0, 0, 0, 0, 0, 0]);
        assert_eq!(a.longest_stall(ms(100)), Some(Stall { start_ms: 30, length_ms: 40 }));
        // Only the first 50 ms: the run is cut at the end.
        assert_eq!(a.longest_stall(ms(50)), Some(Stall { start_ms: 30, length_ms: 20 }));
        // Empty buckets before the first success are not a stall; with
        // no success at all the whole span is one; none at all is None.
        let mut c = Timeline::new(ms(10), 4);
        c.record(ms(21), true);
        assert_eq!(c.longest_stall(ms(40)), Some(Stall { start_ms: 30, length_ms: 10 }));
        c.record(ms(31), true);
        assert_eq!(c.longest_stall(ms(40)), None);
        assert_eq!(Timeline::new(ms(10), 4).longest_stall(ms(40)), Some(Stall { start_ms: 0, length_ms: 40 }));
        c.ok = vec![1; 4];
        assert_eq!(c.longest_stall(ms(40)), None);
        // Stats merge their timelines.
        let mut x = ClientStats { timeline: Some(Timeline::new(ms(10), 2)), ..Default::default() };
        let y = ClientStats { timeline: Some(c), ..Default::default() };
        x.merge(&y);
        assert_eq!(x.timeline.unwrap().ok, vec![1; 4]);
    }

    #[test]
    fn cas_outcomes_are_counted() {
        let mut a = ClientStats::default();
        a.record_cas(true);
        a.record_cas(false);
        a.record_cas(false);
        let mut b = ClientStats::default();
        b.merge(&a);
        assert_eq!((b.cas_swapped, b.cas_failed_compare), (1, 2));
    }
}
