//! One simulated node's storage: what survives a crash.
//!
//! The real node has one RocksDB whose write-ahead log every write goes
//! through (`store::writer`): the `cells` family (what quorum reads see)
//! and the `rsm` family with the applied index (the state machine) alike.
//! A write is *synced* (fsynced before it is answered) or not, and one
//! fsync makes everything before it in the log durable too. So:
//!
//! - a replica's write (`Replicate`: ABD writes, read-imposes and the
//!   join's write-backs) is synced: durable once acknowledged;
//! - applying committed Raft entries is one batch with the cells they merge
//!   (`WriteOp::Merge`) and the new applied index, fsynced only when the
//!   same Raft `Ready` also persists entries, a new term or a vote
//!   (raft-rs `Ready::must_sync`; `driver.rs`, steps 3 to 5): a follower
//!   that learns a commit index from a heartbeat applies unsynced, and so
//!   does `Driver::apply`;
//! - a process kill (`kill -9`) loses nothing written (the log is in the OS
//!   page cache); a power loss keeps the log up to its last fsync and maybe
//!   some of what follows, never a later record without the earlier ones.
//!
//! [`NodeStorage`] is that log: the records in order and how many are
//! synced. Its live state is the fold of all records; a crash keeps a
//! prefix. The cells are the real [`Replica`] rule (LWW by version).

use bytes::Bytes;

use super::super::quorum::replica::Replica;
use crate::store::Cell;

/// What a crash keeps of a node's log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashKind {
    /// The process dies: every written record survives.
    Kill,
    /// The machine dies: the synced prefix survives, and maybe more.
    PowerLoss,
}

/// What the restart model keeps (the negative control forgets acknowledged
/// writes, as a node that acknowledged before its fsync would).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Synced records survive every crash (what the real node does).
    Synced,
    /// A power loss also loses synced records (a suffix of the log with at
    /// least one of them).
    LosesAcknowledged,
    /// Apply batches that merge cells are fsynced only when their Raft
    /// `Ready` also persisted entries (capkv before the fix this simulation
    /// prompted: seed 856862): a quorum get can then return a cell that a
    /// majority holds only unsynced, and a power loss takes it back.
    UnsyncedCellApplies,
}

#[derive(Clone, Debug)]
enum Record {
    /// Cells merged by a replica write (synced).
    Merge { key: Bytes, cell: Cell },
    /// Committed entries applied up to `index`, with the cells they merged.
    Apply { index: u64, merged: Vec<(Bytes, Cell)> },
}

#[derive(Clone, Debug, Default)]
pub struct NodeStorage {
    log: Vec<Record>,
    synced: usize,
    /// The fold of `log`: what the node reads.
    cells: Replica,
    /// The state machine's applied index (its state is the oracle's state
    /// at that index: applying is deterministic).
    applied: u64,
}

impl NodeStorage {
    pub fn cells(&self) -> &Replica {
        &self.cells
    }

    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// Records not yet made durable by an fsync.
    pub fn unsynced(&self) -> usize {
        self.log.len() - self.synced
    }

    /// An fsync of the log (by any synced write of the node, such as
    /// persisting Raft entries): everything written so far is durable.
    pub fn sync(&mut self) {
        self.synced = self.log.len();
    }

    /// A replica write: merged, then fsynced before the acknowledgement.
    pub fn write_synced(&mut self, key: Bytes, cell: Cell) -> bool {
        self.log.push(Record::Merge { key: key.clone(), cell: cell.clone() });
        self.sync();
        self.cells.write(key, cell)
    }

    /// Applies the entries up to `index`, merging `merged`; fsynced or not.
    pub fn apply(&mut self, index: u64, merged: Vec<(Bytes, Cell)>, synced: bool) {
        assert!(index > self.applied, "applied index regressed: {} -> {index}", self.applied);
        for (key, cell) in &merged {
            self.cells.write(key.clone(), cell.clone());
        }
        self.applied = index;
        self.log.push(Record::Apply { index, merged });
        if synced {
            self.sync();
        }
    }

    /// How many records a crash of `kind` may keep: `lo..=hi`.
    pub fn crash_keeps(&self, kind: CrashKind, durability: Durability) -> (usize, usize) {
        match (kind, durability) {
            (CrashKind::Kill, _) => (self.log.len(), self.log.len()),
            (CrashKind::PowerLoss, Durability::Synced | Durability::UnsyncedCellApplies) => {
                (self.synced, self.log.len())
            }
            // At least one acknowledged record goes, when there is one.
            (CrashKind::PowerLoss, Durability::LosesAcknowledged) => (0, self.synced.saturating_sub(1)),
        }
    }

    /// A crash that keeps the first `keep` records: the state is rebuilt
    /// from them. Returns how many records were lost. After a power loss
    /// what is left was read back from the disk, so it is all durable; after
    /// a kill the page cache still holds what was not fsynced.
    pub fn crash(&mut self, kind: CrashKind, keep: usize) -> usize {
        assert!(keep <= self.log.len());
        let lost = self.log.len() - keep;
        self.log.truncate(keep);
        self.synced = match kind {
            CrashKind::Kill => self.synced.min(keep),
            CrashKind::PowerLoss => keep,
        };
        self.cells = Replica::new();
        self.applied = 0;
        for r in &self.log {
            match r {
                Record::Merge { key, cell } => {
                    self.cells.write(key.clone(), cell.clone());
                }
                Record::Apply { index, merged } => {
                    for (key, cell) in merged {
                        self.cells.write(key.clone(), cell.clone());
                    }
                    self.applied = *index;
                }
            }
        }
        lost
    }
}

#[cfg(test)]
mod tests {
    // Proves the crash model the simulation relies on: a power loss keeps
    // every synced record and a prefix of the rest, a kill keeps all.
    use super::*;
    use crate::clock::Version;
    use crate::level::Level;

    fn cell(v: u64) -> Cell {
        Cell::value(Bytes::copy_from_slice(&v.to_be_bytes()), Version::new(v, 1), Level::Quorum)
    }

    #[test]
    fn a_power_loss_keeps_the_synced_prefix_and_a_kill_keeps_all() {
        let k = Bytes::from_static(b"k");
        let mut s = NodeStorage::default();
        s.write_synced(k.clone(), cell(1));
        s.apply(1, vec![(k.clone(), cell(2))], false);
        s.apply(2, vec![(k.clone(), cell(3))], false);
        assert_eq!(s.unsynced(), 2);
        let mut killed = s.clone();
        assert_eq!(killed.crash_keeps(CrashKind::Kill, Durability::Synced), (3, 3));
        assert_eq!(killed.crash(CrashKind::Kill, 3), 0);
        assert_eq!(killed.unsynced(), 2, "a kill leaves the page cache unsynced");
        assert_eq!((killed.applied(), killed.cells().read(&k)), (2, Some(cell(3))));
        let mut lost = s.clone();
        assert_eq!(lost.crash_keeps(CrashKind::PowerLoss, Durability::Synced), (1, 3));
        assert_eq!(lost.crash(CrashKind::PowerLoss, 2), 1);
        assert_eq!((lost.applied(), lost.cells().read(&k)), (1, Some(cell(2))));
        assert_eq!(lost.unsynced(), 0, "what a power loss left is on the disk");
        assert_eq!(s.crash_keeps(CrashKind::PowerLoss, Durability::LosesAcknowledged), (0, 0));
        s.apply(3, vec![], true);
        assert_eq!(s.crash_keeps(CrashKind::PowerLoss, Durability::Synced), (4, 4), "an fsync covers what came before");
    }
}
