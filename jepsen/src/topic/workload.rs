//! Producer processes of the topic workload: each sends one message at a
//! time and records it as invoke + ok/fail/info.
//!
//! Messages are unique integers (1, 2, 3, … across the run), so a record
//! read back names exactly one send. Each send goes to a partition drawn
//! from the worker's seeded RNG, so every producer writes to every
//! partition and the checker can compare its send order with the log's.
//!
//! As in the register workload, `--concurrency C` workers each run one
//! process at a time; process `p` has its own [`TopicClient`] and
//! idempotent [`Producer`] (its own producer id), which talk to node
//! `p mod N` first for metadata. When a send ends in `info` the process is
//! retired — its message may still be appended — and the worker continues
//! as `p + C` with a fresh client and producer (fresh metadata: the client
//! refreshes its leader cache only when a node answers "not the leader",
//! so a paused leader would hold a long-lived client until it resumes).
//!
//! | producer result | event |
//! |---|---|
//! | acknowledged | `ok` with the offset |
//! | `Unavailable`, `NotEnoughReplicas`, `FailedPrecondition`, `InvalidArgument`, `UnknownTopic`, … (nothing written) | `fail` + `error` |
//! | `Indeterminate` (delivery timeout after an attempt of unknown outcome), `Server`, no answer | `info` |

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use capkv::client::topics::{Acks, Producer, ProducerOptions, TopicClient, TopicClientError};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::recorder::{SendCompletion, TopicRecorder};
use crate::client::{endpoint_order, WorkloadSummary, CONCURRENCY_MAX, OUTER_TIMEOUT_MARGIN_MS};
use crate::history::EventType;
use crate::record::RecordError;

/// Shortest deadline of one produce request inside a send.
pub const REQUEST_TIMEOUT_MIN_MS: u64 = 500;
/// A send's produce requests each get at most this fraction of its
/// deadline, so a request stuck on a dead leader leaves time to retry
/// (same sequence numbers: idempotent) elsewhere.
pub const REQUEST_TIMEOUT_DIVISOR: u32 = 3;
/// Pause before a worker tries again to set up a producer that could not
/// read the topic's metadata.
pub const PRODUCER_RETRY_MS: u64 = 200;

/// What the producers do.
#[derive(Clone, Debug)]
pub struct ProduceConfig {
    /// The topic.
    pub topic: String,
    /// Its partition count.
    pub partitions: u32,
    /// Acknowledgement level of every send.
    pub acks: Acks,
    /// Workers (1..=[`CONCURRENCY_MAX`]).
    pub concurrency: usize,
    /// Deadline of one send (the producer's delivery timeout).
    pub op_timeout: Duration,
    /// Target rate of all workers together, sends per second.
    pub rate_hz: f64,
    /// Node addresses in node-id order.
    pub endpoints: Vec<String>,
    /// Token and TLS settings of every client.
    pub connect: capkv::client::ConnectOptions,
    /// Seeds pacing and partition choice.
    pub seed: u64,
}

/// A process's client and producer.
struct ProcessProducer {
    producer: Producer,
}

impl ProcessProducer {
    async fn new(config: &ProduceConfig, process: u64) -> Result<ProcessProducer, TopicClientError> {
        let client = Arc::new(TopicClient::connect(&endpoint_order(process, &config.endpoints), &config.connect)?);
        let request_timeout = (config.op_timeout / REQUEST_TIMEOUT_DIVISOR)
            .max(Duration::from_millis(REQUEST_TIMEOUT_MIN_MS))
            .min(config.op_timeout);
        let options = ProducerOptions {
            acks: config.acks,
            delivery_timeout: config.op_timeout,
            request_timeout,
            ..ProducerOptions::default()
        };
        Ok(ProcessProducer { producer: Producer::new(client, &config.topic, options).await? })
    }
}

/// Runs `config.concurrency` producer workers until `until` (no send
/// starts later), cancellation, or a full history.
pub async fn run_producers(
    config: &ProduceConfig,
    recorder: &TopicRecorder,
    until: Instant,
    cancel: &CancellationToken,
) -> WorkloadSummary {
    assert!((1..=CONCURRENCY_MAX).contains(&config.concurrency));
    assert!(config.partitions > 0, "a topic has partitions");
    let next_value = AtomicI64::new(1);
    let workers = (0..config.concurrency).map(|slot| worker(slot, config, &next_value, recorder, until, cancel));
    WorkloadSummary::of_workers(futures::future::join_all(workers).await)
}

/// One worker; returns its last process number and why it stopped early.
async fn worker(
    slot: usize,
    config: &ProduceConfig,
    next_value: &AtomicI64,
    recorder: &TopicRecorder,
    until: Instant,
    cancel: &CancellationToken,
) -> (u64, Option<String>) {
    let concurrency = config.concurrency as u64;
    let mut process = slot as u64;
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ (0x7f4a_7c15_9e37_79b9u64.wrapping_mul(slot as u64 + 1)));
    let mean_gap_s = config.concurrency as f64 / config.rate_hz;
    let mut producer: Option<ProcessProducer> = None;
    loop {
        let gap = Duration::from_secs_f64(rng.random_range(0.0..2.0 * mean_gap_s));
        tokio::select! {
            _ = tokio::time::sleep(gap) => {}
            _ = cancel.cancelled() => return (process, None),
        }
        if Instant::now() >= until || cancel.is_cancelled() {
            return (process, None);
        }
        let current = match producer.as_ref() {
            Some(p) => p,
            None => match ProcessProducer::new(config, process).await {
                Ok(p) => producer.insert(p),
                // No metadata now (no Raft leader, faults): nothing was
                // sent, so nothing is recorded; try again shortly.
                Err(TopicClientError::Config(e)) => return (process, Some(format!("cannot create a client: {e}"))),
                Err(_) => {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(PRODUCER_RETRY_MS)) => {}
                        _ = cancel.cancelled() => return (process, None),
                    }
                    continue;
                }
            },
        };
        let partition = rng.random_range(0..config.partitions);
        let value = next_value.fetch_add(1, Ordering::Relaxed);
        match recorder.invoke_send(process, partition, value) {
            Ok(()) => {}
            Err(RecordError::Full) => return (process, Some(RecordError::Full.to_string())),
            Err(e) => return (process, Some(format!("cannot record: {e}"))),
        }
        let completion = send(&current.producer, partition, value, config.op_timeout).await;
        let retire = completion.kind == EventType::Info;
        if let Err(e) = recorder.complete_send(process, completion) {
            return (process, Some(format!("cannot record: {e}")));
        }
        if retire {
            process += concurrency;
            producer = None;
        }
    }
}

/// Sends one message and says how it ended (see the module docs).
pub async fn send(producer: &Producer, partition: u32, value: i64, timeout: Duration) -> SendCompletion {
    let outer = timeout + Duration::from_millis(OUTER_TIMEOUT_MARGIN_MS);
    let bytes = value.to_string();
    match tokio::time::timeout(outer, producer.send_to(partition, None, bytes.as_bytes())).await {
        Ok(Ok(meta)) => SendCompletion { kind: EventType::Ok, offset: meta.offset, error: None, note: None },
        Ok(Err(e)) => completion_for_error(&e),
        Err(_) => SendCompletion {
            kind: EventType::Info,
            offset: None,
            error: None,
            note: Some(format!("no answer within {} ms", outer.as_millis())),
        },
    }
}

/// How a send that returned `error` ended (see the module docs).
pub fn completion_for_error(error: &TopicClientError) -> SendCompletion {
    use TopicClientError as E;
    match error {
        E::Indeterminate(_) | E::Server { .. } => {
            SendCompletion { kind: EventType::Info, offset: None, error: None, note: Some(error.to_string()) }
        }
        E::Config(_)
        | E::InvalidArgument(_)
        | E::UnknownTopic(_)
        | E::TopicExists(_)
        | E::NotEnoughReplicas(_)
        | E::StaleGeneration(_)
        | E::ReassignmentInProgress(_)
        | E::FailedPrecondition(_)
        | E::OffsetOutOfRange { .. }
        | E::Unavailable(_) => {
            SendCompletion { kind: EventType::Fail, offset: None, error: Some(error.to_string()), note: None }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves: the producer-error → event mapping of the module docs:
    // nothing written → fail with error; unknown → info with a note.
    #[test]
    fn errors_map_to_outcomes() {
        use TopicClientError as E;
        let cases = [
            (E::Unavailable("no leader".into()), EventType::Fail),
            (E::NotEnoughReplicas("1 of 3 in sync".into()), EventType::Fail),
            (E::FailedPrecondition("out of order".into()), EventType::Fail),
            (E::UnknownTopic("t".into()), EventType::Fail),
            (E::Indeterminate("timeout".into()), EventType::Info),
            (E::Server { code: "Internal".into(), message: "x".into() }, EventType::Info),
        ];
        for (error, kind) in cases {
            let c = completion_for_error(&error);
            assert_eq!(c.kind, kind, "{error}");
            assert_eq!(c.error.is_some(), kind == EventType::Fail, "{error}");
            assert_eq!(c.note.is_some(), kind == EventType::Info, "{error}");
            assert_eq!(c.offset, None);
        }
    }
}
