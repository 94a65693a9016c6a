//! The replica set of the quorum level, with a configuration epoch: what a
//! quorum *is* while membership changes.
//!
//! Why it exists: ABD is safe because any two quorums intersect. When the
//! replica set changes from `C_old` to `C_new`, a majority of `C_old` and a
//! majority of `C_new` need not intersect, so an operation served by one and
//! a later one served by the other could miss each other. A
//! [`ReplicaConfig`] names the set(s) a quorum must cover — one set, or,
//! during a change, the old and the new set jointly — and an epoch that
//! orders configurations, so that a replica can refuse a coordinator that
//! uses an older one (see `replica`, `reconfig` and docs/consistency.md,
//! "Changing the replica set").
//!
//! What it promises: [`ReplicaConfig::is_quorum`] holds for a set of nodes
//! exactly when it contains a majority of `current` and, when joint, a
//! majority of `next`; [`ReplicaConfig::cannot_reach`] holds exactly when
//! the nodes not yet failed can no longer form such a set. A static replica
//! set is [`ReplicaConfig::fixed`]: epoch 0, no `next`, and then a quorum is
//! a plain majority, as before configurations existed.

use crate::clock::NodeId;

use super::core::{majority, ReplicaSetError, MAX_REPLICAS};

/// One configuration of the replica set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaConfig {
    /// Orders configurations: a replica that knows epoch `e` refuses quorum
    /// messages of any epoch below `e`.
    pub epoch: u64,
    /// The replica set (the old one during a change).
    pub current: Vec<NodeId>,
    /// During a change (a joint configuration): the new replica set. A
    /// quorum then needs a majority of `current` AND a majority of `next`.
    pub next: Option<Vec<NodeId>>,
}

impl ReplicaConfig {
    /// The static replica set of a cluster without membership changes:
    /// epoch 0, not joint.
    pub fn fixed(replicas: Vec<NodeId>) -> ReplicaConfig {
        ReplicaConfig { epoch: 0, current: replicas, next: None }
    }

    /// Checks both sets: non-empty, at most [`MAX_REPLICAS`], no duplicate
    /// within a set (a node may be in both).
    pub fn validate(&self) -> Result<(), ReplicaSetError> {
        for set in std::iter::once(&self.current).chain(self.next.as_ref()) {
            if set.is_empty() {
                return Err(ReplicaSetError::Empty);
            }
            if set.len() > MAX_REPLICAS {
                return Err(ReplicaSetError::TooMany { count: set.len(), max: MAX_REPLICAS });
            }
            for (i, r) in set.iter().enumerate() {
                if set[..i].contains(r) {
                    return Err(ReplicaSetError::Duplicate(*r));
                }
            }
        }
        Ok(())
    }

    pub fn is_joint(&self) -> bool {
        self.next.is_some()
    }

    /// Whether this configuration has finished following the Raft voter
    /// set `voters` (any order): not joint, and `current` is that set.
    pub fn is_settled_on(&self, voters: &[u64]) -> bool {
        let mut current: Vec<u64> = self.current.iter().map(|&n| n as u64).collect();
        let mut voters = voters.to_vec();
        current.sort_unstable();
        voters.sort_unstable();
        !self.is_joint() && current == voters
    }

    /// Every node a phase must contact: `current` in order, then the nodes
    /// of `next` not in `current`.
    pub fn members(&self) -> Vec<NodeId> {
        let mut members = self.current.clone();
        for &n in self.next.iter().flatten() {
            if !members.contains(&n) {
                members.push(n);
            }
        }
        members
    }

    pub fn contains(&self, node: NodeId) -> bool {
        self.current.contains(&node) || self.next.as_ref().is_some_and(|n| n.contains(&node))
    }

    /// Whether the nodes for which `ok` holds form a quorum: a majority of
    /// `current` and, when joint, a majority of `next`.
    pub fn is_quorum(&self, ok: impl Fn(NodeId) -> bool) -> bool {
        self.sets().all(|set| set.iter().filter(|&&n| ok(n)).count() >= majority(set.len()))
    }

    /// Whether, with the nodes for which `failed` holds out, no quorum can
    /// form any more (some set has lost more than its minority).
    pub fn cannot_reach(&self, failed: impl Fn(NodeId) -> bool) -> bool {
        self.sets().any(|set| set.iter().filter(|&&n| failed(n)).count() > set.len() - majority(set.len()))
    }

    fn sets(&self) -> impl Iterator<Item = &Vec<NodeId>> {
        std::iter::once(&self.current).chain(self.next.as_ref())
    }
}

#[cfg(test)]
mod tests {
    // Proves the joint-quorum rule of the reconfiguration (joint consensus,
    // Raft thesis §4.3, applied to ABD quorums): during a change a quorum is
    // a majority of the old set AND a majority of the new set, so it
    // intersects every quorum of either configuration.
    use super::*;

    fn joint(current: &[NodeId], next: &[NodeId]) -> ReplicaConfig {
        ReplicaConfig { epoch: 1, current: current.to_vec(), next: Some(next.to_vec()) }
    }

    #[test]
    fn settled_on_means_not_joint_and_the_same_set_in_any_order() {
        let fixed = ReplicaConfig { epoch: 2, current: vec![3, 1, 2], next: None };
        assert!(fixed.is_settled_on(&[1, 2, 3]));
        assert!(!fixed.is_settled_on(&[1, 2]));
        assert!(!fixed.is_settled_on(&[1, 2, 3, 4]));
        let joint = ReplicaConfig { next: Some(vec![1, 2, 3]), ..fixed };
        assert!(!joint.is_settled_on(&[1, 2, 3]));
    }

    #[test]
    fn a_fixed_config_is_a_plain_majority() {
        let c = ReplicaConfig::fixed(vec![1, 2, 3]);
        assert!(c.is_quorum(|n| n != 3));
        assert!(!c.is_quorum(|n| n == 1));
        assert!(!c.cannot_reach(|n| n == 1));
        assert!(c.cannot_reach(|n| n != 3));
        assert_eq!(c.members(), vec![1, 2, 3]);
    }

    #[test]
    fn a_joint_quorum_needs_both_majorities() {
        // Replace 3 by 4: {1,2,3} -> {1,2,4}.
        let c = joint(&[1, 2, 3], &[1, 2, 4]);
        assert_eq!(c.members(), vec![1, 2, 3, 4]);
        assert!(c.is_quorum(|n| n == 1 || n == 2));
        assert!(!c.is_quorum(|n| n == 2 || n == 3), "a majority of old only");
        assert!(!c.is_quorum(|n| n == 2 || n == 4), "a majority of new only");
        assert!(c.is_quorum(|n| n != 1));
        // 3 -> 5 with disjoint additions: {1,2,3} -> {1,2,3,4,5}.
        let c = joint(&[1, 2, 3], &[1, 2, 3, 4, 5]);
        assert!(!c.is_quorum(|n| n <= 2), "2 of 5 is not a majority of new");
        assert!(c.is_quorum(|n| n <= 3));
        assert!(c.cannot_reach(|n| n >= 3), "3 of 5 new nodes failed");
        assert!(!c.cannot_reach(|n| n >= 4));
    }

    #[test]
    fn configs_are_validated() {
        assert_eq!(joint(&[1, 2], &[]).validate(), Err(ReplicaSetError::Empty));
        assert_eq!(joint(&[1, 2], &[3, 3]).validate(), Err(ReplicaSetError::Duplicate(3)));
        assert_eq!(ReplicaConfig::fixed(vec![]).validate(), Err(ReplicaSetError::Empty));
        assert!(joint(&[1, 2], &[2, 3]).validate().is_ok());
    }
}
