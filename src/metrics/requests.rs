//! Client KV requests counted by operation × level × outcome, with latency
//! by operation × level.
//!
//! Every label combination is a fixed slot in arrays indexed by small enums,
//! so recording a request is a few relaxed `fetch_add`s: no lock, no map
//! lookup, no allocation. The label values are part of the exported
//! interface (docs/operations.md lists them); keep them few.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::histogram::Histogram;
use crate::level::Level;
use crate::levels::quorum::QuorumError;
use crate::levels::LevelError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Get,
    Set,
    Del,
    Cas,
}

impl Op {
    pub const ALL: [Op; 4] = [Op::Get, Op::Set, Op::Del, Op::Cas];

    pub fn name(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Set => "set",
            Op::Del => "del",
            Op::Cas => "cas",
        }
    }
}

/// How a request ended, as a client would sort it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done: a get that found a live value, a write, a CAS that swapped.
    Ok,
    /// A get that found nothing (absent or deleted).
    NotFound,
    /// A CAS whose comparison failed (nothing written).
    CompareFailed,
    /// Certainly not applied (no majority, no leader, overloaded): safe to retry.
    Unavailable,
    /// May or may not have taken effect (deadline passed mid-write, leader changed).
    Indeterminate,
    /// Refused for another reason (precondition, unimplemented, storage error).
    Error,
}

impl Outcome {
    pub const ALL: [Outcome; 6] = [
        Outcome::Ok,
        Outcome::NotFound,
        Outcome::CompareFailed,
        Outcome::Unavailable,
        Outcome::Indeterminate,
        Outcome::Error,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::NotFound => "not_found",
            Outcome::CompareFailed => "compare_failed",
            Outcome::Unavailable => "unavailable",
            Outcome::Indeterminate => "indeterminate",
            Outcome::Error => "error",
        }
    }

    /// The outcome of a failed request; the same split as the gRPC status
    /// the client gets (`node::service::level_status`).
    pub fn of_error(e: &LevelError) -> Outcome {
        match e {
            LevelError::NotStarted(_)
            | LevelError::GetNotWrittenBack { .. }
            | LevelError::Quorum(QuorumError::Unavailable { .. }) => Outcome::Unavailable,
            LevelError::Quorum(QuorumError::Indeterminate { .. })
            | LevelError::NotWrittenBack { .. }
            | LevelError::UnexpectedReply { .. } => Outcome::Indeterminate,
            LevelError::Raft(r) if r.is_indeterminate() => Outcome::Indeterminate,
            LevelError::Raft(_) => Outcome::Unavailable,
            LevelError::Refused { .. } | LevelError::Store(_) => Outcome::Error,
        }
    }
}

fn level_index(l: Level) -> usize {
    match l {
        Level::Eventual => 0,
        Level::Quorum => 1,
        Level::Linearizable => 2,
    }
}

const OPS: usize = Op::ALL.len();
const LEVELS: usize = Level::ALL.len();
const OUTCOMES: usize = Outcome::ALL.len();

#[derive(Debug)]
pub struct RequestMetrics {
    counts: [[[AtomicU64; OUTCOMES]; LEVELS]; OPS],
    durations: [[Histogram; LEVELS]; OPS],
}

impl Default for RequestMetrics {
    fn default() -> Self {
        RequestMetrics {
            counts: std::array::from_fn(|_| std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0)))),
            durations: std::array::from_fn(|_| std::array::from_fn(|_| Histogram::default())),
        }
    }
}

impl RequestMetrics {
    pub fn record(&self, op: Op, level: Level, outcome: Outcome, took: Duration) {
        let (o, l) = (op as usize, level_index(level));
        self.counts[o][l][outcome as usize].fetch_add(1, Ordering::Relaxed);
        self.durations[o][l].observe(took);
    }

    pub fn count(&self, op: Op, level: Level, outcome: Outcome) -> u64 {
        self.counts[op as usize][level_index(level)][outcome as usize].load(Ordering::Relaxed)
    }

    pub fn duration(&self, op: Op, level: Level) -> &Histogram {
        &self.durations[op as usize][level_index(level)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rsm::RaftError;

    /// Each (op, level, outcome) has its own slot, and the latency goes to
    /// the (op, level) histogram whatever the outcome.
    #[test]
    fn slots_are_independent() {
        let m = RequestMetrics::default();
        m.record(Op::Cas, Level::Quorum, Outcome::CompareFailed, Duration::from_millis(1));
        m.record(Op::Cas, Level::Quorum, Outcome::Ok, Duration::from_millis(2));
        m.record(Op::Get, Level::Eventual, Outcome::NotFound, Duration::from_micros(10));
        assert_eq!(m.count(Op::Cas, Level::Quorum, Outcome::CompareFailed), 1);
        assert_eq!(m.count(Op::Cas, Level::Quorum, Outcome::Ok), 1);
        assert_eq!(m.count(Op::Cas, Level::Linearizable, Outcome::Ok), 0);
        assert_eq!(m.count(Op::Get, Level::Eventual, Outcome::NotFound), 1);
        assert_eq!(m.duration(Op::Cas, Level::Quorum).count(), 2);
        assert_eq!(m.duration(Op::Get, Level::Eventual).count(), 1);
        assert_eq!(m.duration(Op::Set, Level::Eventual).count(), 0);
    }

    /// Errors sort as the client sees them: retry-safe → unavailable, maybe
    /// applied → indeterminate.
    #[test]
    fn errors_sort_like_grpc_statuses() {
        let get_back = LevelError::GetNotWrittenBack { source: Box::new(LevelError::Raft(RaftError::Overloaded)) };
        assert_eq!(Outcome::of_error(&get_back), Outcome::Unavailable);
        assert_eq!(Outcome::of_error(&LevelError::Raft(RaftError::Overloaded)), Outcome::Unavailable);
        assert_eq!(Outcome::of_error(&LevelError::Raft(RaftError::StoppedBeforeApplied)), Outcome::Indeterminate);
        let not_back = LevelError::NotWrittenBack {
            version: crate::clock::Version::new(1, 1),
            source: Box::new(LevelError::Raft(RaftError::Overloaded)),
        };
        assert_eq!(Outcome::of_error(&not_back), Outcome::Indeterminate);
        assert_eq!(Outcome::of_error(&LevelError::Refused { reason: "x".into() }), Outcome::Error);
        let names: std::collections::BTreeSet<_> = Outcome::ALL.iter().map(|o| o.name()).collect();
        assert_eq!(names.len(), Outcome::ALL.len());
    }
}
