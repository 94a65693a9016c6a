//! The leader's appender task (group commit): it takes the queued produce
//! requests, up to [`MAX_APPEND_BATCH_BYTES`], and writes them as one
//! batch with one fsync under the partition's write lock, so offsets are
//! assigned against a stable log end; then it feeds the new log end to the
//! [`LeaderCore`](crate::topic::isr::LeaderCore). What to write and answer
//! is decided by the pure `append_plan.rs`; this file does the I/O.

use std::sync::Arc;

use prost::Message;
use tokio::sync::{mpsc, oneshot};

use super::append_plan::{gather, payload_bytes, plan_append, AppendPlan, AppendRequest, LogEnd, Outcome};
use super::{Appended, Partition, Role, MAX_APPEND_BATCH_BYTES};
use crate::store::StoreError;
use crate::topic::log;
use crate::topic::TopicError;

type Reply = oneshot::Sender<Result<Appended, TopicError>>;

/// A queued produce request and where its answer goes.
pub(super) struct Append {
    pub(super) request: AppendRequest,
    pub(super) reply: Reply,
}

impl Partition {
    pub(super) async fn run_appender(self: Arc<Self>, mut rx: mpsc::Receiver<Append>) {
        loop {
            let first = tokio::select! {
                _ = self.cancel.cancelled() => break,
                a = rx.recv() => match a { Some(a) => a, None => break },
            };
            let bytes = |a: &Append| payload_bytes(&a.request.records);
            let batch = gather(first, MAX_APPEND_BATCH_BYTES, bytes, || rx.try_recv().ok());
            if let Err(e) = self.append_batch(batch).await {
                tracing::error!(partition = %self.name(), error = %e, "append failed");
            }
        }
    }

    /// Appends the batch with one fsync; answers every request.
    async fn append_batch(&self, batch: Vec<Append>) -> Result<(), Arc<StoreError>> {
        let _w = self.write_lock.lock().await;
        let now_wall = self.ctx.store.clock().wall_ms();
        let (requests, replies): (Vec<AppendRequest>, Vec<Reply>) =
            batch.into_iter().map(|a| (a.request, a.reply)).unzip();
        let asked: Vec<(u64, u64)> = requests.iter().map(|r| (r.producer_id, r.base_sequence)).collect();
        let (epoch, plan, replies) = {
            let st = self.lock();
            let epoch = match &st.role {
                Role::Leader(core) => core.leader_epoch(),
                _ => {
                    for r in replies {
                        let _ = r.send(Err(self.not_leader(&st)));
                    }
                    return Ok(());
                }
            };
            let end = LogEnd { offset: st.leo, position: st.end_position, timestamp_ms: st.last_timestamp_ms };
            let plan = plan_append(epoch, end, now_wall, &st.producers, requests);
            assert_eq!(plan.outcomes.len(), replies.len(), "one outcome per request");
            // Refusals are answered now, the rest once the write is durable.
            let mut later: Vec<(Reply, Appended)> = Vec::new();
            for ((reply, outcome), (producer_id, base_sequence)) in replies.into_iter().zip(&plan.outcomes).zip(asked) {
                match *outcome {
                    Outcome::Ok(a) => later.push((reply, a)),
                    Outcome::NotLeader => {
                        let _ = reply.send(Err(self.not_leader(&st)));
                    }
                    Outcome::OutOfOrder { expected } => {
                        let _ = reply.send(Err(TopicError::OutOfOrderSequence {
                            partition: self.name(),
                            producer_id,
                            sequence: base_sequence,
                            expected,
                        }));
                    }
                }
            }
            (epoch, plan, later)
        };
        if plan.writes_nothing() {
            for (r, a) in replies {
                let _ = r.send(Ok(a));
            }
            return Ok(());
        }
        let AppendPlan { records, producers, evicted, end, .. } = plan;
        let mut ops = Vec::with_capacity(records.len() + producers.len() + evicted.len());
        for (offset, rec) in records {
            ops.push(log::put_record(self.pid, offset, rec.encode_to_vec()));
        }
        for (id, e) in &producers {
            ops.push(log::put_producer(self.pid, *id, e));
        }
        ops.extend(evicted.iter().map(|&id| log::delete_producer(self.pid, id)));
        if let Err(e) = self.ctx.store.write(ops, true).await {
            let e = Arc::new(e);
            for (r, _) in replies {
                let _ = r.send(Err(TopicError::AppendFailed { source: e.clone() }));
            }
            return Err(e);
        }
        let proposals = {
            let mut st = self.lock();
            st.leo = end.offset;
            st.end_position = end.position;
            st.last_timestamp_ms = end.timestamp_ms;
            // The write lock was held since planning: the producer state
            // is the one the evictions were chosen from.
            for id in evicted {
                st.producers.remove(&id);
            }
            st.producers.extend(producers);
            self.leo_tx.send_replace(end.offset);
            let fx = match &mut st.role {
                Role::Leader(core) if core.leader_epoch() == epoch => core.appended(end.offset),
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
