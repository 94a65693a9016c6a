//! The quorum level's membership change: a sans-I/O driver that moves the
//! replica set from `C_old` to `C_new` without losing linearizability.
//!
//! Why it exists: a majority of `C_old` and a majority of `C_new` need not
//! intersect, so switching from one to the other at once lets a read of the
//! new set miss a write acknowledged by the old one. The driver runs the
//! three steps of docs/consistency.md, "Changing the replica set" (the
//! proof that they suffice, and why each is needed, is there):
//!
//! 1. **Joint epoch** `e+1` = {current: `C_old`, next: `C_new`}: pushed to
//!    every node of both sets; from then on a phase needs majorities of
//!    both (see `config`), and replicas that adopted `e+1` refuse epoch `e`.
//! 2. **State transfer**: every member `n` of `C_new` pulls all cells from
//!    the members of `C_old` *at epoch `e+1`*, in batches of at most
//!    `pull_cells_max` cells, and merges them. A pull makes its source adopt
//!    `e+1` before it reads, so every epoch-`e` write the source ever acked
//!    is in what it sends. `n` is **synced** when it merged the complete
//!    scans of a majority of `C_old`; the transfer is **done** when a
//!    majority of `C_new` is synced. No member of `C_new` is exempt, not
//!    even one in `C_old` too: it may be in the minority that missed a write.
//! 3. **New epoch** `e+2` = {current: `C_new`}: pushed to every node of both
//!    sets; the change is done when a majority of `C_new` adopted it. Nodes
//!    only in `C_old` may be shut down then.
//!
//! What it promises: it emits `e+2` only after the transfer is done (the
//! condition above); it never holds cells (the shell fetches a batch from
//! the source and has the target merge it durably before reporting
//! [`Input::Pulled`]), keeps one pull in flight per (target, source) pair
//! and retries a failed step at most `attempts_max` times; after
//! [`Effect::Done`] it emits nothing more. One change at a time: a source
//! that knows a newer epoch than `e+1` ends this one
//! ([`ReconfigError::Superseded`]). A change that fails in step 2 leaves
//! the cluster in the joint epoch, which is safe (only less available).

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use super::config::ReplicaConfig;
use super::core::{majority, ReplicaSetError};
use crate::clock::NodeId;

/// Driver settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReconfigSettings {
    /// Cells per pull batch (the bound on one transfer message).
    pub pull_cells_max: usize,
    /// Tries of one pull batch, or of one configuration push, before that
    /// (target, source) pair or that node counts as failed.
    pub attempts_max: u32,
    /// TEST ONLY, UNSAFE: switch straight from `C_old` to `C_new` (epoch
    /// `e+1` = {current: `C_new`}) instead of the joint epoch; the state
    /// transfer still runs. A negative control.
    pub skip_joint_unsafe: bool,
    /// TEST ONLY, UNSAFE: no state transfer; the joint epoch is followed at
    /// once by the new one. A negative control.
    pub skip_transfer_unsafe: bool,
}

impl Default for ReconfigSettings {
    fn default() -> Self {
        ReconfigSettings { pull_cells_max: 256, attempts_max: 5, skip_joint_unsafe: false, skip_transfer_unsafe: false }
    }
}

/// Everything that can happen to the driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    Start,
    /// `from` holds a configuration of epoch `epoch` after a push.
    ConfigAck {
        from: NodeId,
        epoch: u64,
    },
    /// The push of `epoch` to `to` failed (it may still have arrived).
    ConfigFailed {
        to: NodeId,
        epoch: u64,
    },
    /// `into` durably merged the batch that `from` sent for the pull after
    /// cursor `after`: `last_key` is the batch's last key (`None` if it was
    /// empty), `more` whether `from` has keys after it.
    Pulled {
        into: NodeId,
        from: NodeId,
        after: Option<Bytes>,
        last_key: Option<Bytes>,
        more: bool,
    },
    /// The pull after `after` from `from` into `into` failed.
    PullFailed {
        into: NodeId,
        from: NodeId,
        after: Option<Bytes>,
    },
    /// `from` refused the pull: it knows `config`, newer than this change.
    PullRefused {
        into: NodeId,
        from: NodeId,
        config: ReplicaConfig,
    },
}

/// What the shell must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Send `config` to `to` (it adopts it if newer); answer with
    /// [`Input::ConfigAck`] or [`Input::ConfigFailed`].
    PushConfig { to: NodeId, config: ReplicaConfig },
    /// Fetch at most `limit` cells after `after` from `from`, the request
    /// carrying `config` (so `from` adopts it or refuses); have `into` merge
    /// them durably (keeping the higher version per key); then answer with
    /// [`Input::Pulled`], [`Input::PullFailed`] or [`Input::PullRefused`].
    Pull { into: NodeId, from: NodeId, config: ReplicaConfig, after: Option<Bytes>, limit: usize },
    /// The change finished: `Ok` carries the new configuration (epoch
    /// `e+2`). Always the last effect.
    Done(Result<ReplicaConfig, ReconfigError>),
}

/// Why a change failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReconfigError {
    #[error("invalid replica set: {0}")]
    Invalid(#[from] ReplicaSetError),
    #[error("a change starts from a settled configuration, epoch {epoch} is joint")]
    FromJoint { epoch: u64 },
    /// Step 2 cannot finish; the cluster stays in the (safe) joint epoch.
    #[error("state transfer failed: {failed} of {total} new replicas cannot sync, at most {tolerated} may")]
    TransferFailed { failed: usize, total: usize, tolerated: usize },
    /// Another change got further: some replica knows a newer epoch.
    #[error("a replica knows configuration epoch {theirs}, newer than this change's {ours}")]
    Superseded { theirs: u64, ours: u64 },
    /// The new configuration is in effect (the transfer was done) but too
    /// few new replicas acknowledged it; pushing it again is safe.
    #[error("configuration epoch {epoch} reached {acked} of {total} new replicas, {needed} needed")]
    FinalIncomplete { epoch: u64, acked: usize, needed: usize, total: usize },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum PairState {
    /// A pull after this cursor is in flight, tried `attempts` times.
    Pulling {
        after: Option<Bytes>,
        attempts: u32,
    },
    Finished,
    Failed,
}

#[derive(Debug)]
enum Stage {
    NotStarted,
    Transfer,
    /// The final configuration is pushed: acks and failed nodes so far.
    Final {
        acked: BTreeSet<NodeId>,
        attempts: BTreeMap<NodeId, u32>,
    },
    Done,
}

/// One membership change. See the module docs.
#[derive(Debug)]
pub struct Reconfig {
    old: Vec<NodeId>,
    new: Vec<NodeId>,
    /// Epoch `e+1` (joint unless `skip_joint_unsafe`).
    joint: ReplicaConfig,
    /// Epoch `e+2`.
    target: ReplicaConfig,
    settings: ReconfigSettings,
    stage: Stage,
    pairs: BTreeMap<(NodeId, NodeId), PairState>,
    synced: BTreeSet<NodeId>,
}

impl Reconfig {
    /// A change from the settled configuration `from` (epoch `e`) to the
    /// replica set `to`.
    pub fn new(from: &ReplicaConfig, to: Vec<NodeId>, settings: ReconfigSettings) -> Result<Self, ReconfigError> {
        from.validate()?;
        if from.is_joint() {
            return Err(ReconfigError::FromJoint { epoch: from.epoch });
        }
        assert!(settings.pull_cells_max > 0 && settings.attempts_max > 0, "bounds must allow progress");
        let target = ReplicaConfig { epoch: from.epoch + 2, current: to.clone(), next: None };
        target.validate()?;
        let joint = if settings.skip_joint_unsafe {
            ReplicaConfig { epoch: from.epoch + 1, current: to.clone(), next: None }
        } else {
            ReplicaConfig { epoch: from.epoch + 1, current: from.current.clone(), next: Some(to.clone()) }
        };
        Ok(Reconfig {
            old: from.current.clone(),
            new: to,
            joint,
            target,
            settings,
            stage: Stage::NotStarted,
            pairs: BTreeMap::new(),
            synced: BTreeSet::new(),
        })
    }

    /// The configuration of epoch `e+1`.
    pub fn joint(&self) -> &ReplicaConfig {
        &self.joint
    }

    /// The configuration of epoch `e+2`.
    pub fn target(&self) -> &ReplicaConfig {
        &self.target
    }

    pub fn is_done(&self) -> bool {
        matches!(self.stage, Stage::Done)
    }

    /// Whether the state transfer is done (the new epoch may be used).
    pub fn transfer_done(&self) -> bool {
        matches!(self.stage, Stage::Final { .. } | Stage::Done) && !self.settings.skip_transfer_unsafe
    }

    /// Feeds one input; returns the effects to perform, in order.
    pub fn step(&mut self, input: Input) -> Vec<Effect> {
        if self.is_done() {
            return Vec::new();
        }
        let effects = match input {
            Input::Start => self.on_start(),
            Input::ConfigAck { from, epoch } => self.on_config_ack(from, epoch),
            Input::ConfigFailed { to, epoch } => self.on_config_failed(to, epoch),
            Input::Pulled { into, from, after, last_key, more } => self.on_pulled(into, from, after, last_key, more),
            Input::PullFailed { into, from, after } => self.on_pull_failed(into, from, after),
            Input::PullRefused { config, .. } => {
                if config.epoch > self.joint.epoch && matches!(self.stage, Stage::Transfer) {
                    self.finish(Err(ReconfigError::Superseded { theirs: config.epoch, ours: self.joint.epoch }))
                } else {
                    Vec::new()
                }
            }
        };
        debug_assert!(
            effects.iter().position(|e| matches!(e, Effect::Done(_))).is_none_or(|i| i + 1 == effects.len()),
            "Done must be the last effect"
        );
        effects
    }

    /// Every node of either set, old first.
    fn everyone(&self) -> Vec<NodeId> {
        let mut all = self.old.clone();
        all.extend(self.new.iter().filter(|n| !self.old.contains(n)));
        all
    }

    fn on_start(&mut self) -> Vec<Effect> {
        if !matches!(self.stage, Stage::NotStarted) {
            return Vec::new();
        }
        self.stage = Stage::Transfer;
        // The joint pushes only spread the news early (liveness): safety
        // comes from the pulls, which carry the joint epoch themselves.
        let mut effects: Vec<Effect> =
            self.everyone().into_iter().map(|to| Effect::PushConfig { to, config: self.joint.clone() }).collect();
        if self.settings.skip_transfer_unsafe {
            effects.extend(self.start_final());
            return effects;
        }
        for &into in &self.new {
            for &from in &self.old {
                self.pairs.insert((into, from), PairState::Pulling { after: None, attempts: 1 });
                effects.push(self.pull(into, from, None));
            }
        }
        effects
    }

    fn pull(&self, into: NodeId, from: NodeId, after: Option<Bytes>) -> Effect {
        Effect::Pull { into, from, config: self.joint.clone(), after, limit: self.settings.pull_cells_max }
    }

    fn on_pulled(
        &mut self,
        into: NodeId,
        from: NodeId,
        after: Option<Bytes>,
        last_key: Option<Bytes>,
        more: bool,
    ) -> Vec<Effect> {
        if !matches!(self.stage, Stage::Transfer) {
            return Vec::new();
        }
        let Some(pair) = self.pairs.get_mut(&(into, from)) else {
            return Vec::new();
        };
        if !matches!(pair, PairState::Pulling { after: current, .. } if *current == after) {
            // A duplicate, or the answer to an earlier cursor.
            return Vec::new();
        }
        if more {
            let last = last_key.expect("a batch with more after it is not empty");
            assert!(after.as_ref().is_none_or(|a| last > *a), "a pull's cursor moves forward");
            *pair = PairState::Pulling { after: Some(last.clone()), attempts: 1 };
            return vec![self.pull(into, from, Some(last))];
        }
        *pair = PairState::Finished;
        if self.synced.contains(&into) || self.finished_sources(into) < majority(self.old.len()) {
            return Vec::new();
        }
        tracing::debug!(node = into, "reconfiguration: node synced from a majority of the old replica set");
        self.synced.insert(into);
        if self.synced.len() < majority(self.new.len()) {
            return Vec::new();
        }
        // The transfer is done: every epoch-e write that completed is on a
        // majority of C_new. Stop the other pulls (answers are ignored).
        self.start_final()
    }

    fn finished_sources(&self, into: NodeId) -> usize {
        self.old.iter().filter(|&&from| self.pairs.get(&(into, from)) == Some(&PairState::Finished)).count()
    }

    fn on_pull_failed(&mut self, into: NodeId, from: NodeId, after: Option<Bytes>) -> Vec<Effect> {
        if !matches!(self.stage, Stage::Transfer) {
            return Vec::new();
        }
        let attempts_max = self.settings.attempts_max;
        let Some(pair) = self.pairs.get_mut(&(into, from)) else {
            return Vec::new();
        };
        let PairState::Pulling { after: current, attempts } = pair else {
            return Vec::new();
        };
        if *current != after {
            return Vec::new();
        }
        if *attempts < attempts_max {
            *attempts += 1;
            return vec![self.pull(into, from, after)];
        }
        *pair = PairState::Failed;
        // Nodes of C_new that can no longer pull a majority of C_old.
        let tolerated_sources = self.old.len() - majority(self.old.len());
        let failed = self
            .new
            .iter()
            .filter(|&&n| {
                !self.synced.contains(&n)
                    && self.old.iter().filter(|&&s| self.pairs.get(&(n, s)) == Some(&PairState::Failed)).count()
                        > tolerated_sources
            })
            .count();
        let tolerated = self.new.len() - majority(self.new.len());
        if failed > tolerated {
            return self.finish(Err(ReconfigError::TransferFailed { failed, total: self.new.len(), tolerated }));
        }
        Vec::new()
    }

    fn start_final(&mut self) -> Vec<Effect> {
        self.stage = Stage::Final { acked: BTreeSet::new(), attempts: BTreeMap::new() };
        let everyone = self.everyone();
        let Stage::Final { attempts, .. } = &mut self.stage else { unreachable!() };
        for &to in &everyone {
            attempts.insert(to, 1);
        }
        everyone.into_iter().map(|to| Effect::PushConfig { to, config: self.target.clone() }).collect()
    }

    fn on_config_ack(&mut self, from: NodeId, epoch: u64) -> Vec<Effect> {
        let needed = majority(self.new.len());
        let Stage::Final { acked, .. } = &mut self.stage else {
            return Vec::new();
        };
        if epoch < self.target.epoch || !self.new.contains(&from) {
            return Vec::new();
        }
        acked.insert(from);
        if acked.len() >= needed {
            return self.finish(Ok(self.target.clone()));
        }
        Vec::new()
    }

    fn on_config_failed(&mut self, to: NodeId, epoch: u64) -> Vec<Effect> {
        let attempts_max = self.settings.attempts_max;
        let (needed, total) = (majority(self.new.len()), self.new.len());
        if epoch != self.target.epoch {
            return Vec::new();
        }
        let Stage::Final { acked, attempts } = &mut self.stage else {
            return Vec::new();
        };
        let tries = attempts.get_mut(&to).expect("pushed to every node");
        if *tries < attempts_max {
            *tries += 1;
            return vec![Effect::PushConfig { to, config: self.target.clone() }];
        }
        let given_up =
            self.new.iter().filter(|n| !acked.contains(n) && attempts.get(n).copied() == Some(attempts_max)).count();
        // Nodes still being tried may yet ack; fail only once they cannot.
        if total - given_up < needed {
            let acked = acked.len();
            return self.finish(Err(ReconfigError::FinalIncomplete { epoch, acked, needed, total }));
        }
        Vec::new()
    }

    fn finish(&mut self, result: Result<ReplicaConfig, ReconfigError>) -> Vec<Effect> {
        assert!(!self.is_done(), "a change finishes once");
        if let Err(e) = &result {
            tracing::warn!(error = %e, "reconfiguration failed");
        }
        self.stage = Stage::Done;
        vec![Effect::Done(result)]
    }
}

#[cfg(test)]
mod tests {
    //! Unit tests of the driver, input by input (docs/consistency.md,
    //! "Changing the replica set", steps 1-3).
    use super::*;

    fn settled(epoch: u64, nodes: &[NodeId]) -> ReplicaConfig {
        ReplicaConfig { epoch, current: nodes.to_vec(), next: None }
    }

    fn pulls(effects: &[Effect]) -> Vec<(NodeId, NodeId, Option<Bytes>)> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Pull { into, from, after, .. } => Some((*into, *from, after.clone())),
                _ => None,
            })
            .collect()
    }

    fn pushes(effects: &[Effect]) -> Vec<(NodeId, u64)> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::PushConfig { to, config } => Some((*to, config.epoch)),
                _ => None,
            })
            .collect()
    }

    fn finished(into: NodeId, from: NodeId) -> Input {
        Input::Pulled { into, from, after: None, last_key: None, more: false }
    }

    #[test]
    fn a_replacement_goes_joint_then_transfers_then_settles() {
        // Replace 3 by 4: {1,2,3} -> {1,2,4}, epochs 7 -> 8 (joint) -> 9.
        let mut r = Reconfig::new(&settled(7, &[1, 2, 3]), vec![1, 2, 4], ReconfigSettings::default()).unwrap();
        assert_eq!(r.joint(), &ReplicaConfig { epoch: 8, current: vec![1, 2, 3], next: Some(vec![1, 2, 4]) });
        let effects = r.step(Input::Start);
        assert_eq!(pushes(&effects), vec![(1, 8), (2, 8), (3, 8), (4, 8)]);
        // Every new member pulls from every old member, even 1 and 2.
        assert_eq!(pulls(&effects).len(), 9);
        // Node 4 syncs from {1, 3} (a majority of old) with a second batch from 3.
        assert!(r.step(finished(4, 1)).is_empty());
        let next =
            r.step(Input::Pulled { into: 4, from: 3, after: None, last_key: Some(Bytes::from("k")), more: true });
        assert_eq!(pulls(&next), vec![(4, 3, Some(Bytes::from("k")))]);
        assert!(
            r.step(Input::Pulled { into: 4, from: 3, after: None, last_key: None, more: false }).is_empty(),
            "stale cursor ignored"
        );
        assert!(r
            .step(Input::Pulled { into: 4, from: 3, after: Some(Bytes::from("k")), last_key: None, more: false })
            .is_empty());
        assert!(!r.transfer_done(), "one synced node of three is not a majority of new");
        // Node 1 syncs from {1, 2}: now 2 of 3 new members are synced.
        r.step(finished(1, 1));
        let effects = r.step(finished(1, 2));
        assert!(r.transfer_done());
        assert_eq!(pushes(&effects), vec![(1, 9), (2, 9), (3, 9), (4, 9)]);
        assert!(r.step(finished(2, 1)).is_empty(), "late pulls are ignored");
        assert!(r.step(Input::ConfigAck { from: 3, epoch: 9 }).is_empty(), "a removed node does not count");
        assert!(r.step(Input::ConfigAck { from: 1, epoch: 9 }).is_empty());
        let done = r.step(Input::ConfigAck { from: 4, epoch: 9 });
        assert_eq!(done, vec![Effect::Done(Ok(settled(9, &[1, 2, 4])))]);
        assert!(r.step(Input::ConfigAck { from: 2, epoch: 9 }).is_empty());
    }

    #[test]
    fn failed_pulls_are_retried_then_fail_the_transfer() {
        let settings = ReconfigSettings { attempts_max: 2, ..ReconfigSettings::default() };
        let mut r = Reconfig::new(&settled(0, &[1]), vec![2], settings).unwrap();
        r.step(Input::Start);
        let retry = r.step(Input::PullFailed { into: 2, from: 1, after: None });
        assert_eq!(pulls(&retry), vec![(2, 1, None)]);
        let done = r.step(Input::PullFailed { into: 2, from: 1, after: None });
        assert_eq!(done, vec![Effect::Done(Err(ReconfigError::TransferFailed { failed: 1, total: 1, tolerated: 0 }))]);
    }

    #[test]
    fn a_newer_epoch_at_a_source_supersedes_the_change() {
        let mut r = Reconfig::new(&settled(0, &[1, 2, 3]), vec![1, 2, 3, 4], ReconfigSettings::default()).unwrap();
        r.step(Input::Start);
        let done = r.step(Input::PullRefused { into: 4, from: 2, config: settled(5, &[2]) });
        assert_eq!(done, vec![Effect::Done(Err(ReconfigError::Superseded { theirs: 5, ours: 1 }))]);
    }

    #[test]
    fn a_change_starts_from_a_settled_configuration() {
        let joint = ReplicaConfig { epoch: 1, current: vec![1], next: Some(vec![2]) };
        assert_eq!(
            Reconfig::new(&joint, vec![2], ReconfigSettings::default()).unwrap_err(),
            ReconfigError::FromJoint { epoch: 1 }
        );
        assert_eq!(
            Reconfig::new(&settled(0, &[1]), vec![], ReconfigSettings::default()).unwrap_err(),
            ReconfigError::Invalid(ReplicaSetError::Empty)
        );
    }

    #[test]
    fn the_final_push_is_retried_and_can_fail() {
        let settings = ReconfigSettings { attempts_max: 2, skip_transfer_unsafe: true, ..ReconfigSettings::default() };
        let mut r = Reconfig::new(&settled(0, &[1]), vec![2, 3, 4], settings).unwrap();
        r.step(Input::Start);
        assert_eq!(pushes(&r.step(Input::ConfigFailed { to: 2, epoch: 2 })), vec![(2, 2)]);
        assert!(r.step(Input::ConfigFailed { to: 2, epoch: 2 }).is_empty(), "3 and 4 may still ack");
        r.step(Input::ConfigFailed { to: 3, epoch: 2 });
        let done = r.step(Input::ConfigFailed { to: 3, epoch: 2 });
        assert_eq!(
            done,
            vec![Effect::Done(Err(ReconfigError::FinalIncomplete { epoch: 2, acked: 0, needed: 2, total: 3 }))]
        );
    }
}
