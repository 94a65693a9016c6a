//! Byte caps for batches sent to peers.
//!
//! Every peer message must stay under [`MAX_PEER_MESSAGE_BYTES`]: tonic
//! refuses to encode or decode a larger one, which fails the RPC or breaks
//! the stream — and since the sender retries the same batch, for good
//! (issue 19: hints that never drain, anti-entropy that never converges).
//! Counting items is not enough when one value may be up to
//! `--max-value-bytes` (64 MiB at most): 512 cells of 512 KiB are 256 MiB.
//! So batches on peer paths are cut by count *and* by bytes
//! ([`ByteBudget`], [`chunks_within`]). A single item over the byte cap
//! still goes alone: values are capped well under the peer message limit.
//!
//! Reads are different: a `ReadCells` request is small but its answer holds
//! one cell per key, of sizes unknown to the asker. [`read_keys_per_request`]
//! bounds the keys so that the answer fits even if every value has the
//! largest size the cluster accepts.

use super::config::{MAX_CONFIGURABLE_VALUE_BYTES, MAX_KEY_BYTES};
use super::peers::MAX_PEER_MESSAGE_BYTES;

/// Protobuf framing of one cell in a peer message besides its key and
/// value (field tags, lengths, stamp, node id, origin): under 40 bytes.
pub const PEER_CELL_OVERHEAD_BYTES: usize = 64;

// A peer message of one cell of the largest configurable value fits.
const _: () = assert!(MAX_CONFIGURABLE_VALUE_BYTES + MAX_KEY_BYTES + PEER_CELL_OVERHEAD_BYTES < MAX_PEER_MESSAGE_BYTES);

/// Bytes one cell takes in a peer message.
pub fn cell_bytes(key_bytes: usize, value_bytes: usize) -> usize {
    key_bytes + value_bytes + PEER_CELL_OVERHEAD_BYTES
}

/// Counts items and bytes of a batch being filled, against both caps.
#[derive(Clone, Debug)]
pub struct ByteBudget {
    items_max: usize,
    bytes_max: usize,
    items: usize,
    bytes: usize,
}

impl ByteBudget {
    pub fn new(items_max: usize, bytes_max: usize) -> ByteBudget {
        assert!(items_max > 0, "a batch holds at least one item");
        assert!(
            bytes_max > 0 && bytes_max < MAX_PEER_MESSAGE_BYTES,
            "batch cap of {bytes_max} bytes not under the peer message limit"
        );
        ByteBudget { items_max, bytes_max, items: 0, bytes: 0 }
    }

    /// Whether an item of `item_bytes` may join: the first always may (it
    /// goes alone if it is larger than the cap), later ones while both caps
    /// hold with it.
    pub fn admits(&self, item_bytes: usize) -> bool {
        self.items == 0 || (self.items < self.items_max && self.bytes.saturating_add(item_bytes) <= self.bytes_max)
    }

    pub fn add(&mut self, item_bytes: usize) {
        assert!(self.admits(item_bytes), "item of {item_bytes} bytes added over the budget");
        self.items += 1;
        self.bytes = self.bytes.saturating_add(item_bytes);
    }

    /// Whether no further item can join, whatever its size.
    pub fn is_full(&self) -> bool {
        self.items >= self.items_max || self.bytes >= self.bytes_max
    }

    pub fn items(&self) -> usize {
        self.items
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// Splits `items` into consecutive, non-empty chunks of at most
/// `items_max` items and `bytes_max` bytes each (by `size`); an item larger
/// than `bytes_max` is a chunk of its own.
pub fn chunks_within<T>(items: &[T], items_max: usize, bytes_max: usize, size: impl Fn(&T) -> usize) -> Vec<&[T]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut budget = ByteBudget::new(items_max, bytes_max);
    for (i, item) in items.iter().enumerate() {
        let bytes = size(item);
        if !budget.admits(bytes) {
            out.push(&items[start..i]);
            start = i;
            budget = ByteBudget::new(items_max, bytes_max);
        }
        budget.add(bytes);
    }
    if start < items.len() {
        out.push(&items[start..]);
    }
    out
}

/// Keys one `ReadCells` request may name so that its answer stays within
/// `reply_bytes_max` even if every value is `max_value_bytes` long; at
/// least 1 and at most `keys_max`.
pub fn read_keys_per_request(max_value_bytes: usize, reply_bytes_max: usize, keys_max: usize) -> usize {
    assert!(keys_max > 0, "a read names at least one key");
    assert!(
        reply_bytes_max < MAX_PEER_MESSAGE_BYTES,
        "read answer cap of {reply_bytes_max} bytes not under the peer message limit"
    );
    (reply_bytes_max / cell_bytes(MAX_KEY_BYTES, max_value_bytes)).clamp(1, keys_max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_respect_both_caps_and_keep_order() {
        let sizes = [3usize, 3, 3, 10, 1, 1, 1, 1, 1];
        let chunks = chunks_within(&sizes, 4, 6, |&s| s);
        assert_eq!(chunks, vec![&[3, 3][..], &[3][..], &[10][..], &[1, 1, 1, 1][..], &[1][..]]);
        assert_eq!(chunks.concat(), sizes.to_vec());
    }

    #[test]
    fn an_oversized_item_goes_alone() {
        let sizes = [100usize, 100];
        assert_eq!(chunks_within(&sizes, 10, 50, |&s| s), vec![&[100][..], &[100][..]]);
        assert!(chunks_within::<usize>(&[], 10, 50, |&s| s).is_empty());
    }

    #[test]
    fn issue_19_batches_fit_the_peer_message_limit() {
        // 600 values of 512 KiB in batches of up to 512 (the old count cap):
        // each chunk must be under the peer message limit.
        let value_bytes = 512 * 1024;
        let cells = vec![cell_bytes(8, value_bytes); 600];
        let cap = 16 * 1024 * 1024;
        let chunks = chunks_within(&cells, 512, cap, |&s| s);
        assert_eq!(chunks.iter().map(|c| c.len()).sum::<usize>(), 600);
        for c in &chunks {
            assert!(c.iter().sum::<usize>() <= cap);
        }
    }

    #[test]
    fn budget_admits_the_first_item_whatever_its_size() {
        let mut b = ByteBudget::new(2, 10);
        assert!(b.admits(1_000));
        b.add(1_000);
        assert!(b.is_full() && !b.admits(0));
        let mut b = ByteBudget::new(2, 10);
        b.add(4);
        assert!(b.admits(6) && !b.admits(7));
        b.add(6);
        assert!(b.is_full());
        assert_eq!((b.items(), b.bytes()), (2, 10));
    }

    #[test]
    fn read_keys_fit_the_answer_at_the_largest_value() {
        let cap = 32 * 1024 * 1024;
        let keys = read_keys_per_request(1024 * 1024, cap, 512);
        assert!(keys > 1 && keys * cell_bytes(MAX_KEY_BYTES, 1024 * 1024) <= cap);
        assert_eq!(read_keys_per_request(100, cap, 512), 512);
        // One key at most even when a single value is over the cap.
        assert_eq!(read_keys_per_request(MAX_CONFIGURABLE_VALUE_BYTES, cap, 512), 1);
    }
}
