//! Stale-read statistics: how often, and by how much, reads returned a
//! value older than one already acknowledged.
//!
//! A read is **stale** when some write to its key was acknowledged (its
//! `ok` recorded) *before the read was invoked* and has a higher version
//! than the value the read returned (an absent key counts as the lowest
//! version). Its **staleness** is how long before the read's invocation the
//! first such write had been acknowledged: how far behind the replica was,
//! at least.
//!
//! For linearizable and quorum reads there must be none (a stale read there
//! is a violation the linearizability checker also reports); for eventual
//! reads they are the price of availability, and these numbers say what it
//! was under the run's faults. It is a statistic, not a verdict.
//!
//! Versions come from the history's `version` fields. A read without one
//! (a level that returns none) is looked up by its value among the
//! acknowledged writes; if that fails it is counted as `unversioned` and
//! left out.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::history::{EventType, OpKind};
use crate::record::{OpRecord, Phase, RecordedVersion};
use crate::stats::Percentiles;

/// Stale reads listed as examples (the stalest); the rest are only counted.
pub const EXAMPLES_MAX: usize = 20;

/// The lowest version: what an absent key reads as.
const ABSENT: RecordedVersion = RecordedVersion { hlc: 0, node: 0 };

/// One stale read.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StaleRead {
    /// The key.
    pub key: String,
    /// The reading process.
    pub process: u64,
    /// When the read was invoked, in s since the run started.
    pub invoked_s: f64,
    /// What it returned (`None`: absent).
    pub value: Option<i64>,
    /// The version of what it returned.
    pub version: Option<RecordedVersion>,
    /// The newest write acknowledged before the read was invoked.
    pub newest_acked_value: i64,
    /// Its version.
    pub newest_acked_version: RecordedVersion,
    /// See the module docs, in ms.
    pub staleness_ms: f64,
}

/// The statistics.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StaleReadStats {
    /// Successful workload reads considered.
    pub reads: u64,
    /// Of those, stale.
    pub stale: u64,
    /// `stale / reads` (0 without reads).
    pub fraction: f64,
    /// Reads left out for lack of a version.
    pub unversioned: u64,
    /// Staleness of the stale reads, in ms.
    pub staleness_ms: Percentiles,
    /// Stale reads per key, for the keys that had any.
    pub by_key: BTreeMap<String, u64>,
    /// The [`EXAMPLES_MAX`] stalest reads, stalest first.
    pub examples: Vec<StaleRead>,
}

/// One key's acknowledged writes in acknowledgement order, with the running
/// maximum of their versions.
struct AckedWrites {
    /// (ack time, version, value), sorted by ack time.
    writes: Vec<(u64, RecordedVersion, i64)>,
    /// `max_version[i]` = the largest version among `writes[..=i]`.
    max_version: Vec<RecordedVersion>,
    /// Value → version, to version reads that lack one.
    by_value: BTreeMap<i64, RecordedVersion>,
}

impl AckedWrites {
    fn new(mut writes: Vec<(u64, RecordedVersion, i64)>) -> Self {
        writes.sort();
        let mut max_version = Vec::with_capacity(writes.len());
        let mut max = ABSENT;
        for &(_, version, _) in &writes {
            max = max.max(version);
            max_version.push(max);
        }
        let by_value = writes.iter().map(|&(_, version, value)| (value, version)).collect();
        AckedWrites { writes, max_version, by_value }
    }

    /// For a read invoked at `invoked_ns` that saw `version`: if stale, the
    /// newest write acknowledged before it and the staleness in ns.
    fn stale(&self, invoked_ns: u64, version: RecordedVersion) -> Option<((i64, RecordedVersion), u64)> {
        let acked_before = self.writes.partition_point(|&(acked_ns, _, _)| acked_ns < invoked_ns);
        if acked_before == 0 || self.max_version[acked_before - 1] <= version {
            return None;
        }
        // The running maximum only grows: the first index above `version` is
        // the first acknowledged write newer than what was read.
        let first_newer = self.max_version.partition_point(|&max| max <= version);
        let newest = self.max_version[acked_before - 1];
        let &(_, _, newest_value) = self.writes[..acked_before]
            .iter()
            .find(|&&(_, v, _)| v == newest)
            .expect("the maximum is one of the writes");
        Some(((newest_value, newest), invoked_ns - self.writes[first_newer].0))
    }
}

/// Computes the statistics over the workload's operations.
pub fn analyze(ops: &[OpRecord]) -> StaleReadStats {
    let mut acked: BTreeMap<&str, Vec<(u64, RecordedVersion, i64)>> = BTreeMap::new();
    for op in ops.iter().filter(|op| op.phase == Phase::Workload && op.outcome == EventType::Ok) {
        if let (Some(value), Some(version)) = (op.written_value(), op.version) {
            acked.entry(&op.key).or_default().push((op.complete_ns, version, value));
        }
    }
    let acked: BTreeMap<&str, AckedWrites> = acked.into_iter().map(|(k, w)| (k, AckedWrites::new(w))).collect();

    let mut reads: Vec<&OpRecord> = ops
        .iter()
        .filter(|op| op.phase == Phase::Workload && op.f == OpKind::Read && op.outcome == EventType::Ok)
        .collect();
    reads.sort_by_key(|op| op.invoke_ns);

    let none = AckedWrites::new(Vec::new());
    let mut stats = StaleReadStats {
        reads: 0,
        stale: 0,
        fraction: 0.0,
        unversioned: 0,
        staleness_ms: Percentiles::default(),
        by_key: BTreeMap::new(),
        examples: Vec::new(),
    };
    let mut staleness = Vec::new();
    for read in reads {
        let writes = acked.get(read.key.as_str()).unwrap_or(&none);
        let version = match (read.read, read.version) {
            (None, _) => ABSENT,
            (Some(_), Some(version)) => version,
            (Some(value), None) => match writes.by_value.get(&value) {
                Some(&version) => version,
                None => {
                    stats.unversioned += 1;
                    continue;
                }
            },
        };
        stats.reads += 1;
        let Some(((newest_value, newest_version), stale_ns)) = writes.stale(read.invoke_ns, version) else { continue };
        stats.stale += 1;
        *stats.by_key.entry(read.key.clone()).or_insert(0) += 1;
        let staleness_ms = stale_ns as f64 / 1e6;
        staleness.push(staleness_ms);
        stats.examples.push(StaleRead {
            key: read.key.clone(),
            process: read.process,
            invoked_s: read.invoke_ns as f64 / 1e9,
            value: read.read,
            version: read.version,
            newest_acked_value: newest_value,
            newest_acked_version: newest_version,
            staleness_ms,
        });
        // Keep the stalest (bounded: trim whenever the list doubles).
        if stats.examples.len() >= 2 * EXAMPLES_MAX {
            keep_stalest(&mut stats.examples);
        }
    }
    keep_stalest(&mut stats.examples);
    stats.fraction = if stats.reads == 0 { 0.0 } else { stats.stale as f64 / stats.reads as f64 };
    stats.staleness_ms = Percentiles::of(staleness);
    stats
}

/// Sorts stalest first (earliest first among equals) and keeps
/// [`EXAMPLES_MAX`].
fn keep_stalest(examples: &mut Vec<StaleRead>) {
    examples.sort_by(|a, b| b.staleness_ms.total_cmp(&a.staleness_ms).then(a.invoked_s.total_cmp(&b.invoked_s)));
    examples.truncate(EXAMPLES_MAX);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Value;

    fn ver(hlc: u64) -> RecordedVersion {
        RecordedVersion { hlc, node: 1 }
    }

    fn op(
        f: OpKind,
        value: Value,
        read: Option<i64>,
        version: Option<RecordedVersion>,
        times_ms: (u64, u64),
    ) -> OpRecord {
        OpRecord {
            process: 1,
            f,
            key: "k".into(),
            invoke_value: value,
            outcome: EventType::Ok,
            read,
            version,
            error: None,
            note: None,
            invoke_ns: times_ms.0 * 1_000_000,
            complete_ns: times_ms.1 * 1_000_000,
            phase: Phase::Workload,
            level: capkv::Level::Quorum,
        }
    }

    fn write(v: i64, hlc: u64, times_ms: (u64, u64)) -> OpRecord {
        op(OpKind::Write, Value::Int(v), None, Some(ver(hlc)), times_ms)
    }

    fn read(v: Option<i64>, hlc: Option<u64>, times_ms: (u64, u64)) -> OpRecord {
        op(OpKind::Read, Value::Null, v, hlc.map(ver), times_ms)
    }

    // Proves: a read that returns an older value than a write acknowledged
    // before it started is stale, with staleness measured from the first
    // newer acknowledgement; a read concurrent with the write is not.
    #[test]
    fn stale_only_after_acknowledgement() {
        let ops = [
            write(1, 10, (0, 10)),
            write(2, 20, (20, 30)),
            write(3, 30, (40, 50)),
            read(Some(1), Some(10), (25, 26)), // write 2 not yet acknowledged: fine
            read(Some(1), Some(10), (60, 61)), // writes 2 and 3 acknowledged: stale by 30 ms
            read(Some(3), Some(30), (60, 62)), // fresh
            read(None, None, (5, 6)),          // before any ack: fine
            read(None, None, (15, 16)),        // write 1 acknowledged at 10: stale by 5 ms
        ];
        let stats = analyze(&ops);
        assert_eq!((stats.reads, stats.stale, stats.unversioned), (5, 2, 0));
        assert_eq!(stats.by_key.get("k"), Some(&2));
        let staleness: Vec<f64> = stats.examples.iter().map(|e| e.staleness_ms).collect();
        assert_eq!(staleness, vec![30.0, 5.0], "stalest first");
        assert_eq!(stats.examples[0].newest_acked_value, 3);
        assert_eq!(stats.staleness_ms.max, 30.0);
        assert!((stats.fraction - 0.4).abs() < 1e-9);
    }

    // Proves: versions, not acknowledgement order, decide what is newer (a
    // write acknowledged later with a lower version, e.g. from a node whose
    // clock is behind, does not make a read of the higher one stale); a read
    // without version is versioned by its value or counted as unversioned.
    #[test]
    fn versions_decide_and_unversioned_reads() {
        let ops = [
            write(1, 50, (0, 10)),
            write(2, 20, (0, 20)), // lower version, acknowledged later
            read(Some(1), Some(50), (30, 31)),
            read(Some(1), None, (30, 32)),     // versioned by value
            read(Some(9), None, (30, 33)),     // unknown value
            read(Some(2), Some(20), (30, 34)), // stale: 1 (version 50) acknowledged at 10
        ];
        let stats = analyze(&ops);
        assert_eq!((stats.reads, stats.stale, stats.unversioned), (3, 1, 1));
        assert_eq!(stats.examples[0].value, Some(2));
        assert_eq!(stats.examples[0].staleness_ms, 20.0);
    }
}
