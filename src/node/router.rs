//! The one place a request meets its level. The unary `Kv` service and the
//! session stream (which runs each request through the unary handlers) both
//! call these functions, and each is one exhaustive `match` over
//! [`Level`]: a new level does not compile until every operation says what
//! it does at that level.
//!
//! Being the one place, it is also where every KV request is counted for
//! Prometheus (`metrics::requests`): op, level, outcome and duration, after
//! validation and before the reply is encoded; and where each request gets
//! a `request_id` (a per-node counter) and a request slower than
//! `--slow-request-ms` logs one WARN line (the slow-request log).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tracing::Instrument;

use super::NodeState;
use crate::clock::Version;
use crate::level::Level;
use crate::levels::{Call, CasReply, KvLevel, LevelError};
use crate::metrics::requests::{Op, Outcome};
use crate::store::Cell;

/// Keys longer than this are cut in the slow-request log.
pub const MAX_LOGGED_KEY_BYTES: usize = 64;

/// Request ids and the slow-request threshold of one node.
#[derive(Debug)]
pub struct RequestLog {
    next_id: AtomicU64,
    slow: Duration,
}

impl RequestLog {
    /// Requests taking `slow` or longer are logged (`Duration::ZERO`: every one).
    pub fn new(slow: Duration) -> Self {
        RequestLog { next_id: AtomicU64::new(1), slow }
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// `key` for a log line: printable ASCII as is, other bytes (and `\`, quotes)
/// escaped, at most [`MAX_LOGGED_KEY_BYTES`] bytes of it, then how long it was.
pub fn key_for_log(key: &[u8]) -> String {
    let shown = &key[..key.len().min(MAX_LOGGED_KEY_BYTES)];
    let mut out: String = shown.iter().flat_map(|&b| std::ascii::escape_default(b)).map(char::from).collect();
    if shown.len() < key.len() {
        out.push_str(&format!("...({} bytes)", key.len()));
    }
    out
}

/// One request in flight: its id and when it was routed.
struct Begun {
    id: u64,
    started: Instant,
}

fn begin(node: &NodeState) -> (Begun, tracing::Span) {
    let id = node.request_log.next_id();
    (Begun { id, started: Instant::now() }, tracing::debug_span!("request", request_id = id))
}

impl Begun {
    /// Counts the request for Prometheus and logs it if it was slow.
    fn finish<T>(
        self,
        node: &NodeState,
        op: Op,
        level: Level,
        key: &[u8],
        r: &Result<T, LevelError>,
        ok: impl Fn(&T) -> Outcome,
    ) {
        let took = self.started.elapsed();
        let outcome = match r {
            Ok(v) => ok(v),
            Err(e) => Outcome::of_error(e),
        };
        node.metrics.requests.record(op, level, outcome, took);
        if took >= node.request_log.slow {
            tracing::warn!(
                request_id = self.id,
                op = op.name(),
                level = level.name(),
                key = %key_for_log(key),
                // Whole microseconds, so the line shows e.g. 1234.567.
                duration_ms = took.as_micros() as f64 / 1e3,
                outcome = outcome.name(),
                "slow request"
            );
        }
    }
}

/// The cell of `key` read at `level` (tombstones included).
pub async fn get(node: &NodeState, level: Level, key: Bytes, call: Call) -> Result<Option<Cell>, LevelError> {
    let (begun, span) = begin(node);
    let k = key.clone();
    let r = async {
        match level {
            Level::Eventual => KvLevel::get(&node.eventual, key, call).await,
            Level::Quorum => KvLevel::get(&node.quorum, key, call).await,
            Level::Linearizable => KvLevel::get(&*node.linear, key, call).await,
        }
    }
    .instrument(span)
    .await;
    begun.finish(node, Op::Get, level, &k, &r, |c| match c {
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
    let (begun, span) = begin(node);
    let op = if value.is_some() { Op::Set } else { Op::Del };
    let k = key.clone();
    let r = async {
        match level {
            Level::Eventual => KvLevel::write(&node.eventual, key, value, call).await,
            Level::Quorum => KvLevel::write(&node.quorum, key, value, call).await,
            Level::Linearizable => KvLevel::write(&*node.linear, key, value, call).await,
        }
    }
    .instrument(span)
    .await;
    begun.finish(node, op, level, &k, &r, |_| Outcome::Ok);
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
    let (begun, span) = begin(node);
    let k = key.clone();
    let r = async {
        match level {
            Level::Eventual => KvLevel::cas(&node.eventual, key, expected, new_value, call).await,
            Level::Quorum => KvLevel::cas(&node.quorum, key, expected, new_value, call).await,
            Level::Linearizable => KvLevel::cas(&*node.linear, key, expected, new_value, call).await,
        }
    }
    .instrument(span)
    .await;
    begun.finish(node, Op::Cas, level, &k, &r, |c| if c.swapped { Outcome::Ok } else { Outcome::CompareFailed });
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Printable keys show as they are; other bytes are escaped; long keys
    /// are cut and say their length, so a log line stays bounded.
    #[test]
    fn keys_are_escaped_and_bounded() {
        assert_eq!(key_for_log(b"user:42"), "user:42");
        assert_eq!(key_for_log(b"a\nb\x00\xff\"q"), "a\\nb\\x00\\xff\\\"q");
        let long = vec![b'k'; 1000];
        let shown = key_for_log(&long);
        assert_eq!(shown, format!("{}...(1000 bytes)", "k".repeat(MAX_LOGGED_KEY_BYTES)));
        assert!(key_for_log(&[0xffu8; 1000]).len() <= 4 * MAX_LOGGED_KEY_BYTES + 20);
    }
}
