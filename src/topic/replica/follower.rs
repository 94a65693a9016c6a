//! The follower side: a fetcher task pulls from the leader while this
//! node follows, appends what it gets with one fsync per response (taking
//! the producer state, the leader epochs, the high watermark and the log
//! start from the leader's records and answer), and hands divergence and
//! falling behind the leader's log start to `truncation.rs`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::append_plan::evictions;
use super::{
    Partition, Role, State, FETCH_BACKOFF_MAX_MS, FETCH_BACKOFF_MIN_MS, FETCH_RPC_SLACK_MS, REPLICA_FETCH_MAX_BYTES,
    REPLICA_FETCH_WAIT_MS,
};
use crate::proto::peer::{ReplicaFetchError, ReplicaFetchRequest, ReplicaFetchResponse};
use crate::store::StoreError;
use crate::topic::log;
use crate::topic::producer_state::ProducerEntry;

impl Partition {
    /// The follower side: pull from the leader while following.
    pub(super) async fn run_fetcher(self: Arc<Self>) {
        let mut role_rx = self.role_tx.subscribe();
        let mut backoff_ms = FETCH_BACKOFF_MIN_MS;
        let mut prepared_epoch = 0;
        let me = self.ctx.node_id;
        loop {
            role_rx.borrow_and_update();
            let target = match self.lock().role {
                Role::Follower { leader, epoch } => Some((leader, epoch)),
                _ => None,
            };
            let Some((leader, epoch)) = target else {
                tokio::select! {
                    _ = self.cancel.cancelled() => break,
                    _ = role_rx.changed() => {}
                }
                continue;
            };
            if prepared_epoch != epoch {
                match self.prepare_follower(epoch).await {
                    Ok(()) => prepared_epoch = epoch,
                    Err(e) => tracing::error!(partition = %self.name(), error = %e, "cannot start following"),
                }
            }
            let req = {
                let st = self.lock();
                ReplicaFetchRequest {
                    from_node: me,
                    topic_id: self.pid.topic_id,
                    partition: self.pid.partition,
                    leader_epoch: epoch,
                    fetch_offset: st.leo,
                    last_fetched_epoch: st.epochs.latest_epoch(),
                    max_bytes: REPLICA_FETCH_MAX_BYTES,
                    max_wait_ms: REPLICA_FETCH_WAIT_MS,
                }
            };
            let fetch_offset = req.fetch_offset;
            let rpc_timeout = REPLICA_FETCH_WAIT_MS as u64 + FETCH_RPC_SLACK_MS;
            let resp = tokio::select! {
                _ = self.cancel.cancelled() => break,
                _ = role_rx.changed() => continue,
                r = self.ctx.peers.replica_fetch(leader, req, rpc_timeout) => r,
            };
            let progressed = match resp {
                Err(s) => {
                    tracing::debug!(partition = %self.name(), leader, error = %s.message(), "fetch from the leader failed");
                    false
                }
                Ok(r) => {
                    let outcome = match ReplicaFetchError::try_from(r.error) {
                        Ok(ReplicaFetchError::FetchOk) => {
                            self.follower_append(epoch, fetch_offset, r).await.map(|_| true)
                        }
                        Ok(ReplicaFetchError::Diverging) => self
                            .follower_truncate(epoch, fetch_offset, r.diverging_epoch, r.diverging_end_offset)
                            .await
                            .map(|_| true),
                        Ok(ReplicaFetchError::OffsetOutOfRange) => {
                            self.follower_reset(epoch, fetch_offset, r.log_start_offset).await.map(|_| true)
                        }
                        _ => {
                            tracing::debug!(partition = %self.name(), leader, why = %r.message, "fetch refused");
                            Ok(false)
                        }
                    };
                    outcome.unwrap_or_else(|e| {
                        tracing::error!(partition = %self.name(), error = %e, "follower write failed");
                        false
                    })
                }
            };
            if progressed {
                backoff_ms = FETCH_BACKOFF_MIN_MS;
            } else {
                tokio::select! {
                    _ = self.cancel.cancelled() => break,
                    _ = role_rx.changed() => {}
                    _ = tokio::time::sleep(Duration::from_millis(backoff_ms)) => {}
                }
                backoff_ms = (backoff_ms * 2).min(FETCH_BACKOFF_MAX_MS);
            }
        }
    }

    pub(super) fn follows_at(st: &State, epoch: u64) -> bool {
        matches!(st.role, Role::Follower { epoch: e, .. } if e == epoch)
    }

    /// Entering a follower epoch: drop epochs this node led without writing
    /// (they describe no record and would confuse the divergence check).
    async fn prepare_follower(&self, epoch: u64) -> Result<(), StoreError> {
        let _w = self.write_lock.lock().await;
        let (removed, epochs) = {
            let st = self.lock();
            if !Self::follows_at(&st, epoch) {
                return Ok(());
            }
            let mut epochs = st.epochs.clone();
            (epochs.truncate_from(st.leo), epochs)
        };
        if removed.is_empty() {
            return Ok(());
        }
        let ops = removed.iter().map(|&e| log::delete_epoch(self.pid, e)).collect();
        self.ctx.store.write(ops, true).await?;
        let mut st = self.lock();
        if Self::follows_at(&st, epoch) {
            st.epochs = epochs;
        }
        Ok(())
    }

    /// Appends a fetch response's records with one fsync.
    async fn follower_append(&self, epoch: u64, fetch_offset: u64, r: ReplicaFetchResponse) -> Result<(), StoreError> {
        let _w = self.write_lock.lock().await;
        let mut ops = Vec::with_capacity(r.records.len() + 4);
        let mut touched: HashMap<u64, ProducerEntry> = HashMap::new();
        let (epochs, new_leo, end_position, last_ts, new_hw, new_start) = {
            let st = self.lock();
            if !Self::follows_at(&st, epoch) || st.leo != fetch_offset {
                return Ok(());
            }
            let mut epochs = st.epochs.clone();
            let mut end_position = st.end_position;
            let mut last_ts = st.last_timestamp_ms;
            let mut positions = Vec::with_capacity(r.records.len());
            let mut offset = fetch_offset;
            for raw in &r.records {
                let rec = log::decode_record(raw)?;
                if rec.leader_epoch > epochs.latest_epoch() && epochs.assign(rec.leader_epoch, offset) {
                    ops.push(log::put_epoch(self.pid, rec.leader_epoch, offset));
                }
                if rec.producer_id != 0 {
                    touched
                        .entry(rec.producer_id)
                        .or_insert_with(|| st.producers.get(&rec.producer_id).cloned().unwrap_or_default())
                        .record(rec.sequence, offset, rec.timestamp_ms);
                }
                positions.push(rec.position);
                end_position = rec.position + log::payload_len(&rec);
                last_ts = rec.timestamp_ms;
                ops.push(log::put_record(self.pid, offset, raw.to_vec()));
                offset += 1;
            }
            let new_leo = offset;
            for (id, e) in &touched {
                ops.push(log::put_producer(self.pid, *id, e));
            }
            ops.extend(evictions(&st.producers, &touched).into_iter().map(|id| log::delete_producer(self.pid, id)));
            let new_hw = st.high_watermark.max(r.high_watermark.min(new_leo));
            if !ops.is_empty() && new_hw != st.hw_checkpointed {
                ops.push(log::put_high_watermark(self.pid, new_hw));
            }
            // The leader's retention moved its log start: follow it.
            let new_start = if r.log_start_offset > st.log_start {
                let s = r.log_start_offset.min(new_leo);
                let position = if s >= new_leo {
                    end_position
                } else if s >= fetch_offset {
                    positions[(s - fetch_offset) as usize]
                } else {
                    log::read_record(self.ctx.store.db(), self.pid, s)?.map_or(st.start_position, |rec| rec.position)
                };
                ops.push(log::delete_below(self.pid, s));
                ops.push(log::put_log_start(self.pid, s, position));
                for e in epochs.truncate_before(s) {
                    ops.push(log::delete_epoch(self.pid, e));
                }
                if let Some(&(e, start)) = epochs.entries().first() {
                    ops.push(log::put_epoch(self.pid, e, start));
                }
                Some((s, position))
            } else {
                None
            };
            (epochs, new_leo, end_position, last_ts, new_hw, new_start)
        };
        let wrote = !ops.is_empty();
        if wrote {
            self.ctx.store.write(ops, true).await?;
        }
        let mut st = self.lock();
        st.leo = new_leo;
        st.epochs = epochs;
        st.end_position = end_position;
        st.last_timestamp_ms = last_ts;
        for id in evictions(&st.producers, &touched) {
            st.producers.remove(&id);
        }
        st.producers.extend(touched);
        if new_hw > st.high_watermark {
            st.high_watermark = new_hw;
            self.hw_tx.send_replace(new_hw);
        }
        if wrote {
            st.hw_checkpointed = new_hw;
        }
        if let Some((s, position)) = new_start {
            st.log_start = s;
            st.start_position = position;
        }
        self.leo_tx.send_replace(new_leo);
        Ok(())
    }
}
