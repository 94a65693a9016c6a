//! Role selection: which part this node plays for the partition, from the
//! metadata it applied. It leads in the current leader epoch only if the
//! metadata names it, follows the named leader otherwise, and acts only in
//! the epoch it read. A new leader epoch fails the pending acks=all
//! requests (their outcome is unknown) and wakes the fetcher; taking over
//! leadership records the epoch's start offset durably before the
//! [`LeaderCore`] starts.

use std::sync::Arc;

use super::isr_shell::isr_settings;
use super::produce::fail_waiters;
use super::{Partition, Role, State};
use crate::proto::rsm::{PartitionMeta, TopicConfig};
use crate::store::StoreError;
use crate::topic::isr::LeaderCore;
use crate::topic::log;
use crate::topic::{IndeterminateReason, TopicError};

impl Partition {
    /// Applies the partition's metadata as this node applied it. Stale
    /// (lower partition epoch) metadata is ignored.
    pub async fn update_meta(self: &Arc<Self>, meta: PartitionMeta, config: TopicConfig) -> Result<(), StoreError> {
        let become_leader = {
            let mut st = self.lock();
            if meta.partition_epoch <= st.meta.partition_epoch {
                // Already applied, unless taking over failed half-way (a
                // storage error): then try again.
                matches!(st.role, Role::BecomingLeader) && st.meta == meta
            } else {
                self.apply_new_meta(&mut st, meta.clone(), config)
            }
        };
        if become_leader {
            self.become_leader(meta.leader_epoch).await?;
        }
        Ok(())
    }

    /// Applies metadata with a newer partition epoch; returns whether this
    /// node must now take over leadership.
    fn apply_new_meta(self: &Arc<Self>, st: &mut State, meta: PartitionMeta, config: TopicConfig) -> bool {
        let me = self.ctx.node_id;
        let same_epoch = meta.leader_epoch == st.meta.leader_epoch;
        if same_epoch {
            let proposals = self.note_meta(st, meta, config);
            self.spawn_proposals(proposals);
            false
        } else {
            let old_epoch = st.meta.leader_epoch;
            st.meta = meta.clone();
            st.config = config;
            fail_waiters(st, || TopicError::Indeterminate(IndeterminateReason::LeadershipMoved));
            let become_leader = meta.leader == me;
            st.role = if become_leader {
                Role::BecomingLeader
            } else if meta.leader != 0 {
                Role::Follower { leader: meta.leader, epoch: meta.leader_epoch }
            } else {
                Role::Offline
            };
            self.role_tx.send_modify(|g| *g += 1);
            tracing::info!(
                partition = %self.name(),
                leader = meta.leader,
                epoch = meta.leader_epoch,
                old_epoch,
                isr = ?meta.isr,
                "partition leadership changed"
            );
            become_leader
        }
    }

    async fn become_leader(&self, epoch: u64) -> Result<(), StoreError> {
        let _w = self.write_lock.lock().await;
        let ops = {
            let mut st = self.lock();
            if !matches!(st.role, Role::BecomingLeader) || st.meta.leader_epoch != epoch {
                return Ok(());
            }
            let leo = st.leo;
            // Records of this epoch start at our log end (KIP-101).
            if st.epochs.assign(epoch, leo) {
                vec![log::put_epoch(self.pid, epoch, leo)]
            } else {
                Vec::new()
            }
        };
        if !ops.is_empty() {
            self.ctx.store.write(ops, true).await?;
        }
        let now = self.ctx.now_ms();
        let mut st = self.lock();
        if !matches!(st.role, Role::BecomingLeader) || st.meta.leader_epoch != epoch {
            return Ok(());
        }
        let settings = isr_settings(&st.config, &self.ctx);
        let core = LeaderCore::new(
            now,
            self.ctx.node_id,
            epoch,
            st.meta.partition_epoch,
            &st.meta.replicas,
            &st.meta.isr,
            st.leo,
            st.high_watermark,
            settings,
        );
        let hw = core.high_watermark();
        st.role = Role::Leader(Box::new(core));
        if hw > st.high_watermark {
            st.high_watermark = hw;
            self.hw_tx.send_replace(hw);
        }
        self.role_tx.send_modify(|g| *g += 1);
        tracing::info!(partition = %self.name(), epoch, leo = st.leo, hw = st.high_watermark, isr = ?st.meta.isr, "leading the partition");
        Ok(())
    }
}
