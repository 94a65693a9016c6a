//! The one place a request meets its level. The unary `Kv` service and the
//! session stream (which runs each request through the unary handlers) both
//! call these functions, and each is one exhaustive `match` over
//! [`Level`]: a new level does not compile until every operation says what
//! it does at that level.
//!
//! Being the one place, it is also where every KV request is counted for
//! Prometheus (`metrics::requests`): op, level, outcome and duration, after
//! validation and before the reply is encoded.

use std::time::Instant;

use bytes::Bytes;

use super::NodeState;
use crate::clock::Version;
use crate::level::Level;
use crate::levels::{Call, CasReply, KvLevel, LevelError};
use crate::metrics::requests::{Op, Outcome};
use crate::store::Cell;

fn record<T>(
    node: &NodeState,
    op: Op,
    level: Level,
    started: Instant,
    r: &Result<T, LevelError>,
    ok: impl Fn(&T) -> Outcome,
) {
    let outcome = match r {
        Ok(v) => ok(v),
        Err(e) => Outcome::of_error(e),
    };
    node.metrics.requests.record(op, level, outcome, started.elapsed());
}

/// The cell of `key` read at `level` (tombstones included).
pub async fn get(node: &NodeState, level: Level, key: Bytes, call: Call) -> Result<Option<Cell>, LevelError> {
    let started = Instant::now();
    let r = match level {
        Level::Eventual => KvLevel::get(&node.eventual, key, call).await,
        Level::Quorum => KvLevel::get(&node.quorum, key, call).await,
        Level::Linearizable => KvLevel::get(&*node.linear, key, call).await,
    };
    record(node, Op::Get, level, started, &r, |c| match c {
        Some(c) if !c.is_tombstone() => Outcome::Ok,
        _ => Outcome::NotFound,
    });
    r
}

/// Writes `value` to `key` at `level` (`None` deletes); the version written.
pub async fn write(
    node: &NodeState,
    level: Level,
    key: Bytes,
    value: Option<Bytes>,
    call: Call,
) -> Result<Version, LevelError> {
    let started = Instant::now();
    let op = if value.is_some() { Op::Set } else { Op::Del };
    let r = match level {
        Level::Eventual => KvLevel::write(&node.eventual, key, value, call).await,
        Level::Quorum => KvLevel::write(&node.quorum, key, value, call).await,
        Level::Linearizable => KvLevel::write(&*node.linear, key, value, call).await,
    };
    record(node, op, level, started, &r, |_| Outcome::Ok);
    r
}

/// Compare-and-set of `key` at `level` (`expected: None` = must be absent).
pub async fn cas(
    node: &NodeState,
    level: Level,
    key: Bytes,
    expected: Option<Bytes>,
    new_value: Bytes,
    call: Call,
) -> Result<CasReply, LevelError> {
    let started = Instant::now();
    let r = match level {
        Level::Eventual => KvLevel::cas(&node.eventual, key, expected, new_value, call).await,
        Level::Quorum => KvLevel::cas(&node.quorum, key, expected, new_value, call).await,
        Level::Linearizable => KvLevel::cas(&*node.linear, key, expected, new_value, call).await,
    };
    record(node, Op::Cas, level, started, &r, |c| if c.swapped { Outcome::Ok } else { Outcome::CompareFailed });
    r
}
