//! Regression tests for the capkv fork (see PATCHES.md): a search stopped by
//! its timeout must answer `Unknown`, never `Illegal`, also when partial
//! linearizations are requested; and the per-partition verdicts tell which
//! partition is the offending one.

use std::time::{Duration, Instant};

use porcupine_rs::{CheckResult, Model, Operation};

/// A register of integers, partitioned by key.
#[derive(Clone, Debug)]
struct KeyedRegister;

#[derive(Clone, Debug)]
enum RegOp {
    Write { key: u32, value: i64 },
    Read { key: u32, value: i64 },
}

impl RegOp {
    fn key(&self) -> u32 {
        match self {
            RegOp::Write { key, .. } | RegOp::Read { key, .. } => *key,
        }
    }
}

impl Model for KeyedRegister {
    type State = i64;
    type Op = RegOp;
    type Metadata = ();

    fn partition_operations(history: &[Operation<Self>]) -> Vec<Vec<Operation<Self>>> {
        let mut by_key = std::collections::BTreeMap::<u32, Vec<Operation<Self>>>::new();
        for op in history {
            by_key.entry(op.op.key()).or_default().push(op.clone());
        }
        by_key.into_values().collect()
    }

    fn init() -> i64 {
        0
    }

    fn step(state: &i64, op: &RegOp) -> (bool, i64) {
        match op {
            RegOp::Write { value, .. } => (true, *value),
            RegOp::Read { value, .. } => (*value == *state, *state),
        }
    }
}

fn op(call: i64, ret: i64, op: RegOp) -> Operation<KeyedRegister> {
    Operation { client_id: Some(0), call_time: call, return_time: ret, op, metadata: None }
}

/// A linearizable history that is expensive to search: `n` concurrent writes
/// of 1..=n with unknown outcome (return time +inf), then sequential reads of
/// 1, 2, ..., n. The only linearizations put write k just before read k; the
/// depth-first search lifts the writes in call order first and needs about
/// 2^n steps to find that out.
fn slow_linearizable(key: u32, n: i64) -> Vec<Operation<KeyedRegister>> {
    let mut h = Vec::new();
    for i in 0..n {
        h.push(op(i, i64::MAX, RegOp::Write { key, value: i + 1 }));
    }
    for i in 0..n {
        let t = 1_000 + 2 * i;
        h.push(op(t, t + 1, RegOp::Read { key, value: i + 1 }));
    }
    h
}

#[test]
fn timed_out_search_is_unknown_with_and_without_info() {
    let history = slow_linearizable(0, 40);
    let budget = Duration::from_millis(200);

    let started = Instant::now();
    assert_eq!(porcupine_rs::check_operations_timeout(&history, budget), CheckResult::Unknown);
    let (result, info) = porcupine_rs::check_operations_info_timeout(&history, budget);
    // porcupine-rs 0.3.0 answered Illegal here.
    assert_eq!(result, CheckResult::Unknown);
    assert_eq!(info.partition_results, vec![CheckResult::Unknown]);
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn illegal_partition_is_reported_even_when_another_times_out() {
    // Key 0: slow but linearizable. Key 1: a read of a value never written.
    let mut history = slow_linearizable(0, 40);
    history.push(op(0, 1, RegOp::Write { key: 1, value: 5 }));
    history.push(op(2, 3, RegOp::Read { key: 1, value: 6 }));

    let (result, info) = porcupine_rs::check_operations_info_timeout(&history, Duration::from_millis(200));
    assert_eq!(result, CheckResult::Illegal);
    assert_eq!(info.partition_results, vec![CheckResult::Unknown, CheckResult::Illegal]);
    assert_eq!(porcupine_rs::check_operations_timeout(&history, Duration::from_millis(200)), CheckResult::Illegal);
}

#[test]
fn many_partitions_are_all_checked() {
    // More partitions than any machine has cores: the bounded worker pool
    // must still check every one of them.
    let mut history = Vec::new();
    for key in 0..3_000u32 {
        let t = i64::from(key) * 10;
        history.push(op(t, t + 2, RegOp::Write { key, value: 7 }));
        history.push(op(t + 1, t + 3, RegOp::Read { key, value: 7 }));
    }
    let (result, info) = porcupine_rs::check_operations_info_timeout(&history, Duration::from_secs(30));
    assert_eq!(result, CheckResult::Ok);
    assert_eq!(info.partition_results.len(), 3_000);
    assert!(info.partition_results.iter().all(|r| *r == CheckResult::Ok));

    // One bad key among them is found.
    history.push(op(40_000, 40_001, RegOp::Read { key: 2_999, value: 8 }));
    let (result, info) = porcupine_rs::check_operations_info_timeout(&history, Duration::from_secs(30));
    assert_eq!(result, CheckResult::Illegal);
    assert_eq!(info.partition_results[2_999], CheckResult::Illegal);
    assert_eq!(porcupine_rs::check_operations_timeout(&history, Duration::from_secs(30)), CheckResult::Illegal);
}
