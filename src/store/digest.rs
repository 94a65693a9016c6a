//! Per-bucket digests of a node's cells, for anti-entropy.
//!
//! Keys are spread over [`BUCKETS`] buckets by hash. A bucket's digest is the
//! XOR of `h(key, version, tombstone)` over its cells, so it can be kept up to
//! date in O(1) per write (XOR out the old cell, XOR in the new one) and two
//! replicas hold the same cells in a bucket iff (up to 64-bit collisions)
//! their digests are equal. Anti-entropy exchanges the digest vector first
//! and lists keys only for the buckets that differ.
//!
//! Digests are in memory only: built by one scan at start-up, then updated by
//! the writer thread after each batch is durable.

use std::sync::atomic::{AtomicU64, Ordering};

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use crate::clock::Version;

/// Number of anti-entropy buckets. A power of two; both sides of an exchange
/// must agree (the request carries it).
pub const BUCKETS: u32 = 1024;

pub fn bucket_of(key: &[u8]) -> u32 {
    (xxh3_64(key) % BUCKETS as u64) as u32
}

/// The contribution of one cell to its bucket's digest.
pub fn entry_hash(key: &[u8], version: Version, tombstone: bool) -> u64 {
    // rmw = 0 (every plain write) leaves the seed as it was before rmw existed.
    let mut seed =
        version.hlc ^ ((version.node_id as u64) << 32).rotate_left(17) ^ (version.rmw as u64).rotate_left(47);
    if tombstone {
        seed = !seed;
    }
    xxh3_64_with_seed(key, seed)
}

pub struct Digests {
    buckets: Vec<AtomicU64>,
}

impl Default for Digests {
    fn default() -> Self {
        Digests { buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect() }
    }
}

impl Digests {
    /// Records that `key` changed from `old` to `new` (each `(version, tombstone)`).
    pub fn update(&self, key: &[u8], old: Option<(Version, bool)>, new: Option<(Version, bool)>) {
        let mut delta = 0;
        if let Some((v, t)) = old {
            delta ^= entry_hash(key, v, t);
        }
        if let Some((v, t)) = new {
            delta ^= entry_hash(key, v, t);
        }
        if delta != 0 {
            self.buckets[bucket_of(key) as usize].fetch_xor(delta, Ordering::Relaxed);
        }
    }

    pub fn snapshot(&self) -> Vec<u64> {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_depends_on_content_not_order() {
        let a = Digests::default();
        let b = Digests::default();
        let cells = [(b"k1".as_ref(), Version::new(5, 1)), (b"k2", Version::new(6, 2)), (b"k3", Version::new(7, 1))];
        for (k, v) in cells {
            a.update(k, None, Some((v, false)));
        }
        for (k, v) in cells.iter().rev() {
            b.update(k, None, Some((*v, false)));
        }
        assert_eq!(a.snapshot(), b.snapshot());
        // A newer version of one key changes exactly its bucket.
        b.update(b"k2", Some((Version::new(6, 2), false)), Some((Version::new(9, 3), false)));
        let diff: Vec<usize> = (0..BUCKETS as usize).filter(|&i| a.snapshot()[i] != b.snapshot()[i]).collect();
        assert_eq!(diff, vec![bucket_of(b"k2") as usize]);
        // A tombstone at the same version is a different entry.
        assert_ne!(entry_hash(b"k", Version::new(1, 1), false), entry_hash(b"k", Version::new(1, 1), true));
    }
}
