//! Client processes: run generated operations against the cluster, each at
//! the consistency level the generator gave it, and record each as invoke
//! (with its level) + ok/fail/info.
//!
//! As in Jepsen, a *process* is a logical client with at most one operation
//! outstanding. `--concurrency C` workers each run one process at a time;
//! worker `w` starts as process `w`, and when an operation ends in `info`
//! (outcome unknown) that process is retired — it might still take effect
//! later — and the worker continues as process `p + C` with a fresh capkv
//! client (a new client id, so a linearizable session does not carry over).
//!
//! Process `p` talks first to node `p mod N` (its home node), then to the
//! others in order: the capkv client moves on only when that cannot apply a
//! write twice (see `capkv::client`), so failover is safe at every level.
//!
//! How client results become history events ([`completion_for_error`]):
//!
//! | result                                   | event |
//! |------------------------------------------|-------|
//! | success; cas swapped                     | `ok` (+ `version`) |
//! | cas not swapped (compare failed)         | `fail`, no `error` |
//! | `Unavailable` (nothing applied)          | `fail` + `error` |
//! | `FailedPrecondition`, `Unimplemented`, `InvalidArgument` (refused) | `fail` + `error` |
//! | `Indeterminate` (write fate unknown), timeout, other server errors | `info` |
//! | any error of a read (reads change nothing) | `fail` + `error` |

use std::sync::Mutex;
use std::time::Duration;

use capkv::client::{CallOptions, Client, ClientError, ConnectOptions};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::generator::{Generator, OpSpec};
use crate::history::{EventType, OpKind, Value};
use crate::record::{Completion, Phase, RecordError, RecordedVersion, Recorder};

/// Extra time beyond the operation's own deadline before the worker gives
/// up on the client call itself (the client enforces the deadline; this is
/// a backstop).
pub const OUTER_TIMEOUT_MARGIN_MS: u64 = 1_000;
/// Most workers.
pub const CONCURRENCY_MAX: usize = 1_000;

/// What the workers do.
#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    /// Number of workers (1..=[`CONCURRENCY_MAX`]).
    pub concurrency: usize,
    /// Deadline of one operation.
    pub op_timeout: Duration,
    /// Target rate of all workers together, in operations per second.
    pub rate_hz: f64,
    /// Node addresses (`host:port`) in node-id order.
    pub endpoints: Vec<String>,
    /// Token and TLS settings of every client.
    pub connect: ConnectOptions,
    /// Seeds the workers' pacing.
    pub seed: u64,
    /// Written values are padded to this many bytes (see [`encode_value`]).
    pub value_bytes: usize,
}

/// How the workload ended.
#[derive(Clone, Debug, Default)]
pub struct WorkloadSummary {
    /// One more than the largest process number used.
    pub processes: u64,
    /// Why workers stopped before the deadline, if they did.
    pub stopped_early: Option<String>,
}

impl WorkloadSummary {
    /// Folds what each worker returned (its last process number and why it
    /// stopped early) into one summary: the first early stop wins.
    pub fn of_workers(ends: impl IntoIterator<Item = (u64, Option<String>)>) -> WorkloadSummary {
        let mut summary = WorkloadSummary::default();
        for (last_process, stopped) in ends {
            summary.processes = summary.processes.max(last_process + 1);
            if summary.stopped_early.is_none() {
                summary.stopped_early = stopped;
            }
        }
        summary
    }
}

/// A capkv client for `process`: its home node first, then the others.
pub fn client_for(process: u64, endpoints: &[String], connect: &ConnectOptions) -> Result<Client, ClientError> {
    Client::connect(&endpoint_order(process, endpoints), connect)
}

/// `endpoints` rotated so that `process`'s home node, `process mod N`, is
/// first.
pub fn endpoint_order(process: u64, endpoints: &[String]) -> Vec<String> {
    assert!(!endpoints.is_empty(), "no endpoints");
    let home = (process % endpoints.len() as u64) as usize;
    let mut ordered = endpoints[home..].to_vec();
    ordered.extend_from_slice(&endpoints[..home]);
    ordered
}

/// Runs `config.concurrency` workers until `until` (no operation starts
/// later), cancellation, or a full history.
pub async fn run_workload(
    config: &WorkloadConfig,
    generator: &Mutex<Generator>,
    recorder: &Recorder,
    until: Instant,
    cancel: &CancellationToken,
) -> WorkloadSummary {
    assert!((1..=CONCURRENCY_MAX).contains(&config.concurrency));
    let workers = (0..config.concurrency).map(|slot| worker(slot, config, generator, recorder, until, cancel));
    WorkloadSummary::of_workers(futures::future::join_all(workers).await)
}

/// One worker; returns its last process number and why it stopped early.
async fn worker(
    slot: usize,
    config: &WorkloadConfig,
    generator: &Mutex<Generator>,
    recorder: &Recorder,
    until: Instant,
    cancel: &CancellationToken,
) -> (u64, Option<String>) {
    let concurrency = config.concurrency as u64;
    let mut process = slot as u64;
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ (0x9e37_79b9_7f4a_7c15u64.wrapping_mul(slot as u64 + 1)));
    let mean_gap_s = config.concurrency as f64 / config.rate_hz;
    let mut client = match client_for(process, &config.endpoints, &config.connect) {
        Ok(c) => c,
        Err(e) => return (process, Some(format!("cannot create a client: {e}"))),
    };
    loop {
        let gap = Duration::from_secs_f64(rng.random_range(0.0..2.0 * mean_gap_s));
        tokio::select! {
            _ = tokio::time::sleep(gap) => {}
            _ = cancel.cancelled() => return (process, None),
        }
        if Instant::now() >= until || cancel.is_cancelled() {
            return (process, None);
        }
        let op = generator.lock().expect("generator lock").next_op();
        match recorder.invoke(process, op.f, &op.key, op.value, op.level, Phase::Workload) {
            Ok(_) => {}
            Err(RecordError::Full) => return (process, Some(RecordError::Full.to_string())),
            Err(e) => return (process, Some(format!("cannot record: {e}"))),
        }
        let completion = execute(&client, &op, config.op_timeout, config.value_bytes).await;
        let retire = completion.kind == EventType::Info;
        if let Err(e) = recorder.complete(process, completion) {
            return (process, Some(format!("cannot record: {e}")));
        }
        if retire {
            process += concurrency;
            client = match client_for(process, &config.endpoints, &config.connect) {
                Ok(c) => c,
                Err(e) => return (process, Some(format!("cannot create a client: {e}"))),
            };
        }
    }
}

/// Runs one operation at its level and says how it ended (see the module
/// docs).
pub async fn execute(client: &Client, op: &OpSpec, timeout: Duration, value_bytes: usize) -> Completion {
    let opts = CallOptions::new(op.level).timeout(timeout);
    let outer = timeout + Duration::from_millis(OUTER_TIMEOUT_MARGIN_MS);
    let key = op.key.as_bytes();
    let timed_out = || ClientError::Indeterminate(format!("no answer within {} ms", outer.as_millis()));
    match (op.f, op.value) {
        (OpKind::Read, _) => {
            match tokio::time::timeout(outer, client.get(key, opts)).await.unwrap_or_else(|_| Err(timed_out())) {
                Ok(None) => ok(Value::Null, None),
                Ok(Some(found)) => match parse_value(&found.value) {
                    Some(v) => ok(Value::Int(v), Some(found.version.into())),
                    None => Completion {
                        kind: EventType::Info,
                        value: Value::Null,
                        error: None,
                        version: Some(found.version.into()),
                        note: Some(format!("unexpected value: {:?}", String::from_utf8_lossy(&found.value))),
                    },
                },
                // A read changes nothing: whatever went wrong, it did not happen.
                Err(e) => fail(Value::Null, e.to_string()),
            }
        }
        (OpKind::Write, Value::Int(v)) => {
            let bytes = encode_value(v, value_bytes);
            match tokio::time::timeout(outer, client.set(key, &bytes, opts)).await.unwrap_or_else(|_| Err(timed_out()))
            {
                Ok(version) => ok(op.value, Some(version.into())),
                Err(e) => completion_for_error(op.value, &e),
            }
        }
        (OpKind::Cas, Value::Cas { expected, new }) => {
            let (expected_bytes, new_bytes) = (encode_value(expected, value_bytes), encode_value(new, value_bytes));
            let call = client.cas(key, Some(&expected_bytes), &new_bytes, opts);
            match tokio::time::timeout(outer, call).await.unwrap_or_else(|_| Err(timed_out())) {
                Ok(outcome) if outcome.swapped => ok(op.value, outcome.current.map(|c| c.version.into())),
                Ok(_) => Completion { kind: EventType::Fail, value: op.value, error: None, version: None, note: None },
                Err(e) => completion_for_error(op.value, &e),
            }
        }
        (f, value) => unreachable!("the generator made a {f} with value {value}"),
    }
}

/// How a write or cas that returned `error` ended (see the module docs).
pub fn completion_for_error(value: Value, error: &ClientError) -> Completion {
    match error {
        ClientError::Unavailable(_)
        | ClientError::FailedPrecondition(_)
        | ClientError::Unimplemented(_)
        | ClientError::InvalidArgument(_)
        | ClientError::Unauthenticated(_)
        | ClientError::PermissionDenied(_)
        | ClientError::Config(_) => fail(value, error.to_string()),
        ClientError::Indeterminate(_) | ClientError::Server { .. } => {
            Completion { kind: EventType::Info, value, error: None, version: None, note: Some(error.to_string()) }
        }
    }
}

fn ok(value: Value, version: Option<RecordedVersion>) -> Completion {
    Completion { kind: EventType::Ok, value, error: None, version, note: None }
}

fn fail(value: Value, error: String) -> Completion {
    Completion { kind: EventType::Fail, value, error: Some(error), version: None, note: None }
}

/// The bytes written for `v`: its decimal digits, padded with `.` to
/// `value_bytes` (`--value-bytes`: large values exercise the byte bounds of
/// replication batches, hints and anti-entropy).
pub fn encode_value(v: i64, value_bytes: usize) -> Vec<u8> {
    let mut bytes = v.to_string().into_bytes();
    if bytes.len() < value_bytes {
        bytes.resize(value_bytes, b'.');
    }
    bytes
}

/// The integer a value's bytes spell in decimal (padding stripped), if they do.
pub fn parse_value(bytes: &[u8]) -> Option<i64> {
    std::str::from_utf8(bytes).ok()?.trim_end_matches('.').parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves: the client-error → event mapping of the module docs: nothing
    // applied → fail with error; unknown fate → info (no error, a note).
    #[test]
    fn errors_map_to_outcomes() {
        let v = Value::Int(3);
        let cases = [
            (ClientError::Unavailable("down".into()), EventType::Fail),
            (ClientError::FailedPrecondition("no cas".into()), EventType::Fail),
            (ClientError::Unimplemented("later".into()), EventType::Fail),
            (ClientError::InvalidArgument("bad".into()), EventType::Fail),
            (ClientError::Indeterminate("timeout".into()), EventType::Info),
            (ClientError::Server { code: "Internal".into(), message: "x".into() }, EventType::Info),
        ];
        for (error, kind) in cases {
            let c = completion_for_error(v, &error);
            assert_eq!(c.kind, kind, "{error}");
            assert_eq!(c.value, v);
            assert_eq!(c.error.is_some(), kind == EventType::Fail, "{error}");
            assert_eq!(c.note.is_some(), kind == EventType::Info, "{error}");
        }
    }

    // Proves: process p's client tries its home node p mod N first, then the
    // others in order.
    #[test]
    fn home_node_first() {
        let endpoints: Vec<String> = ["127.0.0.11:1", "127.0.0.12:2", "127.0.0.13:3"].map(String::from).to_vec();
        assert_eq!(endpoint_order(0, &endpoints), endpoints);
        assert_eq!(endpoint_order(4, &endpoints), ["127.0.0.12:2", "127.0.0.13:3", "127.0.0.11:1"]);
        assert_eq!(endpoint_order(5, &endpoints)[0], "127.0.0.13:3");
    }

    // Proves: values are decimal integers; anything else is not a value any
    // client wrote.
    #[test]
    fn parses_values() {
        assert_eq!(parse_value(b"42"), Some(42));
        assert_eq!(parse_value(b"-1"), Some(-1));
        assert_eq!(parse_value(b"4x"), None);
        assert_eq!(parse_value(b"\xff"), None);
        assert_eq!(encode_value(42, 0), b"42");
        let padded = encode_value(-7, 1000);
        assert_eq!(padded.len(), 1000);
        assert_eq!(parse_value(&padded), Some(-7));
        assert_eq!(parse_value(b"4x.."), None);
    }
}
