//! The replica side of the quorum level: answer reads, keep writes by
//! last-writer-wins.
//!
//! Why it exists: ABD's correctness rests on one replica rule — a replica's
//! version for a key never goes down, and a written cell replaces the
//! current one only if it supersedes it ([`Cell::supersedes`]). This is that
//! rule over an in-memory map, used by the tests; the real node applies the
//! same rule to its RocksDB cells.
//!
//! What it promises: [`Replica::read`] returns the key's current cell;
//! [`Replica::write`] keeps the larger of the current and the written cell
//! and is idempotent, commutative and monotone (the merge is a join
//! semilattice, see `store::cell`); a write is acknowledged whether or not
//! it superseded.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::core::{Input, Message};
use crate::clock::NodeId;
use crate::store::Cell;

/// One replica's cells, by key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Replica {
    cells: BTreeMap<Bytes, Cell>,
}

impl Replica {
    pub fn new() -> Self {
        Replica::default()
    }

    /// The key's current cell (a tombstone for a deleted key).
    pub fn read(&self, key: &[u8]) -> Option<Cell> {
        self.cells.get(key).cloned()
    }

    /// Keeps `cell` if it supersedes the key's current cell; returns whether
    /// it did.
    pub fn write(&mut self, key: Bytes, cell: Cell) -> bool {
        match self.cells.get_mut(&key) {
            Some(current) if !cell.supersedes(current) => false,
            Some(current) => {
                *current = cell;
                true
            }
            None => {
                self.cells.insert(key, cell);
                true
            }
        }
    }

    /// Serves one coordinator message as replica `me`, returning the
    /// coordinator's input (what the shell's local path and the tests use).
    pub fn serve(&mut self, me: NodeId, msg: &Message) -> Input {
        match msg {
            Message::Read { key } => Input::ReadReply { from: me, cell: self.read(key) },
            Message::Write { key, cell } => {
                self.write(key.clone(), cell.clone());
                Input::WriteAck { from: me }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.cells.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }
}

#[cfg(test)]
mod tests {
    // Proves the replica rule ABD relies on (ABD §3, "a server keeps the
    // value with the largest tag"): a write never lowers a key's version,
    // ties of the clock part are broken by the writer id, and re-delivery
    // changes nothing.
    use super::*;
    use crate::clock::Version;
    use crate::level::Level;

    fn cell(value: &'static str, hlc: u64, node: NodeId) -> Cell {
        Cell::value(Bytes::from_static(value.as_bytes()), Version::new(hlc, node), Level::Quorum)
    }

    #[test]
    fn write_keeps_only_superseding_cells() {
        let mut r = Replica::new();
        let k = Bytes::from_static(b"k");
        assert_eq!(r.read(&k), None);
        assert!(r.write(k.clone(), cell("a", 5, 1)));
        assert!(!r.write(k.clone(), cell("old", 4, 9)), "an older version must not replace a newer one");
        assert_eq!(r.read(&k), Some(cell("a", 5, 1)));
        assert!(r.write(k.clone(), Cell::tombstone(Version::new(6, 1), Level::Quorum)));
        assert!(r.read(&k).unwrap().is_tombstone());
        assert!(!r.write(k.clone(), cell("a", 5, 1)), "a delete is not undone by an older write");
    }

    #[test]
    fn equal_clock_part_is_ordered_by_writer_id() {
        let mut r = Replica::new();
        let k = Bytes::from_static(b"k");
        r.write(k.clone(), cell("from-3", 7, 3));
        assert!(!r.write(k.clone(), cell("from-2", 7, 2)));
        assert!(r.write(k.clone(), cell("from-4", 7, 4)));
        assert_eq!(r.read(&k), Some(cell("from-4", 7, 4)));
    }

    #[test]
    fn redelivered_write_is_acked_and_changes_nothing() {
        let mut r = Replica::new();
        let k = Bytes::from_static(b"k");
        let msg = Message::Write { key: k.clone(), cell: cell("a", 1, 1) };
        assert_eq!(r.serve(2, &msg), Input::WriteAck { from: 2 });
        let before = r.clone();
        assert_eq!(r.serve(2, &msg), Input::WriteAck { from: 2 });
        assert_eq!(r, before);
        assert_eq!(r.serve(2, &Message::Read { key: k }), Input::ReadReply { from: 2, cell: Some(cell("a", 1, 1)) });
    }
}
