//! The tombstone GC decision, without I/O: which tombstones are old
//! enough to consider, and which of those every replica covers.
//!
//! See the module docs of `crate::tombstone_gc` for why the rule is safe.

use bytes::Bytes;

use crate::clock::{hlc_physical_ms, Version};

/// Tombstones checked with the peers and proposed for purge per pass, at most.
pub const GC_BATCH_KEYS: usize = 256;
/// Cells one pass scans at most (the next pass resumes after the last).
pub const GC_SCAN_CELLS_MAX: usize = 10_000;
/// Shortest and longest time between two passes.
pub const GC_PASS_INTERVAL_MIN_MS: u64 = 200;
pub const GC_PASS_INTERVAL_MAX_MS: u64 = 10_000;
/// Default `--gc-grace`: one day, Cassandra's `gc_grace_seconds` is ten.
pub const DEFAULT_GC_GRACE_MS: u64 = 24 * 3_600_000;

/// Time between passes: a quarter of the grace period, within
/// [`GC_PASS_INTERVAL_MIN_MS`, `GC_PASS_INTERVAL_MAX_MS`].
pub fn pass_interval_ms(grace_ms: u64) -> u64 {
    (grace_ms / 4).clamp(GC_PASS_INTERVAL_MIN_MS, GC_PASS_INTERVAL_MAX_MS)
}

/// Condition 1: the tombstone was written more than `grace_ms` before
/// `now_ms` (this node's wall clock, ms since the Unix epoch), judged by
/// its version's physical time. A version from a clock ahead of ours is
/// young until our clock passes it by the grace period.
pub fn past_grace(version: Version, now_ms: i64, grace_ms: u64) -> bool {
    hlc_physical_ms(version.hlc).saturating_add(grace_ms.min(i64::MAX as u64) as i64) < now_ms
}

/// One pass's decision.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Tombstones to purge (propose as one `Purge` command).
    pub purge: Vec<(Bytes, Version)>,
    /// Tombstones past the grace period that some replica does not cover.
    pub blocked: usize,
}

/// Condition 2 over the answers of every replica: `local` is this node's
/// own `covers` per candidate, `peers` one entry per other replica (`None`:
/// it did not answer, so it covers nothing). With `skip_replica_check`
/// (TEST ONLY, `--unsafe-gc-skip-replica-check`) condition 2 is ignored:
/// the negative control that shows a deleted value coming back.
pub fn plan(
    candidates: &[(Bytes, Version)],
    local: &[bool],
    peers: &[Option<Vec<bool>>],
    skip_replica_check: bool,
) -> Plan {
    assert_eq!(local.len(), candidates.len(), "one local answer per candidate");
    let mut out = Plan::default();
    for (i, c) in candidates.iter().enumerate() {
        let covered = local[i]
            && peers.iter().all(|p| match p {
                Some(answers) => answers.get(i).copied().unwrap_or(false),
                None => false,
            });
        if covered || skip_replica_check {
            out.purge.push(c.clone());
        } else {
            out.blocked += 1;
        }
    }
    assert_eq!(out.purge.len() + out.blocked, candidates.len());
    out
}

#[cfg(test)]
mod tests {
    // The purge rule of docs/consistency.md "Tombstone GC": old enough AND
    // covered by every replica; a silent replica blocks.
    use super::*;
    use crate::clock::hlc_from_physical_ms;

    fn at_ms(ms: i64) -> Version {
        Version::new(hlc_from_physical_ms(ms), 1)
    }

    fn cands(n: usize) -> Vec<(Bytes, Version)> {
        (0..n).map(|i| (Bytes::from(format!("k{i}")), at_ms(1_000 + i as i64))).collect()
    }

    #[test]
    fn only_tombstones_older_than_the_grace_period_are_considered() {
        let t = 1_800_000_000_000; // 2027, after the HLC epoch
        assert!(!past_grace(at_ms(t), t, 2_000));
        assert!(!past_grace(at_ms(t), t + 2_000, 2_000), "exactly the grace period is not past it");
        assert!(past_grace(at_ms(t), t + 2_001, 2_000));
        // A stamp from a clock ahead of ours stays young.
        assert!(!past_grace(at_ms(t + 60_000), t + 3_000, 2_000));
        // A grace beyond i64 never passes.
        assert!(!past_grace(at_ms(t), t + 10_000, u64::MAX));
    }

    #[test]
    fn a_tombstone_is_purged_only_when_every_replica_covers_it() {
        let c = cands(3);
        let p = plan(&c, &[true, true, true], &[Some(vec![true, false, true]), Some(vec![true, true, true])], false);
        assert_eq!(p.purge, vec![c[0].clone(), c[2].clone()]);
        assert_eq!(p.blocked, 1);
        // This node's own hints or cell can block too.
        let p = plan(&c, &[false, true, true], &[Some(vec![true; 3]), Some(vec![true; 3])], false);
        assert_eq!(p.purge, vec![c[1].clone(), c[2].clone()]);
    }

    #[test]
    fn a_replica_that_does_not_answer_blocks_every_purge() {
        let c = cands(2);
        let p = plan(&c, &[true, true], &[Some(vec![true, true]), None], false);
        assert_eq!(p, Plan { purge: vec![], blocked: 2 });
        // A short answer covers only what it names.
        let p = plan(&c, &[true, true], &[Some(vec![true])], false);
        assert_eq!(p.purge, vec![c[0].clone()]);
    }

    #[test]
    fn the_unsafe_switch_ignores_the_replicas() {
        let c = cands(2);
        let p = plan(&c, &[false, true], &[None], true);
        assert_eq!(p.purge, c);
        assert_eq!(p.blocked, 0);
    }

    #[test]
    fn passes_run_a_quarter_grace_apart_within_bounds() {
        assert_eq!(pass_interval_ms(2_000), 500);
        assert_eq!(pass_interval_ms(100), GC_PASS_INTERVAL_MIN_MS);
        assert_eq!(pass_interval_ms(DEFAULT_GC_GRACE_MS), GC_PASS_INTERVAL_MAX_MS);
    }
}
