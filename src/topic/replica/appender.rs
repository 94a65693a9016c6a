//! The leader's appender task (group commit): it takes every queued
//! produce request, up to [`MAX_APPEND_BATCH_BYTES`], and writes them as
//! one batch with one fsync, assigning offsets against the log end under
//! the partition's write lock and checking idempotence against the
//! producer state, then feeds the new log end to the [`LeaderCore`](crate::topic::isr::LeaderCore).

use std::collections::HashMap;
use std::sync::Arc;

use prost::Message;
use tokio::sync::{mpsc, oneshot};

use super::{evictions, Appended, Partition, Role, MAX_APPEND_BATCH_BYTES};
use crate::clock::wall_clock_ms;
use crate::proto::peer::StoredRecord;
use crate::proto::ProducerRecord;
use crate::store::StoreError;
use crate::topic::log;
use crate::topic::producer_state::{Check, ProducerEntry};
use crate::topic::TopicError;

/// A queued produce request.
pub(super) struct Append {
    pub(super) epoch: u64,
    pub(super) producer_id: u64,
    pub(super) base_sequence: u64,
    pub(super) records: Vec<ProducerRecord>,
    pub(super) reply: oneshot::Sender<Result<Appended, TopicError>>,
}

impl Partition {
    pub(super) async fn run_appender(self: Arc<Self>, mut rx: mpsc::Receiver<Append>) {
        loop {
            let first = tokio::select! {
                _ = self.cancel.cancelled() => break,
                a = rx.recv() => match a { Some(a) => a, None => break },
            };
            let mut bytes: usize = first.records.iter().map(|r| r.key.len() + r.value.len()).sum();
            let mut batch = vec![first];
            while bytes < MAX_APPEND_BATCH_BYTES {
                match rx.try_recv() {
                    Ok(a) => {
                        bytes += a.records.iter().map(|r| r.key.len() + r.value.len()).sum::<usize>();
                        batch.push(a);
                    }
                    Err(_) => break,
                }
            }
            if let Err(e) = self.append_batch(batch).await {
                tracing::error!(partition = %self.name(), error = %e, "append failed");
            }
        }
    }

    /// Appends the batch with one fsync; answers every request.
    async fn append_batch(&self, batch: Vec<Append>) -> Result<(), StoreError> {
        let _w = self.write_lock.lock().await;
        let now_wall = wall_clock_ms();
        let mut ops = Vec::new();
        let mut replies: Vec<(oneshot::Sender<Result<Appended, TopicError>>, Appended)> = Vec::new();
        let mut touched: HashMap<u64, ProducerEntry> = HashMap::new();
        let (epoch, next, position, ts) = {
            let st = self.lock();
            let epoch = match &st.role {
                Role::Leader(core) => core.leader_epoch(),
                _ => {
                    for a in batch {
                        let _ = a.reply.send(Err(self.not_leader(&st)));
                    }
                    return Ok(());
                }
            };
            let mut next = st.leo;
            let mut position = st.end_position;
            let ts = st.last_timestamp_ms.max(now_wall);
            for a in batch {
                if a.epoch != epoch || a.records.is_empty() {
                    let _ = a.reply.send(Err(self.not_leader(&st)));
                    continue;
                }
                let count = a.records.len() as u64;
                let mut entry = if a.producer_id != 0 {
                    let e = touched
                        .get(&a.producer_id)
                        .or_else(|| st.producers.get(&a.producer_id))
                        .cloned()
                        .unwrap_or_default();
                    match e.check(a.base_sequence, count) {
                        Check::Append => Some(e),
                        Check::Duplicate(at) => {
                            // Answered after the write: the original may be in this batch.
                            replies.push((a.reply, Appended { base_offset: at, count, duplicate: true }));
                            continue;
                        }
                        Check::OutOfOrder { expected } => {
                            let _ = a.reply.send(Err(TopicError::OutOfOrderSequence {
                                message: format!(
                                    "producer {:x} sent sequence {} to {} but {expected} is expected next; nothing was written",
                                    a.producer_id,
                                    a.base_sequence,
                                    self.name()
                                ),
                                expected,
                            }));
                            continue;
                        }
                    }
                } else {
                    None
                };
                let base = next;
                for (i, r) in a.records.into_iter().enumerate() {
                    let sequence = if a.producer_id != 0 { a.base_sequence + i as u64 } else { 0 };
                    let len = (r.key.len() + r.value.len()) as u64;
                    let rec = StoredRecord {
                        leader_epoch: epoch,
                        timestamp_ms: ts,
                        position,
                        producer_id: a.producer_id,
                        sequence,
                        key: r.key,
                        value: r.value,
                    };
                    ops.push(log::put_record(self.pid, next, rec.encode_to_vec()));
                    if let Some(e) = &mut entry {
                        e.record(sequence, next, ts);
                    }
                    position += len;
                    next += 1;
                }
                if let Some(e) = entry {
                    touched.insert(a.producer_id, e);
                }
                replies.push((a.reply, Appended { base_offset: Some(base), count, duplicate: false }));
            }
            for (id, e) in &touched {
                ops.push(log::put_producer(self.pid, *id, e));
            }
            ops.extend(evictions(&st, &touched).into_iter().map(|id| log::delete_producer(self.pid, id)));
            (epoch, next, position, ts)
        };
        if ops.is_empty() {
            for (r, a) in replies {
                let _ = r.send(Ok(a));
            }
            return Ok(());
        }
        if let Err(e) = self.ctx.store.write(ops, true).await {
            for (r, _) in replies {
                let _ = r.send(Err(TopicError::Store(StoreError::Io(format!("append failed: {e}")))));
            }
            return Err(e);
        }
        let proposals = {
            let mut st = self.lock();
            st.leo = next;
            st.end_position = position;
            st.last_timestamp_ms = ts;
            let evicted = evictions(&st, &touched);
            for id in evicted {
                st.producers.remove(&id);
            }
            st.producers.extend(touched);
            self.leo_tx.send_replace(next);
            let fx = match &mut st.role {
                Role::Leader(core) if core.leader_epoch() == epoch => core.appended(next),
                _ => Vec::new(),
            };
            self.on_effects(&mut st, fx)
        };
        debug_assert!(proposals.is_empty(), "appends only move the high watermark");
        for (r, a) in replies {
            let _ = r.send(Ok(a));
        }
        Ok(())
    }
}
