//! Where a follower's log must change under it: truncation where the
//! leader says the logs diverge (leader epochs, KIP-279; never the high
//! watermark), rebuilding the producer state of the records it removes,
//! and restarting an empty log at the leader's log start when the
//! follower fell behind the leader's retention.

use std::collections::HashMap;

use super::{Partition, State, PRODUCER_REBUILD_SCAN_RECORDS};
use crate::store::StoreError;
use crate::topic::epochs::{truncation_offset, EpochCache};
use crate::topic::log;

impl Partition {
    /// Truncates where the leader says this log diverges (KIP-279).
    pub(super) async fn follower_truncate(
        &self,
        epoch: u64,
        fetch_offset: u64,
        leader_epoch: u64,
        leader_end: u64,
    ) -> Result<(), StoreError> {
        let _w = self.write_lock.lock().await;
        let (to, plan) = {
            let st = self.lock();
            if !Self::follows_at(&st, epoch) || st.leo != fetch_offset {
                return Ok(());
            }
            let to = truncation_offset(&st.epochs, st.leo, leader_epoch, leader_end);
            if to < st.log_start {
                (to, None)
            } else {
                (to, Some(Self::truncation_plan(&st, to)))
            }
        };
        let Some((epochs, removed, affected, log_start, old_hw)) = plan else {
            return self.reset_locked(to).await;
        };
        let mut ops = vec![log::delete_from(self.pid, to)];
        ops.extend(removed.iter().map(|&e| log::delete_epoch(self.pid, e)));
        let db = self.ctx.store.db().clone();
        let pid = self.pid;
        let rebuilt = if affected.is_empty() {
            HashMap::new()
        } else {
            crate::rt::spawn_blocking(move || {
                log::rebuild_producers(&db, pid, log_start, to, &affected, PRODUCER_REBUILD_SCAN_RECORDS)
            })
            .await
            .map_err(|source| StoreError::Task { task: "rebuild", source })??
        };
        for (id, e) in &rebuilt {
            ops.push(match e {
                Some(e) => log::put_producer(self.pid, *id, e),
                None => log::delete_producer(self.pid, *id),
            });
        }
        let last = if to > log_start { log::read_record(self.ctx.store.db(), self.pid, to - 1)? } else { None };
        let new_hw = old_hw.min(to);
        if new_hw < old_hw {
            // Only an unclean election can take committed records away.
            tracing::warn!(partition = %self.name(), hw = old_hw, to, "truncating below the high watermark (unclean leader election)");
            ops.push(log::put_high_watermark(self.pid, new_hw));
        }
        self.ctx.store.write(ops, true).await?;
        let mut st = self.lock();
        let from = st.leo;
        st.leo = to;
        st.epochs = epochs;
        match last {
            Some(rec) => {
                st.end_position = rec.position + log::payload_len(&rec);
                st.last_timestamp_ms = rec.timestamp_ms;
            }
            None => st.end_position = st.start_position,
        }
        for (id, e) in rebuilt {
            match e {
                Some(e) => st.producers.insert(id, e),
                None => st.producers.remove(&id),
            };
        }
        if new_hw < st.high_watermark {
            st.high_watermark = new_hw;
            st.hw_checkpointed = new_hw;
            self.hw_tx.send_replace(new_hw);
        }
        self.leo_tx.send_replace(to);
        tracing::warn!(partition = %self.name(), from, to, leader_epoch, "truncated to where the leader's log diverges");
        Ok(())
    }

    /// (epochs after, epochs removed, producers to rebuild, log start, hw)
    /// for truncating the log to end at `to`.
    fn truncation_plan(st: &State, to: u64) -> (EpochCache, Vec<u64>, Vec<u64>, u64, u64) {
        let mut epochs = st.epochs.clone();
        let removed = epochs.truncate_from(to);
        let affected: Vec<u64> = st
            .producers
            .iter()
            .filter(|(_, e)| e.runs.back().is_some_and(|r| r.first_offset + r.count > to))
            .map(|(&id, _)| id)
            .collect();
        (epochs, removed, affected, st.log_start, st.high_watermark)
    }

    /// The leader's log starts above our log end: restart empty there.
    pub(super) async fn follower_reset(
        &self,
        epoch: u64,
        fetch_offset: u64,
        leader_log_start: u64,
    ) -> Result<(), StoreError> {
        let _w = self.write_lock.lock().await;
        {
            let st = self.lock();
            if !Self::follows_at(&st, epoch) || st.leo != fetch_offset || leader_log_start <= fetch_offset {
                return Ok(());
            }
        }
        self.reset_locked(leader_log_start).await
    }

    /// Empties the log and restarts it at `offset` (write lock held).
    async fn reset_locked(&self, offset: u64) -> Result<(), StoreError> {
        let mut ops = vec![log::delete_from(self.pid, 0)];
        {
            let st = self.lock();
            ops.extend(st.epochs.entries().iter().map(|&(e, _)| log::delete_epoch(self.pid, e)));
            ops.extend(st.producers.keys().map(|&id| log::delete_producer(self.pid, id)));
        }
        ops.push(log::put_log_start(self.pid, offset, 0));
        ops.push(log::put_high_watermark(self.pid, offset));
        self.ctx.store.write(ops, true).await?;
        let mut st = self.lock();
        tracing::warn!(partition = %self.name(), from = st.leo, to = offset, "log restarted at the leader's log start");
        st.log_start = offset;
        st.start_position = 0;
        st.leo = offset;
        st.end_position = 0;
        st.epochs.clear();
        st.producers.clear();
        st.high_watermark = offset;
        st.hw_checkpointed = offset;
        self.hw_tx.send_replace(offset);
        self.leo_tx.send_replace(offset);
        Ok(())
    }
}
