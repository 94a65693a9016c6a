//! Partition reassignment (Kafka's KIP-455), as two replicated commands:
//!
//! * [`start`] ([`ReassignPartition`], from a client): the partition's
//!   replicas become *target ∪ removing* (targets first, so failover
//!   prefers them), `adding_replicas` = target − old, `removing_replicas`
//!   = old − target. The ISR and the leader do not change: the adding
//!   replicas host the partition, fetch from the leader and enter the ISR
//!   by the leader's ordinary rejoin rule.
//! * [`complete`] ([`CompleteReassignment`], from the controller, a
//!   compare-and-set on the epochs): allowed only when **every target
//!   replica is in the ISR** and the leader is a target (the controller
//!   moves leadership to an in-sync target first, with an ordinary
//!   AlterPartition). Then the replicas become the target and the ISR
//!   loses the removing replicas.
//!
//! Why this loses no `acks=all` record: a record is acknowledged once it
//! is on every ISR member. The completion keeps only ISR members (every
//! target is one), so the ISR after it holds every acknowledged record,
//! and the leader (a target in the ISR) has them too. Dropping the
//! removing replicas before the targets are in the ISR could leave an
//! ISR whose members lack acknowledged records; the rule refuses that.
//!
//! `CompleteReassignment.unsafe_skip_catch_up` (set only by a node run
//! with `--unsafe-reassign-without-catch-up`, tests only) skips the rule:
//! the negative control `tests/topic_reassign.rs` shows losing records.
//!
//! Both are pure functions of the stored metadata, like the other topic
//! commands, so every replica of the state machine agrees, and a
//! reassignment in progress survives leader changes and restarts: its
//! whole state is in the partition's metadata.

use std::collections::BTreeSet;

use super::{load_topic, ok_topic, reply, save_topic, MetaKv};
use crate::proto::rsm::{CompleteReassignment, PartitionMeta, ReassignPartition, TopicErrorCode, TopicReply};
use crate::store::StoreError;

/// Whether a reassignment of `p` is in progress.
pub fn in_progress(p: &PartitionMeta) -> bool {
    !p.adding_replicas.is_empty() || !p.removing_replicas.is_empty()
}

/// The replicas `p` will have once its reassignment completes (its
/// replicas when none is in progress), in preferred order.
pub fn target_replicas(p: &PartitionMeta) -> Vec<u32> {
    p.replicas.iter().copied().filter(|r| !p.removing_replicas.contains(r)).collect()
}

pub(super) fn start(kv: &mut impl MetaKv, r: &ReassignPartition) -> Result<TopicReply, StoreError> {
    let Some(mut t) = load_topic(kv, &r.topic)? else {
        return Ok(reply(TopicErrorCode::UnknownTopic, format!("topic {:?} does not exist", r.topic)));
    };
    let min_insync = t.config.as_ref().map_or(1, |c| c.min_insync_replicas.max(1)) as usize;
    let partitions = t.partitions.len();
    let Some(p) = t.partitions.get_mut(r.partition as usize) else {
        return Ok(reply(
            TopicErrorCode::Invalid,
            format!("topic {:?} has no partition {} (it has {partitions})", r.topic, r.partition),
        ));
    };
    let target = &r.replicas;
    if target.is_empty() {
        return Ok(reply(TopicErrorCode::Invalid, "the new replica list is empty"));
    }
    let distinct: BTreeSet<u32> = target.iter().copied().collect();
    if distinct.len() != target.len() {
        return Ok(reply(TopicErrorCode::Invalid, format!("the replica list {target:?} names a node twice")));
    }
    if let Some(unknown) = target.iter().find(|n| !r.nodes.contains(n)) {
        let mut nodes = r.nodes.clone();
        nodes.sort_unstable();
        return Ok(reply(
            TopicErrorCode::Invalid,
            format!("node {unknown} is not a member of the cluster (its nodes are {nodes:?})"),
        ));
    }
    if target.len() < min_insync {
        return Ok(reply(
            TopicErrorCode::Invalid,
            format!(
                "{} replicas {target:?} cannot satisfy min.insync.replicas {min_insync} of topic {:?}",
                target.len(),
                r.topic
            ),
        ));
    }
    if in_progress(p) {
        return Ok(reply(
            TopicErrorCode::ReassignmentInProgress,
            format!(
                "partition {}/{} is being reassigned already (adding {:?}, removing {:?}); wait until it completes",
                r.topic, r.partition, p.adding_replicas, p.removing_replicas
            ),
        ));
    }
    if *target == p.replicas {
        // Nothing to move: answered as done, nothing written.
        return Ok(ok_topic(t));
    }
    let adding: Vec<u32> = target.iter().copied().filter(|n| !p.replicas.contains(n)).collect();
    let removing: Vec<u32> = p.replicas.iter().copied().filter(|n| !target.contains(n)).collect();
    p.replicas = target.iter().copied().chain(removing.iter().copied()).collect();
    p.adding_replicas = adding;
    p.removing_replicas = removing;
    p.partition_epoch += 1;
    assert!(p.isr.iter().all(|r| p.replicas.contains(r)), "ISR {:?} outside replicas {:?}", p.isr, p.replicas);
    save_topic(kv, &t)?;
    Ok(ok_topic(t))
}

pub(super) fn complete(kv: &mut impl MetaKv, c: &CompleteReassignment) -> Result<TopicReply, StoreError> {
    let Some(name) = kv.get(&super::topic_id_key(c.topic_id))? else {
        return Ok(reply(TopicErrorCode::UnknownTopic, format!("topic id {} does not exist", c.topic_id)));
    };
    let name = String::from_utf8_lossy(&name).into_owned();
    let Some(mut t) = load_topic(kv, &name)? else {
        return Ok(reply(TopicErrorCode::UnknownTopic, format!("topic {name:?} does not exist")));
    };
    let Some(p) = t.partitions.get_mut(c.partition as usize) else {
        return Ok(reply(TopicErrorCode::Invalid, format!("topic {name:?} has no partition {}", c.partition)));
    };
    if p.partition_epoch != c.expected_partition_epoch || p.leader_epoch != c.expected_leader_epoch {
        return Ok(reply(
            TopicErrorCode::StaleEpoch,
            format!(
                "partition {name}/{} is at partition epoch {} and leader epoch {}, not {} and {}",
                c.partition, p.partition_epoch, p.leader_epoch, c.expected_partition_epoch, c.expected_leader_epoch
            ),
        ));
    }
    if !in_progress(p) {
        return Ok(reply(TopicErrorCode::Invalid, format!("partition {name}/{} is not being reassigned", c.partition)));
    }
    let target = target_replicas(p);
    if c.unsafe_skip_catch_up {
        // The negative control: what a naive "rewrite the replica list"
        // does. A leaving leader is replaced by the first target, caught
        // up or not, and the ISR keeps only targets (or that new leader).
        tracing::warn!(topic = %name, partition = c.partition, "UNSAFE: completing a reassignment without catch-up");
        if !target.contains(&p.leader) {
            p.leader = target[0];
            p.leader_epoch += 1;
        }
        p.isr.retain(|r| target.contains(r));
        if !p.isr.contains(&p.leader) {
            p.isr = vec![p.leader];
        }
        p.replicas = target;
        p.adding_replicas.clear();
        p.removing_replicas.clear();
        p.partition_epoch += 1;
        save_topic(kv, &t)?;
        return Ok(ok_topic(t));
    }
    if let Some(behind) = target.iter().find(|r| !p.isr.contains(r)) {
        return Ok(reply(
            TopicErrorCode::Invalid,
            format!(
                "partition {name}/{}: target replica {behind} is not in the ISR {:?} yet; the reassignment completes \
                 once every target replica is",
                c.partition, p.isr
            ),
        ));
    }
    if p.leader == 0 || !target.contains(&p.leader) {
        return Ok(reply(
            TopicErrorCode::Invalid,
            format!(
                "partition {name}/{}: leader {} is not among the target replicas {target:?}; move leadership first",
                c.partition, p.leader
            ),
        ));
    }
    p.isr.retain(|r| target.contains(r));
    p.replicas = target;
    p.adding_replicas.clear();
    p.removing_replicas.clear();
    p.partition_epoch += 1;
    assert!(p.isr.contains(&p.leader), "leader {} outside the ISR {:?}", p.leader, p.isr);
    save_topic(kv, &t)?;
    Ok(ok_topic(t))
}

#[cfg(test)]
mod tests;
