//! The committed Raft log, applied once by the real state machine code.
//!
//! Applying is deterministic (`rsm::state_machine`), so every node that has
//! applied up to index `i` holds the same state machine, cells merged and
//! answers: they are computed here once, when the entry commits, and each
//! simulated node replays them when it applies (or jumps to `i` by a
//! snapshot install).

use bytes::Bytes;
use prost::Message as _;

use crate::proto::rsm;
use crate::rsm::state_machine::{kv, Answer, Applier, MemRsm};
use crate::store::{Cell, Cf, WriteOp};

/// What committing an entry produced.
#[derive(Clone, Debug)]
struct Applied {
    /// The state machine after the entry.
    state: MemRsm,
    /// The cells the entry merged (`WriteOp::Merge`).
    merged: Vec<(Bytes, Cell)>,
    answers: Vec<Answer>,
}

#[derive(Debug)]
pub struct Log {
    voters: Vec<u32>,
    empty: MemRsm,
    /// Entry `i` at position `i - 1`.
    entries: Vec<Applied>,
}

impl Log {
    pub fn new(voters: Vec<u32>) -> Log {
        Log { voters, empty: MemRsm::default(), entries: Vec::new() }
    }

    /// The commit index: the last entry.
    pub fn len(&self) -> u64 {
        self.entries.len() as u64
    }

    /// Commits `batch` (`None`: an entry of Raft's own, such as a new
    /// leader's empty entry) at the next index in `term`; returns the index.
    pub fn commit(&mut self, term: u64, batch: Option<&rsm::Batch>) -> u64 {
        let index = self.len() + 1;
        let data = batch.map(|b| b.encode_to_vec()).unwrap_or_default();
        let before = self.state(index - 1);
        let mut applier = Applier::new(before).with_voters(self.voters.iter().copied());
        applier.apply(index, term, &data).expect("the state machine applies a KV command");
        let (ops, answers, applied) = applier.finish();
        assert_eq!(applied, Some((index, term)));
        if let Some(b) = batch {
            assert_eq!(answers.len(), b.commands.len(), "one answer per command");
        }
        let mut state = before.clone();
        let mut merged = Vec::new();
        for op in ops {
            match op {
                WriteOp::Put { cf: Cf::Rsm, key, value } => {
                    state.0.insert(key, value);
                }
                WriteOp::Delete { cf: Cf::Rsm, key } => {
                    state.0.remove(&key);
                }
                WriteOp::Merge { key, cell } => merged.push((key, cell)),
                other => panic!("unexpected state machine write {other:?}"),
            }
        }
        self.entries.push(Applied { state, merged, answers });
        index
    }

    /// The state machine as of `index` (0: nothing applied).
    pub fn state(&self, index: u64) -> &MemRsm {
        match index {
            0 => &self.empty,
            i => &self.entries[i as usize - 1].state,
        }
    }

    /// The state machine's cell of `key` as of `index`.
    pub fn cell_at(&self, key: &[u8], index: u64) -> Option<Cell> {
        kv::read_cell(self.state(index), key).expect("readable")
    }

    /// The cells entry `index` merged.
    pub fn merged(&self, index: u64) -> &[(Bytes, Cell)] {
        &self.entries[index as usize - 1].merged
    }

    pub fn answers(&self, index: u64) -> &[Answer] {
        &self.entries[index as usize - 1].answers
    }
}
