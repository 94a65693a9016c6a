//! The leader-epoch cache of one partition replica: which leader epoch
//! wrote which offsets, as `(epoch, start offset)` entries.
//!
//! It exists so that a follower truncates exactly where its log diverges
//! from the new leader's, never by its high watermark (which can be stale
//! and lose or keep the wrong records; Kafka KIP-101). The rule, from
//! KIP-279 and KIP-595:
//!
//! * The follower sends the epoch of its last record with every fetch.
//! * The leader answers with the largest epoch it has that is ≤ that one,
//!   and the offset where its log leaves that epoch ([`EpochCache::end_offset_for`]).
//! * If that epoch differs from the follower's or ends before the follower's
//!   log end, the logs diverge: the follower truncates to
//!   [`truncation_offset`] and asks again with its new last epoch. Each
//!   round removes records or cache entries, so it terminates.
//!
//! Within one epoch only one leader appends, so two replicas holding the
//! same epoch up to the same offset hold the same records.
//!
//! Pure data structure; persistence is in [`super::log`].

use std::fmt;

/// `(leader epoch, first offset written in that epoch)`, both strictly
/// increasing along the vector.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct EpochCache {
    entries: Vec<(u64, u64)>,
}

impl fmt::Debug for EpochCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.entries.iter()).finish()
    }
}

impl EpochCache {
    /// Builds a cache from stored entries (sorted by epoch).
    pub fn from_entries(mut entries: Vec<(u64, u64)>) -> EpochCache {
        entries.sort_unstable();
        let cache = EpochCache { entries };
        cache.check();
        cache
    }

    fn check(&self) {
        for w in self.entries.windows(2) {
            assert!(w[0].0 < w[1].0, "leader epochs must increase: {:?}", self.entries);
            assert!(w[0].1 <= w[1].1, "epoch start offsets must not decrease: {:?}", self.entries);
        }
    }

    pub fn entries(&self) -> &[(u64, u64)] {
        &self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The newest epoch (0 when empty: no record was ever written).
    pub fn latest_epoch(&self) -> u64 {
        self.entries.last().map_or(0, |e| e.0)
    }

    /// Records that `epoch` starts at `offset`; ignored when `epoch` is not
    /// newer than the latest. Returns whether an entry was added.
    pub fn assign(&mut self, epoch: u64, offset: u64) -> bool {
        assert!(epoch > 0, "leader epochs start at 1");
        if let Some(&(last_epoch, last_start)) = self.entries.last() {
            if epoch <= last_epoch {
                return false;
            }
            assert!(
                offset >= last_start,
                "epoch {epoch} would start at {offset}, before epoch {last_epoch} ({last_start})"
            );
        }
        self.entries.push((epoch, offset));
        true
    }

    /// For a log ending at `leo`: the largest epoch ≤ `epoch` in the cache
    /// and the offset where it ends (start of the next epoch, or `leo`).
    /// When every entry is newer than `epoch`: `(0, start of the first)`.
    pub fn end_offset_for(&self, epoch: u64, leo: u64) -> (u64, u64) {
        let i = self.entries.partition_point(|e| e.0 <= epoch);
        if i == 0 {
            return (0, self.entries.first().map_or(leo, |e| e.1.min(leo)));
        }
        let found = self.entries[i - 1].0;
        let end = self.entries.get(i).map_or(leo, |e| e.1);
        (found, end.min(leo))
    }

    /// The log was truncated to end at `offset`: entries starting at or
    /// after it describe records that are gone. Returns the removed epochs.
    pub fn truncate_from(&mut self, offset: u64) -> Vec<u64> {
        let keep = self.entries.partition_point(|e| e.1 < offset);
        self.entries.drain(keep..).map(|e| e.0).collect()
    }

    /// The log now starts at `offset`: entries wholly below it go and the
    /// first kept entry starts no earlier than `offset`. Returns the
    /// removed epochs.
    pub fn truncate_before(&mut self, offset: u64) -> Vec<u64> {
        // The last entry starting at or below `offset` still covers it.
        let covering = self.entries.partition_point(|e| e.1 <= offset);
        if covering == 0 {
            return Vec::new();
        }
        let removed: Vec<u64> = self.entries.drain(..covering - 1).map(|e| e.0).collect();
        self.entries[0].1 = offset;
        self.check();
        removed
    }

    pub fn clear(&mut self) -> Vec<u64> {
        self.entries.drain(..).map(|e| e.0).collect()
    }
}

/// Where a follower whose log ends at `leo` truncates after the leader said
/// its log leaves epoch `leader_epoch` at `leader_end` (KIP-279): at the
/// smaller of the leader's end and the follower's own end of that epoch.
pub fn truncation_offset(follower: &EpochCache, leo: u64, leader_epoch: u64, leader_end: u64) -> u64 {
    let (_, own_end) = follower.end_offset_for(leader_epoch, leo);
    leader_end.min(own_end).min(leo)
}

/// The leader's check of a follower fetch at `fetch_offset` whose last
/// record has epoch `last_fetched_epoch`: `Some((epoch, end))` when the
/// follower's log diverges from the leader's (whose log ends at `leo`).
pub fn divergence(leader: &EpochCache, leo: u64, fetch_offset: u64, last_fetched_epoch: u64) -> Option<(u64, u64)> {
    if last_fetched_epoch == 0 {
        // An empty follower log: nothing can diverge, only be missing.
        return (fetch_offset > leo).then_some((0, leo));
    }
    let (epoch, end) = leader.end_offset_for(last_fetched_epoch, leo);
    (epoch != last_fetched_epoch || end < fetch_offset).then_some((epoch, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(e: &[(u64, u64)]) -> EpochCache {
        EpochCache::from_entries(e.to_vec())
    }

    #[test]
    fn end_offsets_per_epoch() {
        let c = cache(&[(1, 0), (3, 10), (4, 15)]);
        assert_eq!(c.end_offset_for(1, 20), (1, 10));
        assert_eq!(c.end_offset_for(2, 20), (1, 10));
        assert_eq!(c.end_offset_for(3, 20), (3, 15));
        assert_eq!(c.end_offset_for(4, 20), (4, 20));
        assert_eq!(c.end_offset_for(9, 20), (4, 20));
        assert_eq!(cache(&[(2, 5)]).end_offset_for(1, 9), (0, 5));
        assert_eq!(EpochCache::default().end_offset_for(3, 7), (0, 7));
    }

    #[test]
    fn assign_ignores_old_epochs_and_truncation_drops_entries() {
        let mut c = EpochCache::default();
        assert!(c.assign(1, 0));
        assert!(!c.assign(1, 5));
        assert!(c.assign(2, 5));
        assert!(c.assign(4, 9));
        assert_eq!(c.truncate_from(9), vec![4]);
        assert_eq!(c.latest_epoch(), 2);
        assert_eq!(c.truncate_from(3), vec![2]);
        assert_eq!(c.entries(), &[(1, 0)]);
        let mut c = cache(&[(1, 0), (2, 5), (3, 8)]);
        assert_eq!(c.truncate_before(6), vec![1]);
        assert_eq!(c.entries(), &[(2, 6), (3, 8)]);
        assert_eq!(c.truncate_before(8), vec![2]);
        assert_eq!(c.entries(), &[(3, 8)]);
    }

    /// Replays a divergence dialogue; returns the follower's final log end.
    fn reconcile(leader: &EpochCache, leader_leo: u64, follower: &mut EpochCache, mut leo: u64) -> u64 {
        for _ in 0..10 {
            match divergence(leader, leader_leo, leo, follower.latest_epoch()) {
                None => return leo,
                Some((e, end)) => {
                    leo = truncation_offset(follower, leo, e, end);
                    follower.truncate_from(leo);
                }
            }
        }
        panic!("divergence dialogue did not terminate");
    }

    #[test]
    fn kip_101_scenario_truncates_where_logs_diverge_not_at_hw() {
        // KIP-101 "scenario 2": A and B both wrote epoch 1 up to different
        // offsets; B becomes leader in epoch 2 and appends. A must drop its
        // epoch-1 tail past B's and keep what they share.
        let leader = cache(&[(1, 0), (2, 1)]);
        let mut a = cache(&[(1, 0)]);
        assert_eq!(reconcile(&leader, 3, &mut a, 2), 1);
        assert_eq!(a.entries(), &[(1, 0)]);
    }

    #[test]
    fn deep_divergence_takes_several_rounds() {
        // Follower wrote epochs 1 and 3; the leader knows 1 (to 5), 2 and 4.
        // Records 5.. of the follower are epoch 1, the leader's are epoch 2.
        let leader = cache(&[(1, 0), (2, 5), (4, 8)]);
        let mut f = cache(&[(1, 0), (3, 10)]);
        assert_eq!(reconcile(&leader, 12, &mut f, 12), 5);
        assert_eq!(f.entries(), &[(1, 0)]);
    }

    #[test]
    fn a_consistent_prefix_is_not_truncated() {
        let leader = cache(&[(1, 0), (2, 5)]);
        let mut f = cache(&[(1, 0), (2, 5)]);
        assert_eq!(reconcile(&leader, 9, &mut f, 7), 7);
        let mut behind = cache(&[(1, 0)]);
        assert_eq!(reconcile(&leader, 9, &mut behind, 5), 5);
        let mut empty = EpochCache::default();
        assert_eq!(reconcile(&leader, 9, &mut empty, 0), 0);
    }

    #[test]
    fn an_empty_epoch_left_by_a_former_leader_is_dropped() {
        // The follower led epoch 3 without writing: its cache says (3, 6) at
        // log end 6. The new leader never saw epoch 3.
        let leader = cache(&[(1, 0), (4, 6)]);
        let mut f = cache(&[(1, 0), (3, 6)]);
        assert_eq!(reconcile(&leader, 8, &mut f, 6), 6);
        assert_eq!(f.entries(), &[(1, 0)]);
    }
}
