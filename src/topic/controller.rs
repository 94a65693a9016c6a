//! The controller: the node that is the Raft leader elects partition
//! leaders when a partition's leader is down (Kafka's controller on KRaft).
//!
//! The nodes are the cluster's current **members** (the Raft voters and
//! learners as this node's `node::peers` follows them). Liveness among
//! them is decided from Raft traffic: the Raft leader hears from every
//! live node at least every heartbeat, so a member not heard from for
//! `node_timeout_ms` is considered down. A freshly elected Raft leader has
//! not heard from anyone yet as leader, so for its first `node_timeout_ms`
//! it considers every member alive (no elections from ignorance). A node
//! that is **not a member** (removed with `kv cluster remove`) is down at
//! once, grace period or not: it will never return under its id.
//!
//! Decisions ([`decide`]) are pure; they become AlterPartition proposals,
//! compare-and-set on the partition's epochs, so a decision based on a
//! stale view simply fails and is retaken on the next round:
//!
//! * leader alive and every ISR member a member → nothing;
//! * leader alive, some ISR member removed from the cluster → the ISR
//!   becomes ISR ∩ members, same leader (Kafka's controller does this for
//!   an unregistered broker). The leader refuses a non-member's fetches
//!   (`node::topic_peer_service`) from the moment it applied the removal,
//!   so no record reaches the high watermark on the removed node's copy
//!   after that: until this change commits the high watermark waits, after
//!   it the remaining ISR holds every committed record. This is the rule:
//!   **a removed node never counts for the high watermark, for
//!   `min.insync.replicas` nor as an election candidate after its removal**;
//! * else (leader down or removed) the first replica (preferred order) in
//!   ISR ∩ alive leads, and the ISR becomes ISR ∩ alive (removing a dead
//!   member is always safe: the new leader holds every committed record);
//! * else, if the topic allows unclean election, the first alive replica
//!   leads alone (records only the lost ISR had are gone: the CAP knob);
//! * else the partition goes offline (leader 0, ISR kept, leader epoch
//!   bumped so the old leader is fenced) until an ISR member returns (if
//!   the ISR held only removed nodes, none will: only an unclean election
//!   brings such a partition back).
//!
//! The replica lists keep a removed node (as Kafka's do) until `kv topic
//! reassign` moves the partition off it; it is never in the ISR again, so
//! describe shows the partition under-replicated meanwhile.
//!
//! A partition that needs no election may be under reassignment:
//! [`reassign`] decides its next step (move leadership to a target, then
//! complete) from the metadata alone.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::log::PartitionId;
use super::{Ctx, Topics, META_PROPOSAL_TIMEOUT_MS};
use crate::clock::NodeId;
use crate::proto::rsm::{topic_op, AlterPartition, PartitionMeta, TopicErrorCode, TopicMeta, TopicOp};
use crate::rsm::Caller;

pub mod reassign;

/// How often the controller looks at every partition.
pub const CONTROLLER_INTERVAL_MS: u64 = 200;

/// The nodes as the controller sees them now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nodes {
    /// The cluster's current members (Raft voters and learners).
    pub members: BTreeSet<NodeId>,
    /// The members considered up ([`alive_nodes`]): a subset of `members`.
    pub alive: BTreeSet<NodeId>,
}

impl Nodes {
    pub fn new(members: BTreeSet<NodeId>, alive: BTreeSet<NodeId>) -> Nodes {
        assert!(alive.is_subset(&members), "alive nodes {alive:?} outside the members {members:?}");
        Nodes { members, alive }
    }
}

/// The election (or the removal of non-members from the ISR) one
/// partition needs, if any.
pub fn decide(t: &TopicMeta, p: &PartitionMeta, nodes: &Nodes, controller: NodeId) -> Option<AlterPartition> {
    let alive = &nodes.alive;
    let alter = |leader: NodeId, isr: Vec<NodeId>| AlterPartition {
        topic_id: t.id,
        partition: p.id,
        expected_partition_epoch: p.partition_epoch,
        expected_leader_epoch: p.leader_epoch,
        leader,
        isr,
        requested_by: controller,
    };
    if p.leader != 0 && alive.contains(&p.leader) {
        let member_isr: Vec<NodeId> = p.isr.iter().copied().filter(|r| nodes.members.contains(r)).collect();
        if member_isr.len() == p.isr.len() {
            return None;
        }
        assert!(member_isr.contains(&p.leader), "leader {} outside its ISR {:?}", p.leader, p.isr);
        return Some(alter(p.leader, member_isr));
    }
    let live_isr: Vec<NodeId> = p.isr.iter().copied().filter(|r| alive.contains(r)).collect();
    if let Some(&leader) = p.replicas.iter().find(|r| live_isr.contains(r)) {
        return Some(alter(leader, live_isr));
    }
    let unclean = t.config.as_ref().is_some_and(|c| c.unclean_leader_election);
    if unclean {
        if let Some(&leader) = p.replicas.iter().find(|r| alive.contains(r)) {
            return Some(alter(leader, vec![leader]));
        }
    }
    if p.leader != 0 {
        return Some(alter(0, p.isr.clone()));
    }
    None
}

/// Which of the current `members` count as alive for the controller `me`
/// now (a node that is not a member never does).
pub fn alive_nodes(
    me: NodeId,
    members: &BTreeSet<NodeId>,
    last_contact_ms: &std::collections::BTreeMap<u32, u64>,
    leader_for_ms: u64,
    node_timeout_ms: u64,
) -> BTreeSet<NodeId> {
    members
        .iter()
        .copied()
        .filter(|&id| {
            id == me
                || leader_for_ms < node_timeout_ms
                || last_contact_ms.get(&id).is_some_and(|&age| age < node_timeout_ms)
        })
        .collect()
}

pub async fn run(ctx: Arc<Ctx>, topics: Arc<Topics>) {
    let mut tick = tokio::time::interval(Duration::from_millis(CONTROLLER_INTERVAL_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // (term, since) of our current Raft leadership.
    let mut leading: Option<(u64, Instant)> = None;
    // Elections proposed and not answered yet, by partition.
    let in_flight: Arc<std::sync::Mutex<HashMap<PartitionId, Instant>>> = Default::default();
    let mut down_logged: (BTreeSet<NodeId>, BTreeSet<NodeId>) = Default::default();
    loop {
        tokio::select! {
            _ = ctx.cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        let view = ctx.rsm.view();
        if view.role != crate::rsm::driver::RaftRole::Leader {
            leading = None;
            continue;
        }
        let since = match leading {
            Some((term, since)) if term == view.term => since,
            _ => {
                tracing::info!(term = view.term, "acting as topic controller");
                leading = Some((view.term, Instant::now()));
                Instant::now()
            }
        };
        // The members now: a removal applied here is seen on this round.
        let members: BTreeSet<NodeId> = ctx.peers.member_ids().into_iter().collect();
        let alive = alive_nodes(
            ctx.node_id,
            &members,
            &view.last_contact_ms,
            since.elapsed().as_millis() as u64,
            ctx.settings.node_timeout_ms,
        );
        let down: BTreeSet<NodeId> = members.iter().copied().filter(|id| !alive.contains(id)).collect();
        if (&down, &members) != (&down_logged.0, &down_logged.1) {
            tracing::info!(?down, ?members, "controller: members or nodes considered down changed");
            down_logged = (down, members.clone());
        }
        let nodes = Nodes::new(members, alive);
        let cache = topics.cache();
        for t in cache.topics.values() {
            for p in &t.partitions {
                let unsafe_skip = ctx.settings.unsafe_reassign_without_catch_up;
                let Some((op, why)) = next_step(t, p, &nodes, ctx.node_id, unsafe_skip) else { continue };
                let pid = PartitionId { topic_id: t.id, partition: p.id };
                {
                    let mut f = in_flight.lock().expect("in-flight lock");
                    if f.get(&pid).is_some_and(|at| at.elapsed() < Duration::from_millis(META_PROPOSAL_TIMEOUT_MS)) {
                        continue;
                    }
                    f.insert(pid, Instant::now());
                }
                log_step(t, p, &op, why);
                let ctx2 = ctx.clone();
                let in_flight = in_flight.clone();
                ctx.tracker.spawn(async move {
                    let op = TopicOp { op: Some(op) };
                    let r =
                        ctx2.rsm.topic(Caller::default(), op, Duration::from_millis(META_PROPOSAL_TIMEOUT_MS)).await;
                    match r {
                        Ok(r) if r.code == TopicErrorCode::TopicOk as i32 => {}
                        Ok(r) => tracing::info!(partition = %pid, why = %r.message, "controller: change refused"),
                        Err(e) => tracing::warn!(partition = %pid, error = %e, "controller: change not proposed"),
                    }
                    in_flight.lock().expect("in-flight lock").remove(&pid);
                });
            }
        }
    }
}

/// What the controller proposes for `p` now, and why (for the log): an
/// election when its leader is down or removed, the removal of non-members
/// from its ISR, else the next step of its reassignment, if any.
/// `unsafe_skip_catch_up` is the negative control's switch (see
/// [`reassign::decide`]).
pub fn next_step(
    t: &TopicMeta,
    p: &PartitionMeta,
    nodes: &Nodes,
    me: NodeId,
    unsafe_skip_catch_up: bool,
) -> Option<(topic_op::Op, &'static str)> {
    if let Some(alter) = decide(t, p, nodes, me) {
        let why = if alter.leader == p.leader {
            "dropping removed nodes from the ISR"
        } else if p.leader != 0 && !nodes.members.contains(&p.leader) {
            "electing a partition leader: the leader was removed from the cluster"
        } else {
            "electing a partition leader"
        };
        return Some((topic_op::Op::Alter(alter), why));
    }
    match reassign::decide(t, p, &nodes.alive, me, unsafe_skip_catch_up)? {
        op @ topic_op::Op::Alter(_) => Some((op, "reassignment: moving leadership to a target replica")),
        op => Some((op, "reassignment: every target replica is in sync, completing")),
    }
}

fn log_step(t: &TopicMeta, p: &PartitionMeta, op: &topic_op::Op, why: &str) {
    let (leader, isr) = match op {
        topic_op::Op::Alter(a) => (a.leader, a.isr.clone()),
        _ => (p.leader, p.isr.clone()),
    };
    tracing::info!(
        topic = %t.name,
        partition = p.id,
        old_leader = p.leader,
        new_leader = leader,
        isr = ?isr,
        replicas = ?p.replicas,
        removing = ?p.removing_replicas,
        "controller: {why}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::rsm::TopicConfig;

    fn topic(unclean: bool, leader: NodeId, isr: &[NodeId]) -> TopicMeta {
        TopicMeta {
            name: "t".into(),
            id: 7,
            config: Some(TopicConfig { unclean_leader_election: unclean, ..Default::default() }),
            partitions: vec![PartitionMeta {
                id: 0,
                replicas: vec![1, 2, 3],
                leader,
                isr: isr.to_vec(),
                leader_epoch: 4,
                partition_epoch: 9,
                ..Default::default()
            }],
            created_stamp: 0,
        }
    }

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    /// Members 1, 2, 3 (plus any alive node), `ids` alive.
    fn alive(ids: &[NodeId]) -> Nodes {
        let mut members = set(&[1, 2, 3]);
        members.extend(ids);
        Nodes::new(members, set(ids))
    }

    /// Members `members`; the alive ones are those `alive_nodes` finds with
    /// every member heard from just now, in or after the grace period.
    fn members(me: NodeId, members: &[NodeId], leader_for_ms: u64) -> Nodes {
        let members = set(members);
        let contact = members.iter().map(|&id| (id, 0u64)).collect();
        let alive = alive_nodes(me, &members, &contact, leader_for_ms, 3_000);
        Nodes::new(members, alive)
    }

    #[test]
    fn a_live_leader_is_left_alone() {
        let t = topic(false, 1, &[1, 2, 3]);
        assert_eq!(decide(&t, &t.partitions[0], &alive(&[1, 3]), 3), None);
    }

    #[test]
    fn a_dead_leader_is_replaced_from_the_live_isr_as_a_cas() {
        let t = topic(false, 1, &[1, 2, 3]);
        let a = decide(&t, &t.partitions[0], &alive(&[2, 3]), 2).unwrap();
        assert_eq!((a.leader, a.isr.clone()), (2, vec![2, 3]));
        assert_eq!((a.expected_partition_epoch, a.expected_leader_epoch), (9, 4));
        // Preferred order, not ISR order: 3 is not picked over 2.
        let t = topic(false, 1, &[1, 3, 2]);
        assert_eq!(decide(&t, &t.partitions[0], &alive(&[2, 3]), 2).unwrap().leader, 2);
    }

    #[test]
    fn without_a_live_isr_member_the_partition_goes_offline_unless_unclean() {
        let t = topic(false, 1, &[1, 2]);
        let a = decide(&t, &t.partitions[0], &alive(&[3]), 3).unwrap();
        assert_eq!((a.leader, a.isr.clone()), (0, vec![1, 2]));
        let offline = topic(false, 0, &[1, 2]);
        assert_eq!(decide(&offline, &offline.partitions[0], &alive(&[3]), 3), None);
        let u = topic(true, 0, &[1, 2]);
        let a = decide(&u, &u.partitions[0], &alive(&[3]), 3).unwrap();
        assert_eq!((a.leader, a.isr.clone()), (3, vec![3]));
        // An ISR member returning brings the partition back, cleanly.
        assert_eq!(decide(&offline, &offline.partitions[0], &alive(&[2, 3]), 3).unwrap().leader, 2);
    }

    #[test]
    fn liveness_follows_raft_contact_after_a_grace_period() {
        let contact = [(2u32, 100u64), (3u32, 5_000u64)].into_iter().collect();
        let all = set(&[1, 2, 3, 4]);
        assert_eq!(alive_nodes(1, &all, &contact, 10_000, 3_000), set(&[1, 2]));
        assert_eq!(alive_nodes(1, &all, &contact, 1_000, 3_000), set(&[1, 2, 3, 4]));
    }

    #[test]
    fn a_removed_node_is_down_at_once_even_in_the_grace_period() {
        // Node 1 was just heard from, and the controller is in its grace
        // period (everyone alive); once 1 is no longer a member it is not
        // alive, whatever the timeout says.
        let contact = [(1u32, 0u64), (2, 0), (3, 0), (4, 0)].into_iter().collect();
        assert_eq!(alive_nodes(2, &set(&[2, 3, 4]), &contact, 0, 3_000_000), set(&[2, 3, 4]));
        assert_eq!(alive_nodes(2, &set(&[2, 3, 4]), &contact, 10_000_000, 3_000_000), set(&[2, 3, 4]));
    }

    #[test]
    fn a_partition_led_by_a_removed_node_fails_over_to_the_live_isr_at_once() {
        // Node 1 leads with ISR [1, 2, 3] and is removed: with a node
        // timeout far away (grace period, every member heard from), the
        // controller elects 2 and drops 1 from the ISR in one CAS.
        let t = topic(false, 1, &[1, 2, 3]);
        let nodes = members(2, &[2, 3, 4], 0);
        assert!(!nodes.alive.contains(&1));
        let a = decide(&t, &t.partitions[0], &nodes, 2).unwrap();
        assert_eq!((a.leader, a.isr.clone()), (2, vec![2, 3]));
        assert_eq!((a.expected_partition_epoch, a.expected_leader_epoch), (9, 4));
        let (op, why) = next_step(&t, &t.partitions[0], &nodes, 2, false).unwrap();
        assert_eq!(op, topic_op::Op::Alter(a));
        assert!(why.contains("removed"), "{why}");
        // Before the removal the same view leaves the partition alone.
        assert_eq!(decide(&t, &t.partitions[0], &members(2, &[1, 2, 3, 4], 0), 2), None);
    }

    #[test]
    fn a_removed_follower_leaves_the_isr_and_the_leader_stays() {
        // Kafka's controller on an unregistered broker: out of every ISR,
        // leadership untouched; the replica list keeps it (a reassignment
        // moves the partition off it).
        let t = topic(false, 2, &[1, 2, 3]);
        let nodes = members(2, &[2, 3, 4], 10_000);
        let a = decide(&t, &t.partitions[0], &nodes, 2).unwrap();
        assert_eq!((a.leader, a.isr.clone()), (2, vec![2, 3]));
        assert_eq!((a.expected_partition_epoch, a.expected_leader_epoch), (9, 4));
        let (_, why) = next_step(&t, &t.partitions[0], &nodes, 2, false).unwrap();
        assert_eq!(why, "dropping removed nodes from the ISR");
        // Once the ISR holds members only, nothing more.
        let after = topic(false, 2, &[2, 3]);
        assert_eq!(next_step(&after, &after.partitions[0], &nodes, 2, false), None);
    }

    #[test]
    fn a_removed_node_is_never_elected_even_when_it_is_the_only_isr_member() {
        // ISR [1] and 1 removed: the partition goes offline (ISR kept: it
        // names who has the committed records), it never elects 1 back, and
        // only an unclean election brings it back.
        let t = topic(false, 1, &[1]);
        let nodes = members(2, &[2, 3], 0);
        let a = decide(&t, &t.partitions[0], &nodes, 2).unwrap();
        assert_eq!((a.leader, a.isr.clone()), (0, vec![1]));
        let offline = topic(false, 0, &[1]);
        assert_eq!(decide(&offline, &offline.partitions[0], &nodes, 2), None);
        let unclean = topic(true, 0, &[1]);
        let a = decide(&unclean, &unclean.partitions[0], &nodes, 2).unwrap();
        assert_eq!((a.leader, a.isr.clone()), (2, vec![2]));
    }

    #[test]
    fn a_reassignment_off_a_removed_node_completes_without_it() {
        // Partition [1, 2, 3] led by 2 is being moved to [2, 3, 4]; node 1,
        // leaving anyway, is removed from the cluster: first out of the ISR,
        // then, once 4 caught up, the reassignment completes.
        let mut t = topic(false, 2, &[1, 2, 3]);
        let p = &mut t.partitions[0];
        p.replicas = vec![2, 3, 4, 1];
        p.adding_replicas = vec![4];
        p.removing_replicas = vec![1];
        let nodes = members(2, &[2, 3, 4], 10_000);
        let Some((topic_op::Op::Alter(a), _)) = next_step(&t, &t.partitions[0], &nodes, 2, false) else {
            panic!("expected the ISR change")
        };
        assert_eq!((a.leader, a.isr.clone()), (2, vec![2, 3]));
        t.partitions[0].isr = vec![2, 3, 4];
        t.partitions[0].partition_epoch += 1;
        let Some((topic_op::Op::CompleteReassignment(_), _)) = next_step(&t, &t.partitions[0], &nodes, 2, false) else {
            panic!("expected the completion")
        };
    }
}
