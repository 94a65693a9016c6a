//! Topic metadata state machine tests: creation and assignment, the
//! AlterPartition compare-and-set (Kafka KIP-497/KIP-631 semantics: stale
//! epochs lose, leaders come from the ISR unless unclean election is on),
//! deletion, consumer group generations, expiry by log time, and commit
//! fencing.

use std::collections::BTreeMap;

use super::*;
use crate::clock::{hlc_from_physical_ms, NodeId};
use crate::proto::rsm::{OffsetEntry, TopicConfig};
use crate::rsm::state_machine::MemRsm;

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

const T0: i64 = 1_800_000_000_000;

fn at(ms: i64) -> u64 {
    hlc_from_physical_ms(T0 + ms)
}

fn cfg(rf: u32, min: u32, unclean: bool) -> TopicConfig {
    TopicConfig {
        replication_factor: rf,
        min_insync_replicas: min,
        unclean_leader_election: unclean,
        ..Default::default()
    }
}

fn op(o: topic_op::Op) -> TopicOp {
    TopicOp { op: Some(o) }
}

fn create_op(name: &str, partitions: u32, c: TopicConfig) -> TopicOp {
    op(topic_op::Op::Create(CreateTopic { name: name.into(), partitions, config: Some(c), nodes: vec![1, 2, 3] }))
}

fn code(r: &TopicReply) -> TopicErrorCode {
    TopicErrorCode::try_from(r.code).unwrap()
}

fn version(kv: &MemKv) -> u64 {
    kv.0.get(KEY_VERSION).and_then(|b| decode_u64(b)).unwrap_or(0)
}

fn alter_op(t: &TopicMeta, p: u32, leader: NodeId, isr: &[NodeId]) -> TopicOp {
    let pm = &t.partitions[p as usize];
    op(topic_op::Op::Alter(AlterPartition {
        topic_id: t.id,
        partition: p,
        expected_partition_epoch: pm.partition_epoch,
        expected_leader_epoch: pm.leader_epoch,
        leader,
        isr: isr.to_vec(),
        requested_by: 1,
    }))
}

#[test]
fn create_assigns_replicas_and_refuses_duplicates_and_impossible_rf() {
    let mut kv = MemKv::default();
    let r = apply(&mut kv, at(0), &create_op("orders", 3, cfg(3, 2, false))).unwrap();
    assert_eq!(code(&r), TopicErrorCode::TopicOk);
    let t = r.topic.unwrap();
    assert_eq!(t.id, 1);
    assert_eq!(t.partitions.len(), 3);
    for p in &t.partitions {
        assert_eq!(p.replicas.len(), 3);
        assert_eq!(p.leader, p.replicas[0]);
        assert_eq!(p.isr, p.replicas);
        assert_eq!((p.leader_epoch, p.partition_epoch), (1, 1));
    }
    assert_eq!(version(&kv), 1);
    let again = apply(&mut kv, at(1), &create_op("orders", 1, cfg(1, 1, false))).unwrap();
    assert_eq!(code(&again), TopicErrorCode::TopicExists);
    let r = apply(&mut kv, at(2), &create_op("big", 1, cfg(4, 1, false))).unwrap();
    assert_eq!(code(&r), TopicErrorCode::Invalid);
    assert!(r.message.contains("the cluster has 3 nodes"), "{}", r.message);
    let r = apply(&mut kv, at(2), &create_op("bad name", 1, cfg(1, 1, false))).unwrap();
    assert_eq!(code(&r), TopicErrorCode::Invalid);
    let r = apply(&mut kv, at(2), &create_op("m", 1, cfg(2, 3, false))).unwrap();
    assert_eq!(code(&r), TopicErrorCode::Invalid);
    assert_eq!(version(&kv), 1, "refusals change nothing");
}

#[test]
fn alter_partition_is_a_compare_and_set_on_the_epochs() {
    let mut kv = MemKv::default();
    let t = apply(&mut kv, at(0), &create_op("t", 1, cfg(3, 2, false))).unwrap().topic.unwrap();
    let leader = t.partitions[0].leader;
    let others: Vec<NodeId> = t.partitions[0].replicas.iter().copied().filter(|&r| r != leader).collect();
    // The leader shrinks the ISR: same leader, leader epoch unchanged.
    let shrink = alter_op(&t, 0, leader, &[leader, others[0]]);
    let t2 = apply(&mut kv, at(1), &shrink).unwrap().topic.unwrap();
    assert_eq!((t2.partitions[0].leader_epoch, t2.partitions[0].partition_epoch), (1, 2));
    // The same request again lost the race: stale epoch, nothing changes.
    let r = apply(&mut kv, at(2), &shrink).unwrap();
    assert_eq!(code(&r), TopicErrorCode::StaleEpoch);
    assert_eq!(r.topic.unwrap(), t2, "a refusal carries the current state");
    // The controller moves leadership within the ISR: leader epoch bumps.
    let t3 = apply(&mut kv, at(3), &alter_op(&t2, 0, others[0], &[others[0]])).unwrap().topic.unwrap();
    assert_eq!(t3.partitions[0].leader, others[0]);
    assert_eq!((t3.partitions[0].leader_epoch, t3.partitions[0].partition_epoch), (2, 3));
    // A leader outside the ISR is refused (clean election only).
    let r = apply(&mut kv, at(4), &alter_op(&t3, 0, others[1], &[others[1]])).unwrap();
    assert_eq!(code(&r), TopicErrorCode::Invalid);
    assert!(r.message.contains("unclean"), "{}", r.message);
    // Offline: leader 0 keeps the ISR and fences the old leader's epoch.
    let t4 = apply(&mut kv, at(5), &alter_op(&t3, 0, 0, &[others[0]])).unwrap().topic.unwrap();
    assert_eq!((t4.partitions[0].leader, t4.partitions[0].leader_epoch), (0, 3));
    // Invalid shapes.
    for (l, isr) in [(others[0], vec![]), (others[0], vec![others[1]]), (9, vec![9])] {
        let r = apply(&mut kv, at(6), &alter_op(&t4, 0, l, &isr)).unwrap();
        assert_eq!(code(&r), TopicErrorCode::Invalid, "leader {l} isr {isr:?}");
    }
}

#[test]
fn unclean_election_may_pick_a_replica_outside_the_isr() {
    let mut kv = MemKv::default();
    let t = apply(&mut kv, at(0), &create_op("u", 1, cfg(3, 1, true))).unwrap().topic.unwrap();
    let p = &t.partitions[0];
    let t = apply(&mut kv, at(1), &alter_op(&t, 0, p.leader, &[p.leader])).unwrap().topic.unwrap();
    let outsider = p.replicas[1];
    let t = apply(&mut kv, at(2), &alter_op(&t, 0, outsider, &[outsider])).unwrap().topic.unwrap();
    assert_eq!(t.partitions[0].leader, outsider);
}

#[test]
fn delete_then_recreate_gets_a_new_id() {
    let mut kv = MemKv::default();
    let t = apply(&mut kv, at(0), &create_op("x", 2, cfg(1, 1, false))).unwrap().topic.unwrap();
    let d = apply(&mut kv, at(1), &op(topic_op::Op::Delete(DeleteTopic { name: "x".into() }))).unwrap();
    assert_eq!(code(&d), TopicErrorCode::TopicOk);
    assert_eq!(code(&apply(&mut kv, at(1), &alter_op(&t, 0, 1, &[1])).unwrap()), TopicErrorCode::UnknownTopic);
    let again = apply(&mut kv, at(2), &op(topic_op::Op::Delete(DeleteTopic { name: "x".into() }))).unwrap();
    assert_eq!(code(&again), TopicErrorCode::UnknownTopic);
    let t2 = apply(&mut kv, at(3), &create_op("x", 2, cfg(1, 1, false))).unwrap().topic.unwrap();
    assert!(t2.id > t.id);
    assert_eq!(kv.0.get(KEY_TOPIC_COUNT).and_then(|b| decode_u64(b)), Some(1));
    // The topic count is bounded.
    kv.0.insert(KEY_TOPIC_COUNT.to_vec(), (MAX_TOPICS as u64).to_be_bytes().to_vec());
    let r = apply(&mut kv, at(4), &create_op("y", 1, cfg(1, 1, false))).unwrap();
    assert_eq!(code(&r), TopicErrorCode::Invalid);
}

fn hb(group: &str, member: &str, topics: &[&str], session_ms: u64) -> TopicOp {
    op(topic_op::Op::Heartbeat(GroupHeartbeat {
        group: group.into(),
        member_id: member.into(),
        topics: topics.iter().map(|s| s.to_string()).collect(),
        session_timeout_ms: session_ms,
    }))
}

fn commit_op(group: &str, member: &str, generation: u64, topic: &str, partition: u32, offset: u64) -> TopicOp {
    op(topic_op::Op::Commit(CommitOffsets {
        group: group.into(),
        member_id: member.into(),
        generation,
        offsets: vec![OffsetEntry { topic: topic.into(), partition, offset }],
    }))
}

#[test]
fn group_members_share_partitions_and_commits_are_fenced_by_generation() {
    let mut kv = MemKv::default();
    let t = apply(&mut kv, at(0), &create_op("t", 3, cfg(1, 1, false))).unwrap().topic.unwrap();
    let a = apply(&mut kv, at(10), &hb("g", "a", &["t"], 5_000)).unwrap().group.unwrap();
    assert_eq!(a.generation, 1);
    assert_eq!(a.assignment[0].partitions, vec![0, 1, 2]);
    let b = apply(&mut kv, at(20), &hb("g", "b", &["t"], 5_000)).unwrap().group.unwrap();
    assert_eq!(b.generation, 2);
    assert_eq!(b.assignment[0].partitions, vec![1]);
    // a's commit in generation 1 is stale now.
    let r = apply(&mut kv, at(30), &commit_op("g", "a", 1, "t", 0, 5)).unwrap();
    assert_eq!(code(&r), TopicErrorCode::StaleGeneration);
    let a = apply(&mut kv, at(40), &hb("g", "a", &["t"], 5_000)).unwrap().group.unwrap();
    assert_eq!((a.generation, a.assignment[0].partitions.clone()), (2, vec![0, 2]));
    assert_eq!(code(&apply(&mut kv, at(50), &commit_op("g", "a", 2, "t", 0, 5)).unwrap()), TopicErrorCode::TopicOk);
    // Not a's partition.
    assert_eq!(
        code(&apply(&mut kv, at(50), &commit_op("g", "a", 2, "t", 1, 5)).unwrap()),
        TopicErrorCode::StaleGeneration
    );
    assert_eq!(kv.0.get(&offset_key("g", t.id, 0)).and_then(|b| decode_u64(b)), Some(5));
    // b stops heartbeating; past its session (log time), a gets everything.
    let a = apply(&mut kv, at(6_000), &hb("g", "a", &["t"], 5_000)).unwrap().group.unwrap();
    assert_eq!(a.members, vec!["a".to_string()]);
    assert_eq!(a.assignment[0].partitions, vec![0, 1, 2]);
    // Leaving empties the group; then an outside commit is accepted.
    apply(&mut kv, at(6_100), &op(topic_op::Op::Leave(GroupLeave { group: "g".into(), member_id: "a".into() })))
        .unwrap();
    assert_eq!(code(&apply(&mut kv, at(6_200), &commit_op("g", "", 0, "t", 2, 9)).unwrap()), TopicErrorCode::TopicOk);
    // Unknown topics are refused.
    assert_eq!(code(&apply(&mut kv, at(6_300), &hb("g", "a", &["nope"], 0)).unwrap()), TopicErrorCode::UnknownTopic);
}

impl MemRsm {
    /// Applies one Raft entry of `commands` (with `stamp`) like every replica does.
    fn apply(&mut self, index: u64, stamp: u64, commands: Vec<crate::proto::rsm::Command>) -> Vec<TopicReply> {
        use crate::proto::rsm::{reply, Batch};
        use crate::rsm::state_machine::Applier;
        use crate::store::{Cf, WriteOp};
        let batch = Batch { stamp, proposer: 1, commands };
        let mut a = Applier::new(&*self);
        a.apply(index, 1, &batch.encode_to_vec()).unwrap();
        let (ops, answers, _) = a.finish();
        for op in ops {
            match op {
                WriteOp::Put { cf: Cf::Rsm, key, value } => {
                    self.0.insert(key, value);
                }
                WriteOp::Delete { cf: Cf::Rsm, key } => {
                    self.0.remove(&key);
                }
                other => panic!("topic commands write only the rsm family, not {other:?}"),
            }
        }
        answers
            .into_iter()
            .map(|a| match a.reply.result {
                Some(reply::Result::Topic(r)) => r,
                other => panic!("not a topic reply: {other:?}"),
            })
            .collect()
    }
}

fn cmd(client_id: u64, request_id: u64, o: TopicOp) -> crate::proto::rsm::Command {
    crate::proto::rsm::Command {
        client_id,
        request_id,
        ack_below: 0,
        sessionless: false,
        op: Some(crate::proto::rsm::command::Op::Topic(o)),
    }
}

#[test]
fn through_the_raft_applier_topic_commands_are_deterministic_and_exactly_once() {
    // Two replicas applying the same entries end in the same state; a
    // retried create (same client and request id) is answered from the
    // session instead of failing with "exists" or taking a second id.
    let entries = [
        vec![cmd(7, 1, create_op("a", 2, cfg(3, 2, false))), cmd(8, 1, create_op("b", 1, cfg(1, 1, false)))],
        vec![cmd(7, 1, create_op("a", 2, cfg(3, 2, false)))],
        vec![cmd(9, 1, hb("g", "m", &["a", "b"], 0))],
    ];
    let (mut r1, mut r2) = (MemRsm::default(), MemRsm::default());
    let mut replies = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        replies.push(r1.apply(i as u64 + 1, at(i as i64), e.clone()));
        r2.apply(i as u64 + 1, at(i as i64), e.clone());
    }
    assert!(r1 == r2, "replicas diverged");
    assert_eq!(replies[0][0], replies[1][0], "the retry gets the first answer");
    assert_eq!(code(&replies[1][0]), TopicErrorCode::TopicOk);
    assert_eq!(r1.0.get(KEY_NEXT_ID).and_then(|b| decode_u64(b)), Some(3), "two topics, two ids");
    assert_eq!(replies[2][0].group.as_ref().unwrap().assignment.len(), 2);
    // Topic metadata lives under `t` (snapshots carry the whole family).
    assert!(r1.0.keys().filter(|k| !k.starts_with(b"s") && !k.starts_with(b"m")).all(|k| k[0] == PREFIX));
}
