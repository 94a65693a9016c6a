//! Which partition a keyed record goes to. Producers compute it and the
//! node checks nothing about it, so the function is part of the client
//! contract: do not change it.

/// The partition of a keyed record: xxh3-64 of the key modulo the
/// partition count.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    assert!(partitions > 0, "a topic has at least one partition");
    (xxhash_rust::xxh3::xxh3_64(key) % partitions as u64) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_pinned() {
        // Values of the contract as released: a change here reshuffles every
        // keyed topic, so producers built before and after would disagree.
        for (key, of_12, of_1000) in [("user-42", 5, 621), ("user-7", 10, 38), ("k0", 7, 83), ("orders", 3, 739)] {
            assert_eq!(partition_for_key(key.as_bytes(), 12), of_12, "{key}");
            assert_eq!(partition_for_key(key.as_bytes(), 1000), of_1000, "{key}");
        }
        assert_eq!(partition_for_key(b"anything", 1), 0);
    }
}
