//! The produce request path on the leader: check the role (and, for
//! acks=all, the ISR) before writing, queue the request for the appender,
//! then answer it once it is owed an answer ([`ack_state`]): acks=1 when
//! appended, acks=all when the high watermark passes its records, both
//! only while this node still leads the epoch they were appended in.

use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::append_plan::AppendRequest;
use super::appender::Append;
use super::{Appended, Partition, Role, State};
use crate::proto::{Acks, ProducerRecord};
use crate::topic::{IndeterminateReason, PartitionName, TopicError, UnavailableReason};

impl Partition {
    /// Produces records (the caller routed to this node as the leader).
    pub async fn produce(
        &self,
        acks: Acks,
        producer_id: u64,
        base_sequence: u64,
        records: Vec<ProducerRecord>,
        timeout: Duration,
    ) -> Result<Appended, TopicError> {
        let deadline = Instant::now() + timeout;
        let count = records.len() as u64;
        let epoch = {
            let st = self.lock();
            match &st.role {
                Role::Leader(core) => {
                    if acks == Acks::All {
                        if let Err((have, need)) = core.check_acks_all(self.ctx.now_ms()) {
                            return Err(TopicError::NotEnoughReplicas {
                                partition: self.name(),
                                in_sync: have,
                                isr: core.isr(),
                                min_insync: need,
                            });
                        }
                    }
                    core.leader_epoch()
                }
                _ => return Err(self.not_leader(&st)),
            }
        };
        let (tx, rx) = oneshot::channel();
        let append = Append { request: AppendRequest { epoch, producer_id, base_sequence, records }, reply: tx };
        match tokio::time::timeout_at(deadline, self.appends.send(append)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(TopicError::Unavailable(UnavailableReason::StoppedBeforeAppend)),
            Err(_) => {
                return Err(TopicError::Unavailable(UnavailableReason::AppendQueueFull {
                    partition: self.name(),
                    waited_ms: timeout.as_millis() as u64,
                }))
            }
        }
        if acks == Acks::None {
            return Ok(Appended { base_offset: None, count, duplicate: false });
        }
        let appended = match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(r)) => r?,
            Ok(Err(_)) => return Err(TopicError::Indeterminate(IndeterminateReason::AppendAbandoned)),
            Err(_) => {
                return Err(TopicError::Indeterminate(IndeterminateReason::AppendNotFinished {
                    waited_ms: timeout.as_millis() as u64,
                }))
            }
        };
        let wait = {
            let mut st = self.lock();
            let end = match appended.base_offset {
                Some(b) => b + count,
                None => st.leo,
            };
            match ack_state(&st, &self.name(), acks, epoch, end)? {
                AckState::Ack => return Ok(appended),
                AckState::WaitFor(end) => {
                    let (tx, rx) = oneshot::channel();
                    st.acks_waiters.entry(end).or_default().push(tx);
                    rx
                }
            }
        };
        match tokio::time::timeout_at(deadline, wait).await {
            Ok(Ok(Ok(()))) => Ok(appended),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(TopicError::Indeterminate(IndeterminateReason::StoppedBeforeCommit)),
            Err(_) => Err(TopicError::Indeterminate(IndeterminateReason::NotCommittedWithin {
                partition: self.name(),
                waited_ms: timeout.as_millis() as u64,
            })),
        }
    }
}

/// What a produce request is owed once its records are appended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AckState {
    /// Acknowledge now.
    Ack,
    /// acks=all: wait until the high watermark reaches this offset.
    WaitFor(u64),
}

/// The answer owed to an acks=1 or acks=all request of partition `name`
/// whose records were appended in leader epoch `epoch` and end at `end`.
///
/// Only the leader of `epoch` may acknowledge them (Kafka answers
/// NOT_LEADER_OR_FOLLOWER otherwise). A node that stopped leading it may
/// have truncated them and fetched the new leader's records at the same
/// offsets, so its high watermark passing `end` says nothing about them;
/// they may or may not have reached the new leader, hence an indeterminate
/// answer, which the idempotent producer retries with the same sequence
/// numbers. While this node leads `epoch` its log still holds them: a
/// leader never truncates its own epoch.
pub(super) fn ack_state(
    st: &State,
    name: &PartitionName,
    acks: Acks,
    epoch: u64,
    end: u64,
) -> Result<AckState, TopicError> {
    let core = match &st.role {
        Role::Leader(core) if core.leader_epoch() == epoch => core,
        _ => {
            return Err(TopicError::Indeterminate(IndeterminateReason::NoLongerLeads {
                partition: name.clone(),
                leader_epoch: epoch,
                current_epoch: st.meta.leader_epoch,
            }))
        }
    };
    assert!(end <= st.leo, "records of {name} up to {end} acknowledged beyond the leader's log end {}", st.leo);
    if acks == Acks::Leader {
        return Ok(AckState::Ack);
    }
    if st.high_watermark < end {
        return Ok(AckState::WaitFor(end));
    }
    if !core.committed_isr_satisfies_min() {
        return Err(TopicError::NotEnoughReplicasAfterAppend {
            partition: name.clone(),
            isr: core.isr(),
            min_insync: st.config.min_insync_replicas,
        });
    }
    Ok(AckState::Ack)
}

pub(super) fn fail_waiters(st: &mut State, err: impl Fn() -> TopicError) {
    for (_, ws) in std::mem::take(&mut st.acks_waiters) {
        for w in ws {
            let _ = w.send(Err(err()));
        }
    }
}
