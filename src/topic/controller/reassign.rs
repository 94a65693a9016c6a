//! The controller's part in a reassignment (Kafka's KIP-455), decided
//! purely from the partition's metadata, so a new controller after a Raft
//! leader change picks up where the old one stopped:
//!
//! 1. adding replicas catch up on their own (the partition leader takes
//!    them into the ISR); until every target replica is in the ISR,
//!    nothing;
//! 2. if the leader is leaving, leadership moves first to the first target
//!    replica (preferred order) that is in the ISR and alive — a clean
//!    leader change, as an AlterPartition that keeps the ISR;
//! 3. then [`CompleteReassignment`] drops the removing replicas.
//!
//! Each step is a compare-and-set on the epochs it read; a step taken on a
//! stale view fails and is decided again next round.

use std::collections::BTreeSet;

use crate::clock::NodeId;
use crate::proto::rsm::{topic_op, AlterPartition, CompleteReassignment, PartitionMeta, TopicMeta};
use crate::rsm::state_machine::topic_meta::reassign::{in_progress, target_replicas};

/// The next step of `p`'s reassignment, if one can be taken now.
///
/// `unsafe_skip_catch_up` is the negative control (`kv serve
/// --unsafe-reassign-without-catch-up`, tests only): complete at once,
/// as a naive "rewrite the replica list" would, without steps 1 and 2.
pub fn decide(
    t: &TopicMeta,
    p: &PartitionMeta,
    alive: &BTreeSet<NodeId>,
    controller: NodeId,
    unsafe_skip_catch_up: bool,
) -> Option<topic_op::Op> {
    if !in_progress(p) || p.leader == 0 || !alive.contains(&p.leader) {
        // Nothing to do, or a failover comes first (`controller::decide`).
        return None;
    }
    let complete = |unsafe_skip_catch_up| {
        topic_op::Op::CompleteReassignment(CompleteReassignment {
            topic_id: t.id,
            partition: p.id,
            expected_partition_epoch: p.partition_epoch,
            expected_leader_epoch: p.leader_epoch,
            requested_by: controller,
            unsafe_skip_catch_up,
        })
    };
    if unsafe_skip_catch_up {
        return Some(complete(true));
    }
    let target = target_replicas(p);
    if !target.iter().all(|r| p.isr.contains(r)) {
        return None;
    }
    if target.contains(&p.leader) {
        return Some(complete(false));
    }
    let leader = target.iter().copied().find(|r| alive.contains(r))?;
    Some(topic_op::Op::Alter(AlterPartition {
        topic_id: t.id,
        partition: p.id,
        expected_partition_epoch: p.partition_epoch,
        expected_leader_epoch: p.leader_epoch,
        leader,
        isr: p.isr.clone(),
        requested_by: controller,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(replicas: &[NodeId], removing: &[NodeId], adding: &[NodeId], leader: NodeId, isr: &[NodeId]) -> TopicMeta {
        TopicMeta {
            name: "t".into(),
            id: 7,
            config: None,
            partitions: vec![PartitionMeta {
                id: 0,
                replicas: replicas.to_vec(),
                leader,
                isr: isr.to_vec(),
                leader_epoch: 4,
                partition_epoch: 9,
                adding_replicas: adding.to_vec(),
                removing_replicas: removing.to_vec(),
            }],
            created_stamp: 0,
        }
    }

    fn alive(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    #[test]
    fn nothing_happens_until_every_target_is_in_the_isr() {
        // [1, 2] → [2, 3]: 3 is catching up.
        let t = topic(&[2, 3, 1], &[1], &[3], 1, &[1, 2]);
        assert_eq!(decide(&t, &t.partitions[0], &alive(&[1, 2, 3]), 1, false), None);
        // No reassignment: nothing either.
        let t = topic(&[1, 2], &[], &[], 1, &[1, 2]);
        assert_eq!(decide(&t, &t.partitions[0], &alive(&[1, 2, 3]), 1, false), None);
    }

    #[test]
    fn a_leaving_leader_hands_over_to_an_in_sync_live_target_first() {
        let t = topic(&[2, 3, 1], &[1], &[3], 1, &[1, 2, 3]);
        let Some(topic_op::Op::Alter(a)) = decide(&t, &t.partitions[0], &alive(&[1, 2, 3]), 1, false) else {
            panic!("expected a leader move")
        };
        assert_eq!((a.leader, a.isr.clone()), (2, vec![1, 2, 3]), "preferred target, ISR kept");
        assert_eq!((a.expected_partition_epoch, a.expected_leader_epoch), (9, 4));
        // The first target is down: the next live one.
        let Some(topic_op::Op::Alter(a)) = decide(&t, &t.partitions[0], &alive(&[1, 3]), 1, false) else {
            panic!("expected a leader move")
        };
        assert_eq!(a.leader, 3);
        // A dead leader is the failover's business, not the reassignment's.
        assert_eq!(decide(&t, &t.partitions[0], &alive(&[2, 3]), 2, false), None);
    }

    #[test]
    fn with_a_target_leader_and_every_target_in_sync_it_completes() {
        let t = topic(&[2, 3, 1], &[1], &[3], 2, &[1, 2, 3]);
        let Some(topic_op::Op::CompleteReassignment(c)) = decide(&t, &t.partitions[0], &alive(&[2, 3]), 2, false)
        else {
            panic!("expected the completion")
        };
        assert_eq!((c.topic_id, c.partition, c.expected_partition_epoch, c.expected_leader_epoch), (7, 0, 9, 4));
        assert!(!c.unsafe_skip_catch_up);
    }

    #[test]
    fn the_negative_control_completes_before_the_targets_catch_up() {
        let t = topic(&[3, 1, 2], &[1, 2], &[3], 1, &[1, 2]);
        assert_eq!(decide(&t, &t.partitions[0], &alive(&[1, 2, 3]), 1, false), None);
        let Some(topic_op::Op::CompleteReassignment(c)) = decide(&t, &t.partitions[0], &alive(&[1, 2, 3]), 1, true)
        else {
            panic!("expected the completion")
        };
        assert!(c.unsafe_skip_catch_up);
    }
}
