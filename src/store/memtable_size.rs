//! The memtable size of the cells and state machine column families,
//! chosen from how large the entries written to them lately were.
//!
//! Why: one constant size cannot serve both workloads capkv sees.
//! Small values rewritten over and over (counters, sessions, the 128 B
//! benchmark keys) want a small memtable: every version is a skip-list node
//! until the flush, so the number of entries sets the depth of the list and
//! the cache misses of every insert and get (2 MiB beat 8 MiB by 5–30 %).
//! Large values want a large one: at 2 MiB a memtable of 4 KiB values is
//! flushed every ~500 writes into a tiny file that compaction then rewrites;
//! 16 MiB gave 23–41 % more sets of 4 KiB values and cost about 4 % to hot
//! 128 B sets (docs/performance.md, "1 M keys of 4 KiB").
//!
//! So the size follows the entry count, not the bytes: about
//! [`ENTRIES_PER_MEMTABLE`] entries of the mean size written in the last
//! window, rounded down to a power of two within
//! [`MIN_MEMTABLE_BYTES`]..=[`MAX_MEMTABLE_BYTES`]. Entries under 512 B
//! (key, value and header) keep exactly the old 2 MiB; larger ones make it
//! grow.
//!
//! Promises: the size stays within the bounds and is looked at only after a
//! full window of [`WINDOW_ENTRIES`] entries; it grows as soon as the target
//! is a power of two above it (at most three steps, 2 → 16 MiB), and
//! shrinks only when the target fell below three quarters of it and the
//! last change is [`MIN_CHANGE_INTERVAL_MS`] old, so a mean near a
//! boundary does not flip it back and forth.
//!
//! Pure: the writer reports what it wrote and the time, and applies the
//! sizes it is handed (RocksDB's `SetOptions`).

use std::time::{Duration, Instant};

use super::keys::Cf;

/// Entries one memtable should hold (about what 2 MiB holds of 128 B cells).
pub const ENTRIES_PER_MEMTABLE: usize = 8192;
/// The smallest size, and the one a column family opens with: the store's
/// size for small, often rewritten keys.
pub const MIN_MEMTABLE_BYTES: usize = super::WRITE_BUFFER_BYTES;
/// The largest size: with two memtables per family (one flushing) the two
/// sized families hold at most 64 MiB per node.
pub const MAX_MEMTABLE_BYTES: usize = 16 * 1024 * 1024;
/// Entries written between two looks at their mean size.
pub const WINDOW_ENTRIES: u64 = 4096;
/// A shrink waits this long after the last change (each `SetOptions`
/// writes a new RocksDB OPTIONS file; growing is bounded by the steps).
pub const MIN_CHANGE_INTERVAL_MS: u64 = 10_000;

/// The column families whose memtable is sized here.
pub const SIZED: [Cf; 2] = [Cf::Cells, Cf::Rsm];

/// [`ENTRIES_PER_MEMTABLE`] entries of `mean_entry_bytes`, unrounded.
fn raw_bytes(mean_entry_bytes: u64) -> usize {
    (mean_entry_bytes as usize).saturating_mul(ENTRIES_PER_MEMTABLE)
}

/// The size for entries of `mean_entry_bytes`, before hysteresis.
pub fn target_bytes(mean_entry_bytes: u64) -> usize {
    let raw = raw_bytes(mean_entry_bytes);
    let pow2 = if raw == 0 { 0 } else { 1usize << (usize::BITS - 1 - raw.leading_zeros()) };
    pow2.clamp(MIN_MEMTABLE_BYTES, MAX_MEMTABLE_BYTES)
}

/// One column family's size and the window of entries since the last look.
#[derive(Debug)]
pub struct Sizer {
    current_bytes: usize,
    window_entries: u64,
    window_bytes: u64,
    last_change: Option<Instant>,
}

impl Default for Sizer {
    fn default() -> Sizer {
        Sizer { current_bytes: MIN_MEMTABLE_BYTES, window_entries: 0, window_bytes: 0, last_change: None }
    }
}

impl Sizer {
    pub fn current_bytes(&self) -> usize {
        self.current_bytes
    }

    /// `entries` entries of `bytes` bytes in all were written.
    pub fn record(&mut self, entries: u64, bytes: u64) {
        self.window_entries = self.window_entries.saturating_add(entries);
        self.window_bytes = self.window_bytes.saturating_add(bytes);
    }

    /// The new size, when the window is full and it should change.
    pub fn decide(&mut self, now: Instant) -> Option<usize> {
        if self.window_entries < WINDOW_ENTRIES {
            return None;
        }
        let mean = self.window_bytes / self.window_entries;
        (self.window_entries, self.window_bytes) = (0, 0);
        let target = target_bytes(mean);
        let raw = raw_bytes(mean);
        let settled = self
            .last_change
            .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_millis(MIN_CHANGE_INTERVAL_MS));
        let change =
            target > self.current_bytes || (target < self.current_bytes && raw < self.current_bytes / 4 * 3 && settled);
        if !change {
            return None;
        }
        self.current_bytes = target;
        self.last_change = Some(now);
        assert!((MIN_MEMTABLE_BYTES..=MAX_MEMTABLE_BYTES).contains(&self.current_bytes));
        Some(target)
    }

    /// RocksDB refused the size [`Sizer::decide`] chose: the family still
    /// has `previous_bytes`, and that is what is reported. The next full
    /// window decides again.
    pub fn refused(&mut self, previous_bytes: usize) {
        assert!((MIN_MEMTABLE_BYTES..=MAX_MEMTABLE_BYTES).contains(&previous_bytes));
        self.current_bytes = previous_bytes;
    }
}

/// The sizers of [`SIZED`], shared by the writer (which feeds them) and the
/// store (which reports their sizes in metrics).
#[derive(Debug, Default)]
pub struct MemtableSizes {
    sizers: [Sizer; SIZED.len()],
}

impl MemtableSizes {
    pub fn record(&mut self, cf: Cf, entries: u64, bytes: u64) {
        if let Some(i) = SIZED.iter().position(|&c| c == cf) {
            self.sizers[i].record(entries, bytes);
        }
    }

    /// Families whose size should change now: `(family, old size, new size)`.
    pub fn decide(&mut self, now: Instant) -> Vec<(Cf, usize, usize)> {
        SIZED
            .iter()
            .zip(&mut self.sizers)
            .filter_map(|(&c, s)| {
                let old = s.current_bytes();
                Some((c, old, s.decide(now)?))
            })
            .collect()
    }

    /// See [`Sizer::refused`].
    pub fn refused(&mut self, cf: Cf, previous_bytes: usize) {
        if let Some(i) = SIZED.iter().position(|&c| c == cf) {
            self.sizers[i].refused(previous_bytes);
        }
    }

    /// (family, memtable size in bytes) of each sized family.
    pub fn current(&self) -> Vec<(Cf, usize)> {
        SIZED.iter().zip(&self.sizers).map(|(&c, s)| (c, s.current_bytes())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;

    fn window(s: &mut Sizer, entry_bytes: u64, now: Instant) -> Option<usize> {
        s.record(WINDOW_ENTRIES, WINDOW_ENTRIES * entry_bytes);
        s.decide(now)
    }

    #[test]
    fn the_target_follows_the_entry_size_in_powers_of_two_within_bounds() {
        assert_eq!(target_bytes(0), MIN_MEMTABLE_BYTES);
        // A 128 B value under a 20 B key with its 14 B cell header.
        assert_eq!(target_bytes(162), 2 * MIB);
        assert_eq!(target_bytes(300), 2 * MIB);
        assert_eq!(target_bytes(512), 4 * MIB);
        assert_eq!(target_bytes(1100), 8 * MIB);
        assert_eq!(target_bytes(4096 + 34), 16 * MIB);
        assert_eq!(target_bytes(u64::MAX), MAX_MEMTABLE_BYTES);
    }

    #[test]
    fn small_entries_keep_the_opening_size_and_large_ones_grow_it_after_one_window() {
        let t0 = Instant::now();
        let mut s = Sizer::default();
        assert_eq!(s.current_bytes(), MIN_MEMTABLE_BYTES);
        assert_eq!(window(&mut s, 162, t0), None);
        assert_eq!(s.current_bytes(), 2 * MIB);
        // Not before the window is full.
        s.record(WINDOW_ENTRIES - 1, (WINDOW_ENTRIES - 1) * 4130);
        assert_eq!(s.decide(t0), None);
        s.record(1, 4130);
        assert_eq!(s.decide(t0), Some(16 * MIB));
        assert_eq!(s.current_bytes(), 16 * MIB);
    }

    #[test]
    fn it_grows_at_once_and_shrinks_only_well_below_and_not_right_after_a_change() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut s = Sizer::default();
        assert_eq!(window(&mut s, 600, at(0)), Some(4 * MIB));
        // Small entries right after: too soon to shrink.
        assert_eq!(window(&mut s, 100, at(MIN_CHANGE_INTERVAL_MS - 1)), None);
        // Just under 4 MiB worth (target 2 MiB, but above three quarters
        // of 4 MiB): kept, so a mean near the boundary does not flip it.
        assert_eq!(window(&mut s, 480, at(MIN_CHANGE_INTERVAL_MS)), None);
        assert_eq!(s.current_bytes(), 4 * MIB);
        // Well below: shrinks, straight to the target.
        assert_eq!(window(&mut s, 100, at(MIN_CHANGE_INTERVAL_MS + 1)), Some(2 * MIB));
        // Growing does not wait, step by step or straight to the target.
        assert_eq!(window(&mut s, 600, at(MIN_CHANGE_INTERVAL_MS + 2)), Some(4 * MIB));
        assert_eq!(window(&mut s, 4130, at(MIN_CHANGE_INTERVAL_MS + 3)), Some(16 * MIB));
        assert_eq!(window(&mut s, 4130, at(MIN_CHANGE_INTERVAL_MS + 4)), None);
    }

    #[test]
    fn only_the_sized_families_are_tracked() {
        let t0 = Instant::now();
        let mut m = MemtableSizes::default();
        m.record(Cf::RaftLog, WINDOW_ENTRIES, WINDOW_ENTRIES * 4096);
        m.record(Cf::Rsm, WINDOW_ENTRIES, WINDOW_ENTRIES * 4096);
        m.record(Cf::Cells, WINDOW_ENTRIES, WINDOW_ENTRIES * 100);
        assert_eq!(m.decide(t0), vec![(Cf::Rsm, 2 * MIB, 16 * MIB)]);
        assert_eq!(m.current(), vec![(Cf::Cells, 2 * MIB), (Cf::Rsm, 16 * MIB)]);
    }

    #[test]
    fn a_refused_size_is_reported_as_the_old_one_and_tried_again_at_the_next_window() {
        let t0 = Instant::now();
        let mut m = MemtableSizes::default();
        m.record(Cf::Cells, WINDOW_ENTRIES, WINDOW_ENTRIES * 4130);
        assert_eq!(m.decide(t0), vec![(Cf::Cells, 2 * MIB, 16 * MIB)]);
        m.refused(Cf::Cells, 2 * MIB);
        assert_eq!(m.current(), vec![(Cf::Cells, 2 * MIB), (Cf::Rsm, 2 * MIB)]);
        m.record(Cf::Cells, WINDOW_ENTRIES, WINDOW_ENTRIES * 4130);
        assert_eq!(m.decide(t0), vec![(Cf::Cells, 2 * MIB, 16 * MIB)]);
    }
}
