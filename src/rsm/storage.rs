//! `raft::Storage` over the node's RocksDB.
//!
//! * `raft_log`: entry index (u64 big-endian) → `eraftpb::Entry` (protobuf).
//! * `raft_state`: `hs` → HardState, `cs` → ConfState, `truncated` →
//!   (index, term) of the last entry removed by compaction or replaced by a
//!   snapshot; `installing` marks a snapshot install in progress.
//!
//! raft-rs only *reads* through the trait. The Ready loop turns what a Ready
//! asks to persist into [`WriteOp`]s (see [`RaftStore::append_ops`] etc.),
//! writes them in one synced batch, and then tells this store
//! ([`RaftStore::appended`]) so its in-memory bounds follow the disk.
//! Snapshots are produced on demand by [`super::snapshot`]; `snapshot()`
//! answers `SnapshotTemporarilyUnavailable` until one is ready.

use std::collections::VecDeque;
use std::sync::{Arc, RwLock};

use protobuf::Message as PbMessage;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};
use rocksdb::{IteratorMode, DB};

use super::snapshot::Snapshots;
use crate::store::{cf, Cf, StoreError, WriteOp};

pub const KEY_HARD_STATE: &[u8] = b"hs";
pub const KEY_CONF_STATE: &[u8] = b"cs";
pub const KEY_TRUNCATED: &[u8] = b"truncated";
pub const KEY_INSTALLING: &[u8] = b"installing";

/// Index and term at which a founding node's log starts, as if entries up
/// to here were compacted into its initial state (TiKV's
/// `RAFT_INIT_LOG_INDEX` does the same, for the same reason). A node that
/// joins later starts with an empty log and no configuration; if the
/// leader could send it the log from index 1, it would rebuild the
/// configuration from the changes in the log alone, on top of an empty one,
/// and miss the founding voters (it would, say, count itself as the only
/// voter and elect itself). With the log starting above 1 the leader has
/// no entry 1 to send, so every joining node first gets a snapshot, which
/// carries the whole configuration.
pub const RAFT_INIT_INDEX: u64 = 5;
pub const RAFT_INIT_TERM: u64 = 5;

pub fn log_key(index: u64) -> Vec<u8> {
    index.to_be_bytes().to_vec()
}

/// Recent entries kept in memory for raft-rs's reads (appends to followers).
pub const MAX_CACHED_ENTRIES: usize = 4096;
/// ... and their payload bytes at most.
pub const MAX_CACHED_ENTRY_BYTES: usize = 64 * 1024 * 1024;

#[derive(Clone, Debug, Default)]
struct Core {
    hard_state: HardState,
    conf_state: ConfState,
    /// Index and term of the last entry no longer in the log.
    truncated: (u64, u64),
    last_index: u64,
    /// Term of every entry in the log: `terms[i]` is entry `truncated.0 + 1 + i`.
    /// raft-rs asks for terms constantly; 8 bytes per entry spares a read.
    terms: VecDeque<u64>,
    /// The newest entries, contiguous, ending at `last_index`.
    cache: VecDeque<Entry>,
    cache_bytes: usize,
}

impl Core {
    fn cached_term(&self, idx: u64) -> Option<u64> {
        let offset = idx.checked_sub(self.truncated.0 + 1)? as usize;
        self.terms.get(offset).copied()
    }

    /// Drops entries above `index` from the term index and the cache.
    fn truncate_after(&mut self, index: u64) {
        let keep = index.saturating_sub(self.truncated.0) as usize;
        self.terms.truncate(keep);
        while self.cache.back().is_some_and(|e| e.index > index) {
            let e = self.cache.pop_back().expect("non-empty");
            self.cache_bytes -= e.data.len();
        }
    }

    /// Drops entries up to and including `index` from the front.
    fn drop_through(&mut self, index: u64) {
        let n = index.saturating_sub(self.truncated.0) as usize;
        self.terms.drain(..n.min(self.terms.len()));
        while self.cache.front().is_some_and(|e| e.index <= index) {
            let e = self.cache.pop_front().expect("non-empty");
            self.cache_bytes -= e.data.len();
        }
    }

    fn push(&mut self, e: &Entry) {
        debug_assert_eq!(e.index, self.truncated.0 + 1 + self.terms.len() as u64);
        self.terms.push_back(e.term);
        if self.cache.back().is_some_and(|last| last.index + 1 != e.index) {
            self.cache.clear();
            self.cache_bytes = 0;
        }
        self.cache_bytes += e.data.len();
        self.cache.push_back(e.clone());
        while self.cache.len() > MAX_CACHED_ENTRIES || self.cache_bytes > MAX_CACHED_ENTRY_BYTES {
            let e = self.cache.pop_front().expect("non-empty");
            self.cache_bytes -= e.data.len();
        }
    }
}

pub struct RaftStore {
    db: Arc<DB>,
    core: RwLock<Core>,
    pub snapshots: Arc<Snapshots>,
}

fn other(e: impl std::fmt::Display) -> raft::Error {
    raft::Error::Store(StorageError::Other(e.to_string().into()))
}

fn store_err(e: StoreError) -> raft::Error {
    other(e)
}

impl RaftStore {
    /// Loads the Raft state; a fresh store gets `voters` as its configuration.
    pub fn open(db: Arc<DB>, voters: &[u64], snapshots: Arc<Snapshots>) -> Result<RaftStore, StoreError> {
        let st = cf(&db, Cf::RaftState);
        let hard_state = match db.get_cf(st, KEY_HARD_STATE)? {
            Some(b) => HardState::parse_from_bytes(&b)
                .map_err(|e| StoreError::Malformed { what: "hard state", source: e.into() })?,
            None => HardState::default(),
        };
        let conf_state = match db.get_cf(st, KEY_CONF_STATE)? {
            Some(b) => ConfState::parse_from_bytes(&b)
                .map_err(|e| StoreError::Malformed { what: "conf state", source: e.into() })?,
            None => {
                let mut cs = ConfState::default();
                cs.set_voters(voters.to_vec());
                cs
            }
        };
        let truncated = match db.get_cf(st, KEY_TRUNCATED)? {
            Some(b) if b.len() == 16 => {
                (u64::from_be_bytes(b[..8].try_into().unwrap()), u64::from_be_bytes(b[8..].try_into().unwrap()))
            }
            Some(_) => return Err(StoreError::Corrupt { what: "truncated state" }),
            None => (0, 0),
        };
        let last_index = match db.iterator_cf(cf(&db, Cf::RaftLog), IteratorMode::End).next() {
            Some(item) => {
                let (k, _) = item?;
                u64::from_be_bytes(k.as_ref().try_into().map_err(|_| StoreError::Corrupt { what: "raft log key" })?)
            }
            None => truncated.0,
        };
        let fresh = db.get_cf(st, KEY_HARD_STATE)?.is_none()
            && db.get_cf(st, KEY_CONF_STATE)?.is_none()
            && db.get_cf(st, KEY_TRUNCATED)?.is_none()
            && last_index == 0;
        let (hard_state, truncated, last_index) = if fresh && !voters.is_empty() {
            // A founding node: its log starts at RAFT_INIT_INDEX + 1, and
            // that start is on disk before anything else is.
            let hs = HardState { term: RAFT_INIT_TERM, commit: RAFT_INIT_INDEX, ..Default::default() };
            let mut batch = rocksdb::WriteBatch::default();
            batch.put_cf(st, KEY_HARD_STATE, hs.write_to_bytes().expect("encode hard state"));
            batch.put_cf(st, KEY_CONF_STATE, conf_state.write_to_bytes().expect("encode conf state"));
            let mut t = RAFT_INIT_INDEX.to_be_bytes().to_vec();
            t.extend_from_slice(&RAFT_INIT_TERM.to_be_bytes());
            batch.put_cf(st, KEY_TRUNCATED, t);
            let mut sync = rocksdb::WriteOptions::default();
            sync.set_sync(true);
            db.write_opt(batch, &sync)?;
            (hs, (RAFT_INIT_INDEX, RAFT_INIT_TERM), RAFT_INIT_INDEX)
        } else {
            (hard_state, truncated, last_index)
        };
        let mut core =
            Core { hard_state, conf_state, truncated, last_index: last_index.max(truncated.0), ..Default::default() };
        // Rebuild the term index (and warm the cache) from the log.
        let from = log_key(truncated.0 + 1);
        for item in db.iterator_cf(cf(&db, Cf::RaftLog), IteratorMode::From(&from, rocksdb::Direction::Forward)) {
            let (_, v) = item?;
            let e = Entry::parse_from_bytes(&v)
                .map_err(|e| StoreError::Malformed { what: "raft entry", source: e.into() })?;
            if e.index != truncated.0 + 1 + core.terms.len() as u64 {
                return Err(StoreError::RaftLogGap { index: e.index });
            }
            core.push(&e);
        }
        Ok(RaftStore { db, core: RwLock::new(core), snapshots })
    }

    pub fn hard_state(&self) -> HardState {
        self.core.read().expect("raft core").hard_state.clone()
    }

    /// Raises the commit index to `applied` when the persisted hard state
    /// holds less (data written before the commit index of a `LightReady`
    /// was persisted with the entries it applied): an applied entry was
    /// committed, and raft-rs refuses to start with applied > commit.
    /// Returns the hard-state write to make, if any.
    pub fn commit_at_least(&self, applied: u64) -> Option<WriteOp> {
        let mut core = self.core.write().expect("raft core");
        if core.hard_state.commit >= applied {
            return None;
        }
        assert!(applied <= core.last_index, "applied index {applied} beyond the log's last index {}", core.last_index);
        tracing::warn!(
            commit = core.hard_state.commit,
            applied,
            "persisted commit index behind the applied index; raising it"
        );
        core.hard_state.commit = applied;
        Some(Self::hard_state_op(&core.hard_state))
    }

    pub fn conf_state(&self) -> ConfState {
        self.core.read().expect("raft core").conf_state.clone()
    }

    pub fn truncated(&self) -> (u64, u64) {
        self.core.read().expect("raft core").truncated
    }

    /// Ops that append `entries` (overwriting any conflicting suffix).
    pub fn append_ops(&self, entries: &[Entry]) -> Result<Vec<WriteOp>, StoreError> {
        let Some(first) = entries.first() else { return Ok(Vec::new()) };
        let core = self.core.read().expect("raft core");
        assert!(
            first.index > core.truncated.0,
            "append {} over compacted log (truncated {})",
            first.index,
            core.truncated.0
        );
        assert!(first.index <= core.last_index + 1, "gap in raft log: last {} append {}", core.last_index, first.index);
        let mut ops = Vec::with_capacity(entries.len() + 1);
        for e in entries {
            let bytes =
                e.write_to_bytes().map_err(|e| StoreError::Malformed { what: "raft entry", source: e.into() })?;
            ops.push(WriteOp::Put { cf: Cf::RaftLog, key: log_key(e.index), value: bytes });
        }
        let new_last = entries.last().expect("non-empty").index;
        if new_last < core.last_index {
            ops.push(WriteOp::DeleteRange {
                cf: Cf::RaftLog,
                from: log_key(new_last + 1),
                to: log_key(core.last_index + 1),
            });
        }
        Ok(ops)
    }

    pub fn hard_state_op(hs: &HardState) -> WriteOp {
        WriteOp::Put {
            cf: Cf::RaftState,
            key: KEY_HARD_STATE.to_vec(),
            value: hs.write_to_bytes().expect("encode hard state"),
        }
    }

    /// Records that the ops of `append_ops(entries)` and the hard state are durable.
    pub fn appended(&self, entries: &[Entry], hs: Option<&HardState>) {
        let mut core = self.core.write().expect("raft core");
        if let (Some(first), Some(last)) = (entries.first(), entries.last()) {
            core.truncate_after(first.index - 1);
            for e in entries {
                core.push(e);
            }
            core.last_index = last.index;
        }
        if let Some(hs) = hs {
            assert!(hs.commit >= core.hard_state.commit || hs.term > core.hard_state.term, "commit index regressed");
            core.hard_state = hs.clone();
        }
    }

    /// The commit index raft-rs reports after `advance` (persisted with the
    /// next hard state; it can always be recovered from the log).
    pub fn set_commit(&self, commit: u64) {
        let mut core = self.core.write().expect("raft core");
        core.hard_state.commit = core.hard_state.commit.max(commit);
    }

    /// Ops that drop log entries up to and including `index` (≤ applied).
    pub fn compact_ops(&self, index: u64) -> Result<Option<(Vec<WriteOp>, (u64, u64))>, StoreError> {
        let core = self.core.read().expect("raft core");
        if index <= core.truncated.0 || index > core.last_index {
            return Ok(None);
        }
        drop(core);
        let term = self.term(index).map_err(|e| StoreError::Malformed { what: "raft log term", source: e.into() })?;
        let core = self.core.read().expect("raft core");
        let ops = vec![
            WriteOp::DeleteRange { cf: Cf::RaftLog, from: log_key(core.truncated.0), to: log_key(index + 1) },
            truncated_op(index, term),
        ];
        Ok(Some((ops, (index, term))))
    }

    pub fn compacted(&self, truncated: (u64, u64)) {
        let mut core = self.core.write().expect("raft core");
        assert!(truncated.0 >= core.truncated.0, "truncated index regressed");
        core.drop_through(truncated.0);
        core.truncated = truncated;
    }

    /// Ops that replace the log by a snapshot's position (the rsm contents
    /// are written separately by the snapshot installer).
    pub fn snapshot_ops(&self, index: u64, term: u64, cs: &ConfState) -> Vec<WriteOp> {
        let core = self.core.read().expect("raft core");
        let mut hs = core.hard_state.clone();
        hs.term = hs.term.max(term);
        hs.commit = hs.commit.max(index);
        vec![
            WriteOp::DeleteRange { cf: Cf::RaftLog, from: log_key(0), to: log_key(u64::MAX) },
            truncated_op(index, term),
            WriteOp::Put {
                cf: Cf::RaftState,
                key: KEY_CONF_STATE.to_vec(),
                value: cs.write_to_bytes().expect("encode conf state"),
            },
            Self::hard_state_op(&hs),
        ]
    }

    /// A configuration change was applied (and its `conf_state_op` written).
    /// Snapshots handed out from now carry it: a snapshot made before the
    /// change then names a configuration newer than its index. That is
    /// harmless: the follower re-applies the changes after the index from
    /// the log, in order, and single-node changes set a node's role
    /// outright (raft-rs `Changer`), so it ends in the leader's configuration.
    pub fn set_conf_state(&self, cs: ConfState) {
        self.core.write().expect("raft core").conf_state = cs;
    }

    pub fn snapshot_installed(&self, index: u64, term: u64, cs: &ConfState) {
        let mut core = self.core.write().expect("raft core");
        core.terms.clear();
        core.cache.clear();
        core.cache_bytes = 0;
        core.truncated = (index, term);
        core.last_index = index;
        core.conf_state = cs.clone();
        core.hard_state.term = core.hard_state.term.max(term);
        core.hard_state.commit = core.hard_state.commit.max(index);
    }
}

fn truncated_op(index: u64, term: u64) -> WriteOp {
    let mut v = index.to_be_bytes().to_vec();
    v.extend_from_slice(&term.to_be_bytes());
    WriteOp::Put { cf: Cf::RaftState, key: KEY_TRUNCATED.to_vec(), value: v }
}

impl raft::Storage for RaftStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let core = self.core.read().expect("raft core");
        Ok(RaftState::new(core.hard_state.clone(), core.conf_state.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _ctx: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let max_size = max_size.into();
        let core = self.core.read().expect("raft core");
        if low <= core.truncated.0 {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        assert!(high <= core.last_index + 1, "entries({low}, {high}) beyond last index {}", core.last_index);
        if let Some(first) = core.cache.front().map(|e| e.index) {
            if low >= first {
                let mut out = Vec::with_capacity((high - low) as usize);
                let mut size = 0u64;
                for e in core.cache.iter().skip((low - first) as usize).take((high - low) as usize) {
                    size += e.compute_size() as u64;
                    if !out.is_empty() && max_size.is_some_and(|m| size > m) {
                        break;
                    }
                    out.push(e.clone());
                }
                return Ok(out);
            }
        }
        drop(core);
        let mut out = Vec::with_capacity((high - low) as usize);
        let mut size = 0u64;
        let from = log_key(low);
        for item in
            self.db.iterator_cf(cf(&self.db, Cf::RaftLog), IteratorMode::From(&from, rocksdb::Direction::Forward))
        {
            let (k, v) = item.map_err(|e| store_err(e.into()))?;
            let idx = u64::from_be_bytes(k.as_ref().try_into().map_err(other)?);
            if idx >= high {
                break;
            }
            if idx != low + out.len() as u64 {
                return Err(raft::Error::Store(StorageError::Unavailable));
            }
            let e = Entry::parse_from_bytes(&v).map_err(other)?;
            size += e.compute_size() as u64;
            if !out.is_empty() && max_size.is_some_and(|m| size > m) {
                break;
            }
            out.push(e);
        }
        if out.is_empty() && low < high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let core = self.core.read().expect("raft core");
        if idx == core.truncated.0 {
            return Ok(core.truncated.1);
        }
        if idx < core.truncated.0 {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > core.last_index {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        if let Some(t) = core.cached_term(idx) {
            return Ok(t);
        }
        drop(core);
        match self.db.get_pinned_cf(cf(&self.db, Cf::RaftLog), log_key(idx)).map_err(|e| store_err(e.into()))? {
            Some(v) => Ok(Entry::parse_from_bytes(&v).map_err(other)?.term),
            None => Err(raft::Error::Store(StorageError::Unavailable)),
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.core.read().expect("raft core").truncated.0 + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.core.read().expect("raft core").last_index)
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let cs = self.conf_state();
        // A snapshot older than the compacted log would leave the follower
        // needing entries nobody has: ask for a fresh one instead.
        let floor = request_index.max(self.truncated().0);
        match self.snapshots.ready_at_least(floor) {
            Some(meta) => {
                let mut s = Snapshot::default();
                let m = s.mut_metadata();
                m.index = meta.index;
                m.term = meta.term;
                m.set_conf_state(cs);
                s.data = meta.file_name().into_bytes().into();
                Ok(s)
            }
            None => {
                self.snapshots.request(floor, to);
                Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable))
            }
        }
    }
}
