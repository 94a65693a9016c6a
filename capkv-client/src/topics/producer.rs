//! [`Producer`]: the idempotent, batching producer. A random producer id
//! and per-partition sequence numbers let it retry a batch whose answer
//! was lost without appending the records twice.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use capkv_proto::partition::partition_for_key;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::client::*;
use super::error::*;
use super::types::*;
use super::TopicClientError as E;
use super::*;

#[derive(Clone, Debug)]
pub struct ProducerOptions {
    pub acks: Acks,
    /// How long a record may take to be acknowledged, retries included.
    pub delivery_timeout: Duration,
    /// Deadline of one produce request.
    pub request_timeout: Duration,
    pub max_batch_records: usize,
    pub max_batch_bytes: usize,
}

impl Default for ProducerOptions {
    fn default() -> Self {
        ProducerOptions {
            acks: Acks::All,
            delivery_timeout: DEFAULT_DELIVERY_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_batch_records: DEFAULT_MAX_BATCH_RECORDS,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
        }
    }
}

type Waiter = oneshot::Sender<Result<RecordMetadata, E>>;

#[derive(Default)]
pub(super) struct PartitionQueue {
    queue: VecDeque<((Bytes, Bytes), Waiter)>,
    /// A task is sending this partition's batches.
    sending: bool,
    next_sequence: u64,
}

pub(super) struct ProducerInner {
    client: Arc<TopicClient>,
    topic: String,
    opts: ProducerOptions,
    producer_id: u64,
    partitions: u32,
    round_robin: AtomicU64,
    queues: Vec<Mutex<PartitionQueue>>,
}

/// An idempotent producer for one topic. Concurrent [`Producer::send`]s
/// to a partition are batched: one request in flight per partition, the
/// next batch gathering while it is. A batch is retried (same sequence
/// numbers) until acknowledged or the delivery timeout passes; records of a
/// partition are appended in the order they were sent. Cheap to clone.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<ProducerInner>,
}

impl Producer {
    pub async fn new(client: Arc<TopicClient>, topic: &str, opts: ProducerOptions) -> Result<Producer, E> {
        let t = client.metadata(topic, true).await?;
        let partitions = t.partitions.len() as u32;
        if partitions == 0 {
            return Err(E::UnknownTopic(format!("topic {topic:?} has no partitions")));
        }
        Ok(Producer {
            inner: Arc::new(ProducerInner {
                client,
                topic: topic.to_string(),
                opts,
                producer_id: rand::random::<u64>() >> 1 | 1,
                partitions,
                round_robin: AtomicU64::new(rand::random::<u32>() as u64),
                queues: (0..partitions).map(|_| Mutex::new(PartitionQueue::default())).collect(),
            }),
        })
    }

    pub fn partitions(&self) -> u32 {
        self.inner.partitions
    }

    pub fn producer_id(&self) -> u64 {
        self.inner.producer_id
    }

    /// The partition a record goes to: by key hash, or round-robin.
    pub fn partition_for(&self, key: Option<&[u8]>) -> u32 {
        match key {
            Some(k) if !k.is_empty() => partition_for_key(k, self.inner.partitions),
            _ => (self.inner.round_robin.fetch_add(1, Ordering::Relaxed) % self.inner.partitions as u64) as u32,
        }
    }

    /// Sends one record; returns its partition and offset once acknowledged.
    pub async fn send(&self, key: Option<&[u8]>, value: &[u8]) -> Result<RecordMetadata, E> {
        let partition = self.partition_for(key);
        self.send_to(partition, key, value).await
    }

    /// Sends one record to a chosen partition.
    pub async fn send_to(&self, partition: u32, key: Option<&[u8]>, value: &[u8]) -> Result<RecordMetadata, E> {
        let rx = self.enqueue(partition, key, value)?;
        rx.await.map_err(|_| E::Indeterminate("the producer stopped before an answer".into()))?
    }

    /// Queues one record and returns where its outcome will arrive
    /// (for callers that keep many records in flight).
    pub fn enqueue(
        &self,
        partition: u32,
        key: Option<&[u8]>,
        value: &[u8],
    ) -> Result<oneshot::Receiver<Result<RecordMetadata, E>>, E> {
        let inner = &self.inner;
        let Some(q) = inner.queues.get(partition as usize) else {
            return Err(E::InvalidArgument(format!(
                "topic {:?} has no partition {partition}: it has {}",
                inner.topic, inner.partitions
            )));
        };
        let (tx, rx) = oneshot::channel();
        let record = (Bytes::copy_from_slice(key.unwrap_or_default()), Bytes::copy_from_slice(value));
        let start = {
            let mut q = q.lock().expect("producer queue lock");
            q.queue.push_back((record, tx));
            !std::mem::replace(&mut q.sending, true)
        };
        if start {
            let me = self.inner.clone();
            tokio::spawn(async move { me.drain(partition).await });
        }
        Ok(rx)
    }
}

impl ProducerInner {
    /// Sends queued batches of `partition` until its queue is empty.
    async fn drain(self: Arc<Self>, partition: u32) {
        loop {
            let (batch, waiters, base_sequence) = {
                let mut q = self.queues[partition as usize].lock().expect("producer queue lock");
                if q.queue.is_empty() {
                    q.sending = false;
                    return;
                }
                let mut batch = Vec::new();
                let mut waiters = Vec::new();
                let mut bytes = 0usize;
                while let Some(((k, v), _)) = q.queue.front() {
                    let len = k.len() + v.len();
                    if !batch.is_empty()
                        && (batch.len() >= self.opts.max_batch_records || bytes + len > self.opts.max_batch_bytes)
                    {
                        break;
                    }
                    bytes += len;
                    let (rec, w) = q.queue.pop_front().expect("front exists");
                    batch.push(rec);
                    waiters.push(w);
                }
                let base = q.next_sequence;
                q.next_sequence += batch.len() as u64;
                (batch, waiters, base)
            };
            let result = self.send_batch(partition, base_sequence, &batch).await;
            for (i, w) in waiters.into_iter().enumerate() {
                let r = match &result {
                    Ok(base) => Ok(RecordMetadata { partition, offset: base.map(|b| b + i as u64) }),
                    Err(e) => Err(e.clone()),
                };
                let _ = w.send(r);
            }
        }
    }

    /// Sends one batch until acknowledged, refused, or out of time.
    /// A definite refusal of a retry says nothing about an earlier attempt
    /// whose outcome was unknown: then the batch's fate is unknown too.
    fn refused(&self, error: E, maybe_written: Option<E>) -> E {
        match maybe_written {
            None => error,
            Some(earlier) => E::Indeterminate(format!(
                "a retry was refused ({error}) after an attempt whose outcome is unknown ({earlier}); \
                 the records may or may not be in the log"
            )),
        }
    }

    async fn send_batch(
        &self,
        partition: u32,
        mut base_sequence: u64,
        batch: &[(Bytes, Bytes)],
    ) -> Result<Option<u64>, E> {
        let deadline = Instant::now() + self.opts.delivery_timeout;
        let mut maybe_written: Option<E> = None;
        let mut last: Option<E> = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(match (maybe_written, last) {
                    (Some(e), _) => E::Indeterminate(format!(
                        "not acknowledged within {} ms; the records may or may not be in the log ({e})",
                        self.opts.delivery_timeout.as_millis()
                    )),
                    (None, Some(e)) => e,
                    (None, None) => E::Unavailable("no attempt finished in time".into()),
                });
            }
            let t = left.min(self.opts.request_timeout);
            match self
                .client
                .produce_classified(&self.topic, partition, self.opts.acks, self.producer_id, base_sequence, batch, t)
                .await
            {
                Ok(r) => return Ok(r.base_offset),
                Err(Failure::OutOfOrder { expected, error }) => {
                    // Nothing of this batch was appended, and the leader
                    // continues from `expected` (records before it were
                    // lost, e.g. acks=1 across a leader change): renumber.
                    tracing::debug!(partition, base_sequence, expected, "producer: renumbering a batch");
                    if expected == base_sequence {
                        return Err(self.refused(error, maybe_written));
                    }
                    base_sequence = expected;
                    let mut q = self.queues[partition as usize].lock().expect("producer queue lock");
                    q.next_sequence = expected + batch.len() as u64;
                }
                Err(Failure::Fatal(e)) => return Err(self.refused(e, maybe_written)),
                Err(Failure::Retry(e)) | Err(Failure::NotLeader(e)) => {
                    last = Some(e);
                    tokio::time::sleep(Duration::from_millis(RETRY_PAUSE_MS).min(left)).await;
                }
                Err(Failure::Unknown(e)) => {
                    // The same sequence numbers make a retry safe.
                    last = Some(e.clone());
                    maybe_written = Some(e);
                    tokio::time::sleep(Duration::from_millis(RETRY_PAUSE_MS).min(left)).await;
                }
            }
        }
    }
}
