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
//!
//! Configurations (docs/consistency.md, "Changing the replica set"): the
//! replica keeps the newest [`ReplicaConfig`] it has seen. Through
//! [`Replica::serve_at`] and [`Replica::pull`] it refuses a message of an
//! older epoch with [`Input::StaleConfig`] *without reading or writing*,
//! and adopts the sender's configuration when it is newer. Hence the rule
//! the reconfiguration rests on: once a replica adopted epoch `e+1`, it
//! never again acknowledges or answers an epoch-`e` message. [`Replica::serve`]
//! ignores epochs (the static, epoch-0 use).

use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::Bytes;

use super::config::ReplicaConfig;
use super::core::{Input, Message};
use crate::clock::NodeId;
use crate::store::Cell;

/// One replica's cells, by key, and the newest configuration it knows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Replica {
    cells: BTreeMap<Bytes, Cell>,
    config: ReplicaConfig,
}

/// One batch of a replica's cells, in key order (state transfer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PullReply {
    /// Up to the requested number of cells with keys after the cursor;
    /// `more`: keys remain after the last one.
    Batch { cells: Vec<(Bytes, Cell)>, more: bool },
    /// The replica knows a newer configuration than the puller's.
    StaleConfig(ReplicaConfig),
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
            // No Raft here: every write is written.
            Message::Write { key, cell, .. } => {
                self.write(key.clone(), cell.clone());
                Input::WriteAck { from: me }
            }
        }
    }

    /// The newest configuration this replica has seen.
    pub fn config(&self) -> &ReplicaConfig {
        &self.config
    }

    /// Adopts `config` if it is newer than the one held; returns the
    /// configuration held afterwards (a pushed configuration is
    /// acknowledged with it). Epochs never go back.
    pub fn adopt(&mut self, config: &ReplicaConfig) -> &ReplicaConfig {
        if config.epoch > self.config.epoch {
            self.config = config.clone();
        }
        &self.config
    }

    /// Serves one coordinator message sent in configuration `config`
    /// (the coordinator's): refused with the replica's newer configuration
    /// if `config` is older, else served — after adopting `config` if it is
    /// newer — and the answer tagged with its epoch ([`Input::AtEpoch`]).
    pub fn serve_at(&mut self, me: NodeId, config: &ReplicaConfig, msg: &Message) -> Input {
        if config.epoch < self.config.epoch {
            return Input::StaleConfig { from: me, config: self.config.clone() };
        }
        self.adopt(config);
        Input::AtEpoch { epoch: config.epoch, reply: Box::new(self.serve(me, msg)) }
    }

    /// State transfer: at most `limit` cells with keys after `after` (from
    /// the first key if `None`), for a puller working in `config`. Like
    /// [`Replica::serve_at`], an older `config` is refused and a newer one
    /// adopted before anything is read.
    pub fn pull(&mut self, config: &ReplicaConfig, after: Option<&Bytes>, limit: usize) -> PullReply {
        assert!(limit > 0, "a pull batch holds at least one cell");
        if config.epoch < self.config.epoch {
            return PullReply::StaleConfig(self.config.clone());
        }
        self.adopt(config);
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut range = self.cells.range::<Bytes, _>((start, Bound::Unbounded));
        let cells: Vec<(Bytes, Cell)> = range.by_ref().take(limit).map(|(k, c)| (k.clone(), c.clone())).collect();
        let more = range.next().is_some();
        PullReply::Batch { cells, more }
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

    fn config(epoch: u64, current: &[NodeId]) -> ReplicaConfig {
        ReplicaConfig { epoch, current: current.to_vec(), next: None }
    }

    #[test]
    fn an_older_epoch_is_refused_without_reading_or_writing() {
        // The reconfiguration's replica rule (docs/consistency.md, "Changing
        // the replica set"): after adopting epoch e+1 a replica never acks
        // nor answers an epoch-e message, and tells the sender the newer
        // configuration instead.
        let mut r = Replica::new();
        let k = Bytes::from_static(b"k");
        let write = Message::Write { key: k.clone(), cell: cell("a", 1, 1), applied_at: 0 };
        assert_eq!(
            r.serve_at(2, &config(1, &[1, 2, 3]), &write),
            Input::AtEpoch { epoch: 1, reply: Box::new(Input::WriteAck { from: 2 }) }
        );
        assert_eq!(r.config().epoch, 1, "a newer epoch is adopted");
        r.adopt(&config(3, &[2, 3, 4]));
        let before = r.clone();
        let newer = Message::Write { key: k.clone(), cell: cell("b", 2, 1), applied_at: 0 };
        assert_eq!(
            r.serve_at(2, &config(2, &[1, 2, 3]), &newer),
            Input::StaleConfig { from: 2, config: config(3, &[2, 3, 4]) }
        );
        assert_eq!(r, before, "the refused write changed nothing");
        assert_eq!(r.pull(&config(2, &[1, 2, 3]), None, 10), PullReply::StaleConfig(config(3, &[2, 3, 4])));
        r.adopt(&config(1, &[1]));
        assert_eq!(r.config().epoch, 3, "epochs never go back");
    }

    #[test]
    fn pulls_walk_the_cells_in_bounded_batches() {
        let mut r = Replica::new();
        for k in ["a", "b", "c", "d", "e"] {
            r.write(Bytes::from(k), cell(k, 1, 1));
        }
        let keys = |reply: &PullReply| match reply {
            PullReply::Batch { cells, more } => (cells.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(), *more),
            PullReply::StaleConfig(_) => panic!("not stale"),
        };
        let c = config(1, &[1, 2]);
        let first = r.pull(&c, None, 2);
        assert_eq!(keys(&first), (vec![Bytes::from("a"), Bytes::from("b")], true));
        assert_eq!(r.config().epoch, 1, "a pull adopts the puller's newer configuration");
        assert_eq!(keys(&r.pull(&c, Some(&Bytes::from("b")), 2)).0, vec![Bytes::from("c"), Bytes::from("d")]);
        assert_eq!(keys(&r.pull(&c, Some(&Bytes::from("d")), 2)), (vec![Bytes::from("e")], false));
        assert_eq!(keys(&r.pull(&c, Some(&Bytes::from("e")), 2)), (vec![], false));
    }

    #[test]
    fn redelivered_write_is_acked_and_changes_nothing() {
        let mut r = Replica::new();
        let k = Bytes::from_static(b"k");
        let msg = Message::Write { key: k.clone(), cell: cell("a", 1, 1), applied_at: 0 };
        assert_eq!(r.serve(2, &msg), Input::WriteAck { from: 2 });
        let before = r.clone();
        assert_eq!(r.serve(2, &msg), Input::WriteAck { from: 2 });
        assert_eq!(r, before);
        assert_eq!(r.serve(2, &Message::Read { key: k }), Input::ReadReply { from: 2, cell: Some(cell("a", 1, 1)) });
    }
}
