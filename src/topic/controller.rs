//! The controller: the node that is the Raft leader elects partition
//! leaders when a partition's leader is down (Kafka's controller on KRaft).
//!
//! Liveness is decided from Raft traffic: the Raft leader hears from every
//! live node at least every heartbeat, so a node not heard from for
//! `node_timeout_ms` is considered down. A freshly elected Raft leader has
//! not heard from anyone yet as leader, so for its first `node_timeout_ms`
//! it considers every node alive (no elections from ignorance).
//!
//! Decisions ([`decide`]) are pure; they become AlterPartition proposals,
//! compare-and-set on the partition's epochs, so a decision based on a
//! stale view simply fails and is retaken on the next round:
//!
//! * leader alive → nothing;
//! * else the first replica (preferred order) in ISR ∩ alive leads, and
//!   the ISR becomes ISR ∩ alive (removing a dead member is always safe:
//!   the new leader holds every committed record);
//! * else, if the topic allows unclean election, the first alive replica
//!   leads alone (records only the lost ISR had are gone: the CAP knob);
//! * else the partition goes offline (leader 0, ISR kept, leader epoch
//!   bumped so the old leader is fenced) until an ISR member returns.
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

/// The election for one partition, if it needs one.
pub fn decide(
    t: &TopicMeta,
    p: &PartitionMeta,
    alive: &BTreeSet<NodeId>,
    controller: NodeId,
) -> Option<AlterPartition> {
    if p.leader != 0 && alive.contains(&p.leader) {
        return None;
    }
    let alter = |leader: NodeId, isr: Vec<NodeId>| AlterPartition {
        topic_id: t.id,
        partition: p.id,
        expected_partition_epoch: p.partition_epoch,
        expected_leader_epoch: p.leader_epoch,
        leader,
        isr,
        requested_by: controller,
    };
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

/// Which nodes count as alive for the controller `me` now.
pub fn alive_nodes(
    me: NodeId,
    members: impl Iterator<Item = NodeId>,
    last_contact_ms: &std::collections::BTreeMap<u32, u64>,
    leader_for_ms: u64,
    node_timeout_ms: u64,
) -> BTreeSet<NodeId> {
    members
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
    let mut down_logged: BTreeSet<NodeId> = BTreeSet::new();
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
        let alive = alive_nodes(
            ctx.node_id,
            ctx.configured_clients.keys().copied(),
            &view.last_contact_ms,
            since.elapsed().as_millis() as u64,
            ctx.settings.node_timeout_ms,
        );
        let down: BTreeSet<NodeId> = ctx.configured_clients.keys().copied().filter(|id| !alive.contains(id)).collect();
        if down != down_logged {
            tracing::info!(?down, "controller: nodes considered down changed");
            down_logged = down;
        }
        let cache = topics.cache();
        for t in cache.topics.values() {
            for p in &t.partitions {
                let unsafe_skip = ctx.settings.unsafe_reassign_without_catch_up;
                let Some((op, why)) = next_step(t, p, &alive, ctx.node_id, unsafe_skip) else { continue };
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
/// election when its leader is down, else the next step of its
/// reassignment, if any. `unsafe_skip_catch_up` is the negative control's
/// switch (see [`reassign::decide`]).
pub fn next_step(
    t: &TopicMeta,
    p: &PartitionMeta,
    alive: &BTreeSet<NodeId>,
    me: NodeId,
    unsafe_skip_catch_up: bool,
) -> Option<(topic_op::Op, &'static str)> {
    if let Some(alter) = decide(t, p, alive, me) {
        return Some((topic_op::Op::Alter(alter), "electing a partition leader"));
    }
    match reassign::decide(t, p, alive, me, unsafe_skip_catch_up)? {
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

    fn alive(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
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
        let all = [1, 2, 3, 4];
        assert_eq!(alive_nodes(1, all.into_iter(), &contact, 10_000, 3_000), alive(&[1, 2]));
        assert_eq!(alive_nodes(1, all.into_iter(), &contact, 1_000, 3_000), alive(&[1, 2, 3, 4]));
    }
}
