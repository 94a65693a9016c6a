//! The shell around the leader's sans-I/O [`LeaderCore`](crate::topic::isr::LeaderCore): feeds it the
//! metadata of the current leader epoch, applies its effects (a higher
//! high watermark answers the acks=all requests it covers) and proposes
//! the ISR changes it asks for to the controller.

use std::sync::Arc;
use std::time::Duration;

use super::{Partition, Role, State};
use crate::levels::linear::Caller;
use crate::proto::rsm::{topic_op, AlterPartition, PartitionMeta, TopicConfig, TopicErrorCode, TopicOp};
use crate::topic::isr::{Effect, IsrSettings};
use crate::topic::{Ctx, TopicError, META_PROPOSAL_TIMEOUT_MS};

pub(super) fn isr_settings(config: &TopicConfig, ctx: &Ctx) -> IsrSettings {
    IsrSettings {
        lag_time_max_ms: match config.replica_lag_time_max_ms {
            0 => ctx.settings.replica_lag_time_max_ms,
            ms => ms,
        },
        min_insync_replicas: config.min_insync_replicas.max(1) as usize,
    }
}

impl Partition {
    /// Metadata of the current leader epoch (an ISR change): feeds the core.
    pub(super) fn note_meta(&self, st: &mut State, meta: PartitionMeta, config: TopicConfig) -> Vec<AlterPartition> {
        let settings = isr_settings(&config, &self.ctx);
        let (pe, isr, replicas) = (meta.partition_epoch, meta.isr.clone(), meta.replicas.clone());
        st.meta = meta;
        st.config = config;
        let now_ms = self.ctx.now_ms();
        let fx = match &mut st.role {
            Role::Leader(core) => core.on_metadata(now_ms, pe, &replicas, &isr, settings),
            _ => Vec::new(),
        };
        if !fx.is_empty() || matches!(st.role, Role::Leader(_)) {
            tracing::info!(partition = %self.name(), isr = ?isr, replicas = ?replicas, partition_epoch = pe, "partition metadata changed");
        }
        self.on_effects(st, fx)
    }

    /// Applies core effects; returns the ISR changes to propose.
    pub(super) fn on_effects(&self, st: &mut State, fx: Vec<Effect>) -> Vec<AlterPartition> {
        let mut out = Vec::new();
        for e in fx {
            match e {
                Effect::HighWatermark(hw) => {
                    assert!(hw <= st.leo, "high watermark {hw} beyond log end {}", st.leo);
                    if hw <= st.high_watermark {
                        continue;
                    }
                    st.high_watermark = hw;
                    self.hw_tx.send_replace(hw);
                    let enough = matches!(&st.role, Role::Leader(c) if c.committed_isr_satisfies_min());
                    let isr = st.meta.isr.clone();
                    let min = st.config.min_insync_replicas;
                    let later = st.acks_waiters.split_off(&(hw + 1));
                    for (_, ws) in std::mem::replace(&mut st.acks_waiters, later) {
                        for w in ws {
                            let _ = w.send(if enough {
                                Ok(())
                            } else {
                                Err(TopicError::NotEnoughReplicasAfterAppend {
                                    partition: self.name(),
                                    isr: isr.clone(),
                                    min_insync: min,
                                })
                            });
                        }
                    }
                }
                Effect::ProposeIsr { partition_epoch, leader_epoch, isr } => out.push(AlterPartition {
                    topic_id: self.pid.topic_id,
                    partition: self.pid.partition,
                    expected_partition_epoch: partition_epoch,
                    expected_leader_epoch: leader_epoch,
                    leader: self.ctx.node_id,
                    isr,
                    requested_by: self.ctx.node_id,
                }),
            }
        }
        out
    }

    /// Proposes ISR changes to the controller (the linearizable store).
    pub(super) fn spawn_proposals(self: &Arc<Self>, proposals: Vec<AlterPartition>) {
        for a in proposals {
            let me = self.clone();
            self.ctx.tracker.spawn(async move {
                tracing::info!(partition = %me.name(), isr = ?a.isr, epoch = a.expected_partition_epoch, "proposing an ISR change");
                let op = TopicOp { op: Some(topic_op::Op::Alter(a)) };
                let timeout = Duration::from_millis(META_PROPOSAL_TIMEOUT_MS);
                match me.ctx.rsm.topic(Caller::default(), op, timeout).await {
                    Ok(r) if r.code == TopicErrorCode::TopicOk as i32 => {
                        // Fast path; the reconcile loop would get there too.
                        let t = r.topic.unwrap_or_default();
                        if let Some(pm) = t.partitions.get(me.pid.partition as usize) {
                            let proposals = {
                                let mut st = me.lock();
                                if pm.partition_epoch > st.meta.partition_epoch
                                    && pm.leader_epoch == st.meta.leader_epoch
                                {
                                    me.note_meta(&mut st, pm.clone(), t.config.unwrap_or_default())
                                } else {
                                    Vec::new()
                                }
                            };
                            me.spawn_proposals(proposals);
                        }
                    }
                    Ok(r) => {
                        tracing::info!(partition = %me.name(), why = %r.message, "ISR change refused");
                        me.rejected();
                    }
                    Err(e) => {
                        tracing::warn!(partition = %me.name(), error = %e, "ISR change not proposed");
                        me.rejected();
                    }
                }
            });
        }
    }

    fn rejected(&self) {
        if let Role::Leader(core) = &mut self.lock().role {
            core.on_rejected();
        }
    }
}
