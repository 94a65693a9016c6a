//! Changing the Raft group's members while it serves: the rules a change
//! must pass before the leader proposes it (pure), and the request types.
//!
//! Why it exists: raft-rs applies whatever configuration change is
//! committed, and silently turns a second change proposed while one is
//! pending into an empty entry. capkv checks first, on the leader, and
//! refuses with a reason the operator can act on:
//!
//! * one change at a time ([`MembershipError::InProgress`]);
//! * a new member joins as a **learner** (it receives the log but does not
//!   vote), and is promoted to voter only once it has caught up to within
//!   a tenth of the commit index, and at most [`MAX_PROMOTE_LAG_ENTRIES`],
//!   of it (etcd's learner-ready rule, bounded) — a voter that is far
//!   behind would stall commits the moment it counts;
//! * a removal must leave at least one voter, and the voters left must
//!   include a majority that this leader heard from recently, or the group
//!   could stop committing ([`MembershipError::WouldLoseQuorum`]);
//! * the leader does not remove itself: it hands leadership to the most
//!   caught-up other voter first, and the caller retries on the new leader;
//! * an id that belonged to a removed member is never taken again
//!   (`state_machine::members`).
//!
//! Each change is a single-step `ConfChangeV2` (one node), so Raft moves
//! between configurations whose majorities always overlap (Raft thesis
//! §4.1); no joint configuration is needed for Raft itself.

use std::collections::{BTreeMap, BTreeSet};

use raft::eraftpb::{ConfChangeSingle, ConfChangeType, ConfChangeV2, ConfState};
use tokio::sync::oneshot;

use crate::clock::NodeId;
use crate::proto::rsm::{MemberChange, MemberRecord};

/// A learner is promoted only when its log is at most this far behind the
/// leader's commit index (and at most a tenth of it: see [`promote_lag`]).
pub const MAX_PROMOTE_LAG_ENTRIES: u64 = 256;

/// How far behind the commit index `commit` a learner may be when promoted.
pub fn promote_lag(commit: u64) -> u64 {
    MAX_PROMOTE_LAG_ENTRIES.min(commit / 10)
}

/// One membership change, as asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberOp {
    /// Add a new node, as a learner, at these addresses.
    AddLearner(MemberRecord),
    /// Make learner `id` a voter.
    Promote(NodeId),
    /// Remove voter or learner `id`.
    Remove(NodeId),
}

impl MemberOp {
    pub fn id(&self) -> NodeId {
        match self {
            MemberOp::AddLearner(r) => r.id,
            MemberOp::Promote(id) | MemberOp::Remove(id) => *id,
        }
    }
}

/// A change handed to the driver, answered once applied (or refused).
pub struct ConfProposal {
    pub op: MemberOp,
    pub reply: oneshot::Sender<Result<ConfState, MembershipError>>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    #[error(
        "node {node} is not the Raft leader (leader: {leader}, 0 = none known); membership changes go to the leader"
    )]
    NotLeader { node: NodeId, leader: u64 },
    #[error("another membership change is in progress; retry when it is applied")]
    InProgress,
    #[error("node {id} is already a {role}")]
    AlreadyMember { id: NodeId, role: &'static str },
    #[error("node id {id} cannot be used: {reason}")]
    IdNotUsable { id: NodeId, reason: &'static str },
    #[error("node {id} is not a member")]
    NotAMember { id: NodeId },
    #[error("node {id} is not a learner (only learners are promoted)")]
    NotALearner { id: NodeId },
    #[error("learner {id} has not caught up: it holds the log up to {matched}, the commit index is {commit} (at most {max_lag} behind to promote); retry")]
    NotCaughtUp { id: NodeId, matched: u64, commit: u64, max_lag: u64 },
    #[error("node {id} is the last voter; a cluster cannot remove its last voter")]
    LastVoter { id: NodeId },
    #[error("removing node {id} would leave {reachable} reachable voters of {left}, fewer than the {needed} a majority needs: the cluster would stop; bring nodes back first")]
    WouldLoseQuorum { id: NodeId, reachable: usize, left: usize, needed: usize },
    #[error("node {id} is the leader: leadership is moving to node {to}; retry the removal on the new leader")]
    LeaderMoving { id: NodeId, to: u64 },
    #[error("a cluster has at most {max} members")]
    TooMany { max: usize },
    #[error("the membership change was dropped by Raft ({reason})")]
    Dropped { reason: String },
    #[error("leadership changed before the membership change was applied (term {term}); check `kv cluster members` and retry")]
    LeadershipChanged { term: u64 },
    #[error("the membership change was not applied within {waited_ms} ms; check `kv cluster members`")]
    Timeout { waited_ms: u64 },
    #[error("the Raft driver stopped")]
    Stopped,
}

/// What the leader knows when it checks a change.
#[derive(Clone, Debug, Default)]
pub struct LeaderFacts {
    pub me: NodeId,
    pub is_leader: bool,
    pub leader: u64,
    /// A configuration change is proposed and not yet applied.
    pub pending: bool,
    pub conf: ConfState,
    pub commit: u64,
    /// Per member: the highest index known replicated to it.
    pub matched: BTreeMap<u64, u64>,
    /// Voters this leader heard from within an election timeout (itself included).
    pub recently_heard: BTreeSet<u64>,
    /// The state machine's member records (removed ids included).
    pub records: BTreeMap<NodeId, MemberRecord>,
    pub max_members: usize,
}

/// What to do with a change that passed the checks.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Propose this change with this context.
    Propose(ConfChangeV2, MemberChange),
    /// Hand leadership to `to` first (the leader is being removed).
    TransferLeader { to: u64 },
}

fn single(kind: ConfChangeType, id: NodeId) -> ConfChangeV2 {
    let mut s = ConfChangeSingle::default();
    s.set_change_type(kind);
    s.node_id = id as u64;
    let mut cc = ConfChangeV2::default();
    cc.set_changes(vec![s].into());
    cc
}

/// The checks of the module docs. `change_id` is the index the change will
/// take in the log if proposed now.
pub fn decide(op: &MemberOp, f: &LeaderFacts, change_id: u64) -> Result<Decision, MembershipError> {
    if !f.is_leader {
        return Err(MembershipError::NotLeader { node: f.me, leader: f.leader });
    }
    if f.pending {
        return Err(MembershipError::InProgress);
    }
    let id = op.id();
    let voter = f.conf.voters.contains(&(id as u64));
    let learner = f.conf.learners.contains(&(id as u64));
    let record = |id: NodeId| f.records.get(&id).cloned().unwrap_or(MemberRecord { id, ..Default::default() });
    match op {
        MemberOp::AddLearner(rec) => {
            if voter || learner {
                return Err(MembershipError::AlreadyMember { id, role: if voter { "voter" } else { "learner" } });
            }
            super::state_machine::members::check_new_id(id, &f.records)
                .map_err(|reason| MembershipError::IdNotUsable { id, reason })?;
            if f.conf.voters.len() + f.conf.learners.len() >= f.max_members {
                return Err(MembershipError::TooMany { max: f.max_members });
            }
            let ctx = MemberChange { change_id, member: Some(MemberRecord { removed: false, ..rec.clone() }) };
            Ok(Decision::Propose(single(ConfChangeType::AddLearnerNode, id), ctx))
        }
        MemberOp::Promote(_) => {
            if voter {
                return Err(MembershipError::AlreadyMember { id, role: "voter" });
            }
            if !learner {
                return Err(MembershipError::NotALearner { id });
            }
            let matched = f.matched.get(&(id as u64)).copied().unwrap_or(0);
            let max_lag = promote_lag(f.commit);
            if matched + max_lag < f.commit {
                return Err(MembershipError::NotCaughtUp { id, matched, commit: f.commit, max_lag });
            }
            let ctx = MemberChange { change_id, member: Some(record(id)) };
            Ok(Decision::Propose(single(ConfChangeType::AddNode, id), ctx))
        }
        MemberOp::Remove(_) => {
            if !voter && !learner {
                return Err(MembershipError::NotAMember { id });
            }
            if voter {
                let left: Vec<u64> = f.conf.voters.iter().copied().filter(|&v| v != id as u64).collect();
                if left.is_empty() {
                    return Err(MembershipError::LastVoter { id });
                }
                let needed = left.len() / 2 + 1;
                let reachable = left.iter().filter(|v| f.recently_heard.contains(v)).count();
                if reachable < needed {
                    return Err(MembershipError::WouldLoseQuorum { id, reachable, left: left.len(), needed });
                }
                if id == f.me {
                    // The most caught-up other voter that answers.
                    let to = left
                        .iter()
                        .filter(|v| f.recently_heard.contains(v))
                        .max_by_key(|v| (f.matched.get(v).copied().unwrap_or(0), std::cmp::Reverse(**v)))
                        .copied()
                        .expect("a reachable voter is left (checked above)");
                    return Ok(Decision::TransferLeader { to });
                }
            }
            let ctx = MemberChange { change_id, member: Some(record(id)) };
            Ok(Decision::Propose(single(ConfChangeType::RemoveNode, id), ctx))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(voters: &[u64], learners: &[u64]) -> LeaderFacts {
        LeaderFacts {
            me: 1,
            is_leader: true,
            leader: 1,
            pending: false,
            conf: ConfState { voters: voters.to_vec(), learners: learners.to_vec(), ..Default::default() },
            commit: 1000,
            matched: voters.iter().chain(learners).map(|&v| (v, 1000)).collect(),
            recently_heard: voters.iter().copied().collect(),
            records: BTreeMap::new(),
            max_members: 15,
        }
    }

    fn rec(id: NodeId) -> MemberRecord {
        MemberRecord {
            id,
            client_address: "127.0.0.1:7004".into(),
            peer_address: "127.0.0.1:8004".into(),
            removed: false,
        }
    }

    fn kind(d: &Decision) -> (ConfChangeType, u64) {
        match d {
            Decision::Propose(cc, _) => (cc.changes[0].get_change_type(), cc.changes[0].node_id),
            other => panic!("expected a proposal, got {other:?}"),
        }
    }

    #[test]
    fn a_new_node_joins_as_a_learner_and_is_promoted_once_caught_up() {
        let f = facts(&[1, 2, 3], &[]);
        let d = decide(&MemberOp::AddLearner(rec(4)), &f, 50).unwrap();
        assert_eq!(kind(&d), (ConfChangeType::AddLearnerNode, 4));
        let Decision::Propose(_, ctx) = d else { unreachable!() };
        assert_eq!(ctx.change_id, 50);
        assert_eq!(ctx.member, Some(rec(4)));

        let mut f = facts(&[1, 2, 3], &[4]);
        f.matched.insert(4, 899);
        assert!(matches!(decide(&MemberOp::Promote(4), &f, 51), Err(MembershipError::NotCaughtUp { .. })));
        f.matched.insert(4, 900);
        assert_eq!(kind(&decide(&MemberOp::Promote(4), &f, 51).unwrap()), (ConfChangeType::AddNode, 4));
        // A long log: at most MAX_PROMOTE_LAG_ENTRIES behind.
        f.commit = 1_000_000;
        f.matched.insert(4, 1_000_000 - MAX_PROMOTE_LAG_ENTRIES - 1);
        assert!(matches!(decide(&MemberOp::Promote(4), &f, 51), Err(MembershipError::NotCaughtUp { .. })));
        f.matched.insert(4, 1_000_000 - MAX_PROMOTE_LAG_ENTRIES);
        assert!(decide(&MemberOp::Promote(4), &f, 51).is_ok());
        // A short log: a learner with nothing yet is not caught up.
        f.commit = 102;
        f.matched.insert(4, 0);
        assert_eq!(
            decide(&MemberOp::Promote(4), &f, 51),
            Err(MembershipError::NotCaughtUp { id: 4, matched: 0, commit: 102, max_lag: 10 })
        );
    }

    #[test]
    fn refusals_name_the_reason() {
        let f = facts(&[1, 2, 3], &[4]);
        assert_eq!(
            decide(&MemberOp::AddLearner(rec(2)), &f, 9),
            Err(MembershipError::AlreadyMember { id: 2, role: "voter" })
        );
        assert_eq!(
            decide(&MemberOp::AddLearner(rec(4)), &f, 9),
            Err(MembershipError::AlreadyMember { id: 4, role: "learner" })
        );
        assert_eq!(decide(&MemberOp::Promote(2), &f, 9), Err(MembershipError::AlreadyMember { id: 2, role: "voter" }));
        assert_eq!(decide(&MemberOp::Promote(9), &f, 9), Err(MembershipError::NotALearner { id: 9 }));
        assert_eq!(decide(&MemberOp::Remove(9), &f, 9), Err(MembershipError::NotAMember { id: 9 }));
        let mut pending = f.clone();
        pending.pending = true;
        assert_eq!(decide(&MemberOp::Remove(4), &pending, 9), Err(MembershipError::InProgress));
        let mut follower = f.clone();
        follower.is_leader = false;
        follower.leader = 3;
        assert_eq!(decide(&MemberOp::Remove(4), &follower, 9), Err(MembershipError::NotLeader { node: 1, leader: 3 }));
        let mut removed = f.clone();
        removed.records.insert(7, MemberRecord { removed: true, ..rec(7) });
        assert!(matches!(
            decide(&MemberOp::AddLearner(MemberRecord { id: 7, ..rec(7) }), &removed, 9),
            Err(MembershipError::IdNotUsable { id: 7, .. })
        ));
        let mut full = f.clone();
        full.max_members = 4;
        assert_eq!(decide(&MemberOp::AddLearner(rec(5)), &full, 9), Err(MembershipError::TooMany { max: 4 }));
    }

    #[test]
    fn a_removal_must_leave_a_reachable_majority() {
        // Voters 1..=3, node 3 unreachable: removing 2 leaves {1, 3} with
        // one reachable, and a majority of two is two.
        let mut f = facts(&[1, 2, 3], &[]);
        f.recently_heard.remove(&3);
        assert_eq!(
            decide(&MemberOp::Remove(2), &f, 9),
            Err(MembershipError::WouldLoseQuorum { id: 2, reachable: 1, left: 2, needed: 2 })
        );
        // Removing the unreachable one is what an operator does with a dead node.
        assert_eq!(kind(&decide(&MemberOp::Remove(3), &f, 9).unwrap()), (ConfChangeType::RemoveNode, 3));
        assert_eq!(decide(&MemberOp::Remove(1), &facts(&[1], &[]), 9), Err(MembershipError::LastVoter { id: 1 }));
        // A learner never counts for the quorum.
        let mut f = facts(&[1, 2, 3], &[4]);
        f.recently_heard.clear();
        assert_eq!(kind(&decide(&MemberOp::Remove(4), &f, 9).unwrap()), (ConfChangeType::RemoveNode, 4));
    }

    #[test]
    fn the_leader_hands_over_before_it_is_removed() {
        let mut f = facts(&[1, 2, 3], &[]);
        f.matched.insert(2, 990);
        f.matched.insert(3, 1000);
        assert_eq!(decide(&MemberOp::Remove(1), &f, 9), Ok(Decision::TransferLeader { to: 3 }));
        // Only to a voter it hears from; ties go to the lower id.
        let mut f = facts(&[1, 2, 3, 4, 5], &[]);
        f.matched.insert(2, 990);
        f.recently_heard.remove(&3);
        assert_eq!(decide(&MemberOp::Remove(1), &f, 9), Ok(Decision::TransferLeader { to: 4 }));
        // And never when the others could not form a majority without it.
        let mut f = facts(&[1, 2, 3], &[]);
        f.recently_heard.remove(&3);
        assert!(matches!(decide(&MemberOp::Remove(1), &f, 9), Err(MembershipError::WouldLoseQuorum { .. })));
    }
}
