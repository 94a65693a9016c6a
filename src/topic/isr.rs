//! The partition leader's replication core (sans-I/O): in-sync replica set,
//! follower progress, high watermark.
//!
//! Inputs are the leader's own durable log end ([`LeaderCore::appended`]),
//! follower fetches ([`LeaderCore::on_fetch`]: a fetch at offset `o` means
//! the follower durably holds everything below `o`), committed metadata
//! ([`LeaderCore::on_metadata`]) and time ([`LeaderCore::tick`]), all with
//! `now_ms` passed in. Outputs are [`Effect`]s: a new high watermark, or an
//! ISR change to propose to the controller as a compare-and-set on the
//! partition epoch (Kafka's AlterPartition). The shell does all I/O.
//!
//! Rules (Kafka's, KIP-841 "maximal ISR"):
//! * **High watermark** = min log end offset over the *maximal* ISR: the
//!   committed ISR plus the members of a proposed change. While a shrink is
//!   pending the removed member still counts, while an expansion is pending
//!   the new member already counts, so whichever way the proposal goes, the
//!   high watermark never exceeds what every member of the committed ISR
//!   holds. A leader elected from that ISR therefore has every record below
//!   it. It never decreases, and until every member has fetched once in
//!   this leader epoch it does not move.
//! * **Lag**: a follower is caught up when it fetches at the leader's log
//!   end, or at least up to where the leader's log ended at its previous
//!   fetch. One not caught up for `lag_time_max_ms` leaves the ISR.
//! * **Rejoin**: a follower outside the ISR whose log end reaches the high
//!   watermark and the start of this leader epoch is proposed back in.
//! * One proposal at a time; a proposal without an answer is re-sent after
//!   [`ISR_PROPOSAL_RETRY_MS`].

use std::collections::{BTreeMap, BTreeSet};

use crate::clock::NodeId;

/// A proposed ISR change without a committed answer is re-proposed after this.
pub const ISR_PROPOSAL_RETRY_MS: u64 = 2_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// The high watermark advanced to this offset.
    HighWatermark(u64),
    /// Ask the controller to set the ISR, if the partition is still at these epochs.
    ProposeIsr { partition_epoch: u64, leader_epoch: u64, isr: Vec<NodeId> },
}

/// A partition's replication settings as the core needs them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IsrSettings {
    pub lag_time_max_ms: u64,
    pub min_insync_replicas: usize,
}

#[derive(Clone, Debug)]
struct Follower {
    /// Log end offset reported by the last fetch (None: no fetch yet this epoch).
    leo: Option<u64>,
    last_fetch_ms: u64,
    last_caught_up_ms: u64,
    /// The leader's log end at the follower's previous fetch.
    leader_leo_at_last_fetch: u64,
    /// Reported a log end below the high watermark while in the ISR (lost data).
    regressed: bool,
}

#[derive(Clone, Debug)]
struct Pending {
    isr: BTreeSet<NodeId>,
    proposed_at_ms: u64,
}

#[derive(Clone, Debug)]
pub struct LeaderCore {
    self_id: NodeId,
    leader_epoch: u64,
    partition_epoch: u64,
    replicas: Vec<NodeId>,
    /// The ISR as committed in the metadata.
    isr: BTreeSet<NodeId>,
    pending: Option<Pending>,
    followers: BTreeMap<NodeId, Follower>,
    leo: u64,
    high_watermark: u64,
    /// The leader's log end when this leader epoch began.
    epoch_start_offset: u64,
    settings: IsrSettings,
}

impl LeaderCore {
    /// A leader taking over at `leader_epoch` with log end `leo`; `hw` is
    /// the high watermark this replica knew (it never goes back from there).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        now_ms: u64,
        self_id: NodeId,
        leader_epoch: u64,
        partition_epoch: u64,
        replicas: &[NodeId],
        isr: &[NodeId],
        leo: u64,
        hw: u64,
        settings: IsrSettings,
    ) -> LeaderCore {
        assert!(isr.contains(&self_id), "node {self_id} leads with ISR {isr:?} that lacks it");
        let followers = replicas
            .iter()
            .filter(|&&r| r != self_id)
            .map(|&r| {
                // A grace period: every follower counts as caught up now.
                (
                    r,
                    Follower {
                        leo: None,
                        last_fetch_ms: now_ms,
                        last_caught_up_ms: now_ms,
                        leader_leo_at_last_fetch: leo,
                        regressed: false,
                    },
                )
            })
            .collect();
        let mut core = LeaderCore {
            self_id,
            leader_epoch,
            partition_epoch,
            replicas: replicas.to_vec(),
            isr: isr.iter().copied().collect(),
            pending: None,
            followers,
            leo,
            high_watermark: hw.min(leo),
            epoch_start_offset: leo,
            settings,
        };
        // A leader alone in its ISR commits what it has.
        core.advance_hw();
        core.check();
        core
    }

    pub fn leader_epoch(&self) -> u64 {
        self.leader_epoch
    }

    pub fn partition_epoch(&self) -> u64 {
        self.partition_epoch
    }

    pub fn high_watermark(&self) -> u64 {
        self.high_watermark
    }

    pub fn log_end_offset(&self) -> u64 {
        self.leo
    }

    pub fn epoch_start_offset(&self) -> u64 {
        self.epoch_start_offset
    }

    /// The ISR committed in the metadata.
    pub fn isr(&self) -> Vec<NodeId> {
        self.isr.iter().copied().collect()
    }

    /// The committed ISR plus members of a pending proposal.
    pub fn maximal_isr(&self) -> BTreeSet<NodeId> {
        let mut m = self.isr.clone();
        if let Some(p) = &self.pending {
            m.extend(p.isr.iter().copied());
        }
        m
    }

    pub fn settings(&self) -> IsrSettings {
        self.settings
    }

    pub fn set_settings(&mut self, s: IsrSettings) {
        self.settings = s;
    }

    /// Follower log end offsets as last reported.
    pub fn follower_leos(&self) -> BTreeMap<NodeId, Option<u64>> {
        self.followers.iter().map(|(&id, f)| (id, f.leo)).collect()
    }

    fn lagging(&self, now_ms: u64, id: NodeId) -> bool {
        match self.followers.get(&id) {
            None => false,
            Some(f) => f.regressed || now_ms.saturating_sub(f.last_caught_up_ms) > self.settings.lag_time_max_ms,
        }
    }

    /// Members of the committed ISR that are not lagging out: how many
    /// replicas an acks=all write would reach now. acks=all is refused
    /// before anything is written when this is below min.insync.replicas.
    pub fn in_sync_count(&self, now_ms: u64) -> usize {
        self.isr.iter().filter(|&&id| id == self.self_id || !self.lagging(now_ms, id)).count()
    }

    /// Whether acks=all may be accepted now: `Err((in sync, needed))` if not.
    pub fn check_acks_all(&self, now_ms: u64) -> Result<(), (usize, usize)> {
        let have = self.in_sync_count(now_ms);
        let need = self.settings.min_insync_replicas;
        if have < need {
            Err((have, need))
        } else {
            Ok(())
        }
    }

    /// Whether records that reached the high watermark may be acknowledged
    /// to an acks=all producer: the committed ISR is at least min.insync.
    pub fn committed_isr_satisfies_min(&self) -> bool {
        self.isr.len() >= self.settings.min_insync_replicas
    }

    /// The leader's log grew to `leo` (durably).
    pub fn appended(&mut self, leo: u64) -> Vec<Effect> {
        assert!(leo >= self.leo, "leader log end went back: {} -> {leo}", self.leo);
        self.leo = leo;
        let mut out = Vec::new();
        if let Some(hw) = self.advance_hw() {
            out.push(Effect::HighWatermark(hw));
        }
        self.check();
        out
    }

    /// Follower `id` fetched at `fetch_offset` (its durable log end), after
    /// the shell checked its log does not diverge from ours.
    pub fn on_fetch(&mut self, now_ms: u64, id: NodeId, fetch_offset: u64) -> Vec<Effect> {
        let mut out = Vec::new();
        if fetch_offset > self.leo {
            // A follower cannot hold records we do not have once divergence
            // is ruled out; ignore the report rather than trust it.
            tracing::warn!(follower = id, fetch_offset, leo = self.leo, "fetch beyond the leader's log end ignored");
            return out;
        }
        let leo = self.leo;
        let hw = self.high_watermark;
        let in_maximal = self.maximal_isr().contains(&id);
        let Some(f) = self.followers.get_mut(&id) else { return out };
        if fetch_offset >= leo {
            f.last_caught_up_ms = now_ms;
        } else if fetch_offset >= f.leader_leo_at_last_fetch {
            f.last_caught_up_ms = f.last_caught_up_ms.max(f.last_fetch_ms);
        }
        f.last_fetch_ms = now_ms;
        f.leader_leo_at_last_fetch = leo;
        f.leo = Some(fetch_offset);
        if in_maximal && fetch_offset < hw {
            // It lost records the high watermark counted on (e.g. a wiped
            // disk): it cannot stay in the ISR.
            tracing::error!(follower = id, fetch_offset, hw, "an in-sync follower's log went below the high watermark");
            f.regressed = true;
        } else if fetch_offset >= hw {
            f.regressed = false;
        }
        if let Some(hw) = self.advance_hw() {
            out.push(Effect::HighWatermark(hw));
        }
        out.extend(self.maybe_change_isr(now_ms));
        self.check();
        out
    }

    /// Time passes: lagging followers leave, lost proposals are re-sent.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Effect> {
        let out = self.maybe_change_isr(now_ms);
        self.check();
        out
    }

    /// The metadata committed a change for this leader epoch (ISR,
    /// settings, or the replicas: a reassignment adds replicas, which
    /// start with the grace a new leader gives every follower, and its
    /// completion removes replicas, which are out of the ISR by then).
    pub fn on_metadata(
        &mut self,
        now_ms: u64,
        partition_epoch: u64,
        replicas: &[NodeId],
        isr: &[NodeId],
        settings: IsrSettings,
    ) -> Vec<Effect> {
        if partition_epoch <= self.partition_epoch {
            return Vec::new();
        }
        assert!(isr.contains(&self.self_id), "node {} leads with ISR {isr:?} that lacks it", self.self_id);
        assert!(
            replicas.contains(&self.self_id),
            "node {} leads with replicas {replicas:?} that lack it",
            self.self_id
        );
        self.partition_epoch = partition_epoch;
        self.isr = isr.iter().copied().collect();
        self.settings = settings;
        // Any committed change answers (or supersedes) our proposal.
        self.pending = None;
        if self.replicas != replicas {
            let leo = self.leo;
            self.followers.retain(|id, _| replicas.contains(id));
            for &r in replicas.iter().filter(|&&r| r != self.self_id) {
                self.followers.entry(r).or_insert(Follower {
                    leo: None,
                    last_fetch_ms: now_ms,
                    last_caught_up_ms: now_ms,
                    leader_leo_at_last_fetch: leo,
                    regressed: false,
                });
            }
            self.replicas = replicas.to_vec();
        }
        let mut out = Vec::new();
        if let Some(hw) = self.advance_hw() {
            out.push(Effect::HighWatermark(hw));
        }
        self.check();
        out
    }

    /// The controller refused our proposal (stale epochs); the metadata that
    /// beat it arrives through [`Self::on_metadata`] or a leader change.
    pub fn on_rejected(&mut self) {
        self.pending = None;
    }

    fn advance_hw(&mut self) -> Option<u64> {
        let mut min = self.leo;
        for id in self.maximal_isr() {
            if id == self.self_id {
                continue;
            }
            match self.followers.get(&id).and_then(|f| f.leo) {
                Some(l) => min = min.min(l),
                // No fetch from it yet in this epoch: it may hold less.
                None => return None,
            }
        }
        if min > self.high_watermark {
            self.high_watermark = min;
            Some(min)
        } else {
            None
        }
    }

    fn maybe_change_isr(&mut self, now_ms: u64) -> Vec<Effect> {
        if let Some(p) = &mut self.pending {
            if now_ms.saturating_sub(p.proposed_at_ms) < ISR_PROPOSAL_RETRY_MS {
                return Vec::new();
            }
            p.proposed_at_ms = now_ms;
            return vec![self.proposal(self.pending.as_ref().expect("pending").isr.clone())];
        }
        let lagging: Vec<NodeId> =
            self.isr.iter().copied().filter(|&id| id != self.self_id && self.lagging(now_ms, id)).collect();
        let mut next = self.isr.clone();
        for id in &lagging {
            next.remove(id);
        }
        for (&id, f) in &self.followers {
            let caught_up = f.leo.is_some_and(|l| l >= self.high_watermark && l >= self.epoch_start_offset);
            if !self.isr.contains(&id) && caught_up && !f.regressed && !self.lagging(now_ms, id) {
                next.insert(id);
            }
        }
        if next == self.isr {
            return Vec::new();
        }
        self.pending = Some(Pending { isr: next.clone(), proposed_at_ms: now_ms });
        vec![self.proposal(next)]
    }

    fn proposal(&self, isr: BTreeSet<NodeId>) -> Effect {
        Effect::ProposeIsr {
            partition_epoch: self.partition_epoch,
            leader_epoch: self.leader_epoch,
            isr: isr.into_iter().collect(),
        }
    }

    /// Invariants (STYLE: assert HW ≤ every ISR member's log end).
    pub fn check(&self) {
        assert!(self.high_watermark <= self.leo, "high watermark {} beyond log end {}", self.high_watermark, self.leo);
        assert!(self.isr.contains(&self.self_id), "leader {} not in its ISR {:?}", self.self_id, self.isr);
        for id in self.maximal_isr() {
            if id == self.self_id {
                continue;
            }
            if let Some(f) = self.followers.get(&id) {
                if let (Some(l), false) = (f.leo, f.regressed) {
                    assert!(
                        self.high_watermark <= l,
                        "high watermark {} beyond ISR member {id}'s log end {l}",
                        self.high_watermark
                    );
                }
            }
        }
        for id in &self.isr {
            assert!(self.replicas.contains(id), "ISR member {id} is not a replica of {:?}", self.replicas);
        }
    }
}

#[cfg(test)]
mod tests;
