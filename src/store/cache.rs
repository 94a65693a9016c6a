//! The cell cache: the current cell of recently written keys, in memory.
//!
//! Why it exists: every quorum operation reads the key's cell on all three
//! replicas, and eventual gets read it on the coordinator. A RocksDB get of
//! a hot key walks the memtable's skip list (every version of the key is a
//! node there until the flush); profiled under quorum sets at 32 clients
//! that walk was 12–13 % of a node's CPU. A hash lookup replaces it.
//!
//! What it promises: an entry is the key's cell as last committed (`None`:
//! known absent), never older than what a RocksDB read could return after
//! the writer answered the write. That holds because only the writer thread
//! (the single writer of cells, see `writer`) fills or changes entries, and
//! it does so after the batch is in RocksDB and before it answers the
//! batch's jobs. Readers never insert what they read: a reader could read
//! an old cell, lose the race to the writer, and leave the old cell behind.
//!
//! Reads stay monotonic: while a batch is between RocksDB and the cache, a
//! cached key still shows its previous cell and an uncached key is read
//! from RocksDB, where the new cell already is; a key's entry is replaced or
//! dropped, never put back to an older cell.
//!
//! Bounded by [`MAX_CELL_CACHE_BYTES`] (estimated): a shard that would grow
//! past its share is emptied, as the writer's cache was before.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;
use xxhash_rust::xxh3::{xxh3_64, Xxh3DefaultBuilder};

use super::cell::Cell;

/// Estimated bytes of all entries at most.
pub const MAX_CELL_CACHE_BYTES: usize = 64 * 1024 * 1024;
/// Independently locked parts; readers on different shards never wait for
/// each other or for the writer.
pub const CELL_CACHE_SHARDS: usize = 16;
/// Estimated bookkeeping per entry on top of key and value bytes.
const ENTRY_OVERHEAD_BYTES: usize = 96;

#[derive(Default)]
struct Shard {
    cells: HashMap<Bytes, Option<Cell>, Xxh3DefaultBuilder>,
    bytes: usize,
}

pub struct CellCache {
    shards: Vec<Mutex<Shard>>,
    max_shard_bytes: usize,
}

impl Default for CellCache {
    fn default() -> Self {
        CellCache::with_max_bytes(MAX_CELL_CACHE_BYTES)
    }
}

fn entry_bytes(key: &[u8], cell: &Option<Cell>) -> usize {
    key.len() + cell.as_ref().and_then(|c| c.value.as_ref()).map_or(0, |v| v.len()) + ENTRY_OVERHEAD_BYTES
}

impl CellCache {
    pub fn with_max_bytes(max_bytes: usize) -> Self {
        CellCache {
            shards: (0..CELL_CACHE_SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            max_shard_bytes: (max_bytes / CELL_CACHE_SHARDS).max(1),
        }
    }

    fn shard(&self, key: &[u8]) -> &Mutex<Shard> {
        &self.shards[(xxh3_64(key) % CELL_CACHE_SHARDS as u64) as usize]
    }

    /// The key's cached cell: `Some(None)` when it is known absent, `None`
    /// when the key is not cached.
    pub fn get(&self, key: &[u8]) -> Option<Option<Cell>> {
        self.shard(key).lock().expect("cell cache lock").cells.get(key).cloned()
    }

    /// Records the key's current cell. Only the writer calls this, after
    /// the cell is in RocksDB (or read from it by the writer itself).
    pub(super) fn insert(&self, key: Bytes, cell: Option<Cell>) {
        let add = entry_bytes(&key, &cell);
        let mut shard = self.shard(&key).lock().expect("cell cache lock");
        if let Some(old) = shard.cells.remove(&key) {
            shard.bytes -= entry_bytes(&key, &old);
        }
        // Left out (read from RocksDB instead) when larger than a shard.
        if add > self.max_shard_bytes {
            return;
        }
        if shard.bytes + add > self.max_shard_bytes {
            shard.cells.clear();
            shard.bytes = 0;
        }
        shard.bytes += add;
        shard.cells.insert(key, cell);
        assert!(shard.bytes <= self.max_shard_bytes, "cell cache shard over its bound");
    }

    /// Forgets everything (after a failed write, when what is on disk is
    /// unknown).
    pub(super) fn clear(&self) {
        for s in &self.shards {
            let mut s = s.lock().expect("cell cache lock");
            s.cells.clear();
            s.bytes = 0;
        }
    }

    /// Estimated bytes held (what the bound is checked against).
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.shards.iter().map(|s| s.lock().expect("cell cache lock").bytes).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Version;
    use crate::level::Level;

    fn cell(v: &'static str, hlc: u64) -> Option<Cell> {
        Some(Cell::value(Bytes::from_static(v.as_bytes()), Version::new(hlc, 1), Level::Quorum))
    }

    #[test]
    fn known_absent_differs_from_not_cached() {
        let c = CellCache::default();
        assert_eq!(c.get(b"k"), None);
        c.insert(Bytes::from_static(b"k"), None);
        assert_eq!(c.get(b"k"), Some(None));
        c.insert(Bytes::from_static(b"k"), cell("a", 1));
        assert_eq!(c.get(b"k"), Some(cell("a", 1)));
    }

    #[test]
    fn stays_within_its_byte_bound() {
        let max = CELL_CACHE_SHARDS * 4 * (ENTRY_OVERHEAD_BYTES + 8);
        let c = CellCache::with_max_bytes(max);
        for i in 0..10_000u32 {
            c.insert(Bytes::from(format!("k{i:07}")), cell("v", u64::from(i) + 1));
            assert!(c.bytes() <= max, "{} bytes cached, bound {max}", c.bytes());
        }
        // The last key written is always there.
        assert_eq!(c.get(b"k0009999"), Some(cell("v", 10_000)));
    }

    #[test]
    fn an_entry_larger_than_a_shard_is_not_kept() {
        let c = CellCache::with_max_bytes(CELL_CACHE_SHARDS * 1024);
        c.insert(Bytes::from_static(b"k"), cell("small", 1));
        let big = Some(Cell::value(Bytes::from(vec![7u8; 4096]), Version::new(2, 1), Level::Quorum));
        c.insert(Bytes::from_static(b"k"), big);
        assert_eq!(c.get(b"k"), None, "the older cell must not stay behind");
        assert_eq!(c.bytes(), 0);
    }

    #[test]
    fn replacing_an_entry_does_not_leak_its_bytes() {
        let c = CellCache::default();
        for i in 1..1000u64 {
            c.insert(Bytes::from_static(b"k"), cell("value", i));
        }
        assert_eq!(c.bytes(), entry_bytes(b"k", &cell("value", 1)));
        c.clear();
        assert_eq!((c.bytes(), c.get(b"k")), (0, None));
    }
}
