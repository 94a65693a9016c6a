//! Reassignment rules (Kafka KIP-455): what a reassignment may ask for,
//! the replicas ∪ removing shape while it runs, and the completion rule
//! that keeps acks=all records: every target replica in the ISR and the
//! leader a target, as a compare-and-set on the epochs.

use std::collections::BTreeMap;

use super::super::{apply, load_topic, save_topic, topic_id_key, MetaKv};
use super::*;
use crate::proto::rsm::{topic_op, AlterPartition, TopicConfig, TopicMeta, TopicOp};

#[derive(Default)]
struct MemKv(BTreeMap<Vec<u8>, Vec<u8>>);

impl MetaKv for MemKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.0.get(key).cloned())
    }
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.0.insert(key, value);
    }
    fn delete(&mut self, key: Vec<u8>) {
        self.0.remove(&key);
    }
}

const NODES: &[u32] = &[1, 2, 3, 4];

/// Topic "t" (id 7) with one partition led by `leader`.
fn seed(replicas: &[u32], isr: &[u32], leader: u32, min_insync: u32) -> MemKv {
    let mut kv = MemKv::default();
    let t = TopicMeta {
        name: "t".into(),
        id: 7,
        config: Some(TopicConfig {
            replication_factor: replicas.len() as u32,
            min_insync_replicas: min_insync,
            ..Default::default()
        }),
        partitions: vec![PartitionMeta {
            id: 0,
            replicas: replicas.to_vec(),
            leader,
            isr: isr.to_vec(),
            leader_epoch: 3,
            partition_epoch: 10,
            ..Default::default()
        }],
        created_stamp: 0,
    };
    kv.put(topic_id_key(7), b"t".to_vec());
    save_topic(&mut kv, &t).unwrap();
    kv
}

fn part(kv: &MemKv) -> PartitionMeta {
    load_topic(kv, "t").unwrap().unwrap().partitions[0].clone()
}

fn run(kv: &mut MemKv, o: topic_op::Op) -> TopicReply {
    apply(kv, 1, &TopicOp { op: Some(o) }).unwrap()
}

fn reassign(kv: &mut MemKv, topic: &str, partition: u32, replicas: &[u32]) -> TopicReply {
    run(
        kv,
        topic_op::Op::Reassign(ReassignPartition {
            topic: topic.into(),
            partition,
            replicas: replicas.to_vec(),
            nodes: NODES.to_vec(),
        }),
    )
}

fn complete_op(kv: &mut MemKv) -> TopicReply {
    let p = part(kv);
    run(
        kv,
        topic_op::Op::CompleteReassignment(CompleteReassignment {
            topic_id: 7,
            partition: 0,
            expected_partition_epoch: p.partition_epoch,
            expected_leader_epoch: p.leader_epoch,
            requested_by: 1,
            unsafe_skip_catch_up: false,
        }),
    )
}

fn alter(kv: &mut MemKv, leader: u32, isr: &[u32]) -> TopicReply {
    let p = part(kv);
    run(
        kv,
        topic_op::Op::Alter(AlterPartition {
            topic_id: 7,
            partition: 0,
            expected_partition_epoch: p.partition_epoch,
            expected_leader_epoch: p.leader_epoch,
            leader,
            isr: isr.to_vec(),
            requested_by: 1,
        }),
    )
}

fn code(r: &TopicReply) -> TopicErrorCode {
    TopicErrorCode::try_from(r.code).unwrap()
}

#[test]
fn a_reassignment_must_name_distinct_known_nodes_enough_for_min_insync() {
    let mut kv = seed(&[1, 2], &[1, 2], 1, 2);
    let before = kv.0.clone();
    let refused = [
        (reassign(&mut kv, "nope", 0, &[2, 3]), TopicErrorCode::UnknownTopic, "does not exist"),
        (reassign(&mut kv, "t", 1, &[2, 3]), TopicErrorCode::Invalid, "has no partition 1"),
        (reassign(&mut kv, "t", 0, &[]), TopicErrorCode::Invalid, "empty"),
        (reassign(&mut kv, "t", 0, &[2, 2]), TopicErrorCode::Invalid, "names a node twice"),
        (reassign(&mut kv, "t", 0, &[2, 9]), TopicErrorCode::Invalid, "node 9 is not a member"),
        (reassign(&mut kv, "t", 0, &[3]), TopicErrorCode::Invalid, "cannot satisfy min.insync.replicas 2"),
    ];
    for (r, want, words) in refused {
        assert_eq!(code(&r), want, "{}", r.message);
        assert!(r.message.contains(words), "{:?} lacks {words:?}", r.message);
    }
    assert_eq!(kv.0, before, "refusals write nothing");
    // Asking for the current replicas is answered as done, writing nothing.
    assert_eq!(code(&reassign(&mut kv, "t", 0, &[1, 2])), TopicErrorCode::TopicOk);
    assert_eq!(kv.0, before);
}

#[test]
fn a_reassignment_adds_the_targets_first_and_refuses_a_second_one_meanwhile() {
    let mut kv = seed(&[1, 2], &[1, 2], 1, 1);
    let r = reassign(&mut kv, "t", 0, &[2, 3]);
    assert_eq!(code(&r), TopicErrorCode::TopicOk, "{}", r.message);
    let p = part(&kv);
    assert_eq!(p.replicas, vec![2, 3, 1], "targets in preferred order, then the removing replicas");
    assert_eq!((p.adding_replicas.clone(), p.removing_replicas.clone()), (vec![3], vec![1]));
    assert_eq!((p.leader, p.isr.clone(), p.leader_epoch, p.partition_epoch), (1, vec![1, 2], 3, 11));
    assert_eq!(target_replicas(&p), vec![2, 3]);
    let again = reassign(&mut kv, "t", 0, &[3, 4]);
    assert_eq!(code(&again), TopicErrorCode::ReassignmentInProgress);
    assert!(again.message.contains("adding [3], removing [1]"), "{}", again.message);
    // The leader may take the adding replica into the ISR (it is a replica now).
    assert_eq!(code(&alter(&mut kv, 1, &[1, 2, 3])), TopicErrorCode::TopicOk);
}

#[test]
fn completion_waits_for_every_target_in_the_isr_and_a_target_leader() {
    let mut kv = seed(&[1, 2], &[1, 2], 1, 1);
    reassign(&mut kv, "t", 0, &[2, 3]);
    // 3 has not caught up: dropping 1 now would leave acknowledged records
    // on fewer replicas than acks=all promised.
    let r = complete_op(&mut kv);
    assert_eq!(code(&r), TopicErrorCode::Invalid);
    assert!(r.message.contains("target replica 3 is not in the ISR"), "{}", r.message);
    assert_eq!(code(&alter(&mut kv, 1, &[1, 2, 3])), TopicErrorCode::TopicOk);
    // Every target is in sync, but the leader (1) is leaving.
    let r = complete_op(&mut kv);
    assert_eq!(code(&r), TopicErrorCode::Invalid);
    assert!(r.message.contains("move leadership first"), "{}", r.message);
    // The controller moves leadership to an in-sync target (leader epoch bumps).
    assert_eq!(code(&alter(&mut kv, 2, &[1, 2, 3])), TopicErrorCode::TopicOk);
    let before = part(&kv);
    assert_eq!((before.leader, before.leader_epoch), (2, 4));
    let r = complete_op(&mut kv);
    assert_eq!(code(&r), TopicErrorCode::TopicOk, "{}", r.message);
    let p = part(&kv);
    assert_eq!((p.replicas.clone(), p.isr.clone(), p.leader), (vec![2, 3], vec![2, 3], 2));
    assert!(p.adding_replicas.is_empty() && p.removing_replicas.is_empty());
    assert_eq!((p.leader_epoch, p.partition_epoch), (4, before.partition_epoch + 1), "the leader epoch stays");
    // Done: completing again is refused, a new reassignment is accepted.
    assert_eq!(code(&complete_op(&mut kv)), TopicErrorCode::Invalid);
    assert_eq!(code(&reassign(&mut kv, "t", 0, &[3, 4])), TopicErrorCode::TopicOk);
}

#[test]
fn completion_is_a_compare_and_set_on_the_epochs() {
    let mut kv = seed(&[1, 2, 3], &[1, 2, 3], 2, 2);
    reassign(&mut kv, "t", 0, &[2, 3]);
    let p = part(&kv);
    assert_eq!((p.adding_replicas.clone(), p.removing_replicas.clone()), (vec![], vec![1]));
    let stale = CompleteReassignment {
        topic_id: 7,
        partition: 0,
        expected_partition_epoch: p.partition_epoch,
        expected_leader_epoch: p.leader_epoch,
        requested_by: 1,
        unsafe_skip_catch_up: false,
    };
    // The leader shrinks the ISR first: the controller's read is stale.
    assert_eq!(code(&alter(&mut kv, 2, &[2, 3])), TopicErrorCode::TopicOk);
    let r = run(&mut kv, topic_op::Op::CompleteReassignment(stale));
    assert_eq!(code(&r), TopicErrorCode::StaleEpoch);
    assert_eq!(code(&complete_op(&mut kv)), TopicErrorCode::TopicOk);
    assert_eq!(part(&kv).replicas, vec![2, 3]);
}

#[test]
fn a_reassignment_in_progress_is_stored_state_that_a_restart_reads_back() {
    let mut kv = seed(&[1, 2], &[1, 2], 1, 1);
    reassign(&mut kv, "t", 0, &[3]);
    // A new controller (or a restarted node) knows only what is stored.
    let reloaded = MemKv(kv.0.clone());
    let p = part(&reloaded);
    assert!(in_progress(&p));
    assert_eq!((target_replicas(&p), p.removing_replicas.clone()), (vec![3], vec![1, 2]));
}

#[test]
fn the_negative_controls_completion_elects_a_target_that_never_caught_up() {
    // What `--unsafe-reassign-without-catch-up` asks for (tests only): the
    // leader becomes a replica outside the ISR, i.e. one that may lack
    // acknowledged records. The rule above refuses exactly this.
    let mut kv = seed(&[1, 2], &[1, 2], 1, 1);
    reassign(&mut kv, "t", 0, &[3]);
    let p = part(&kv);
    let c = CompleteReassignment {
        topic_id: 7,
        partition: 0,
        expected_partition_epoch: p.partition_epoch,
        expected_leader_epoch: p.leader_epoch,
        requested_by: 1,
        unsafe_skip_catch_up: false,
    };
    assert_eq!(code(&run(&mut kv, topic_op::Op::CompleteReassignment(c))), TopicErrorCode::Invalid);
    let unsafe_done =
        run(&mut kv, topic_op::Op::CompleteReassignment(CompleteReassignment { unsafe_skip_catch_up: true, ..c }));
    assert_eq!(code(&unsafe_done), TopicErrorCode::TopicOk);
    let q = part(&kv);
    assert_eq!((q.replicas, q.isr, q.leader, q.leader_epoch), (vec![3], vec![3], 3, p.leader_epoch + 1));
    assert!(!p.isr.contains(&3), "the new leader was never in sync");
}
