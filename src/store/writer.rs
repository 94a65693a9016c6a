//! The group-commit writer: the only code that writes to RocksDB.
//!
//! Requests ([`WriteJob`]s) arrive on a bounded channel. The writer thread
//! takes one, drains whatever else is already queued (up to
//! [`MAX_JOBS_PER_BATCH`] / [`MAX_WRITE_BATCH_BYTES`]), turns all of them into one
//! RocksDB `WriteBatch`, writes it with one WAL fsync, and only then answers
//! each job. Concurrent clients therefore share an fsync, and an answered
//! write is durable.
//!
//! Being the single writer also makes read-modify-write ops atomic without
//! locks: LWW merges, fresh versions above the key's current one, and the
//! eventual level's coordinator-local compare-and-set. Within a batch a
//! small overlay makes later ops see earlier ones.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use rocksdb::{WriteBatch, WriteOptions, DB};
use tokio::sync::{mpsc, oneshot};

use super::cache::CellCache;
use super::cell::Cell;
use super::digest::Digests;
use super::failure_log::{FailureLog, OnFailure};
use super::keys::{self, Cf};
use super::memtable_size::MemtableSizes;
use super::{cf, read_cell, StoreError};
use crate::clock::{hlc_from_physical_ms, hlc_physical_ms, Clock, NodeId, Version};
use crate::level::Level;

/// Jobs folded into one WriteBatch at most.
pub const MAX_JOBS_PER_BATCH: usize = 512;
/// Approximate payload bytes in one WriteBatch before it is cut.
pub const MAX_WRITE_BATCH_BYTES: usize = 16 * 1024 * 1024;
/// Jobs waiting for the writer; senders wait (backpressure) beyond this.
pub const WRITE_QUEUE_DEPTH: usize = 4096;
/// How far ahead of issued stamps the persisted reservation reaches.
pub const HLC_RESERVE_AHEAD_MS: i64 = 1_000;

/// One mutation. Ops of a job are applied in order.
#[derive(Clone, Debug)]
pub enum WriteOp {
    /// A local write (value, or tombstone for `None`) with a fresh version of
    /// this node above the key's current version. With `hints`, a hint per
    /// peer is stored in the same batch (see `levels::eventual`).
    Fresh {
        key: Bytes,
        value: Option<Bytes>,
        origin: Level,
        hints: bool,
    },
    /// Coordinator-local compare-and-set: swaps when the current value equals
    /// `expected` (`None` = the key must be absent).
    Cas {
        key: Bytes,
        expected: Option<Bytes>,
        new_value: Bytes,
        origin: Level,
        hints: bool,
    },
    /// Last-writer-wins merge of a cell from elsewhere.
    Merge {
        key: Bytes,
        cell: Cell,
    },
    Put {
        cf: Cf,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        cf: Cf,
        key: Vec<u8>,
    },
    /// Deletes keys in `[from, to)`.
    DeleteRange {
        cf: Cf,
        from: Vec<u8>,
        to: Vec<u8>,
    },
    /// Removes the hint for (peer, key) if it still holds `version`.
    ClearHint {
        peer: NodeId,
        key: Bytes,
        version: Version,
    },
    /// Deletes every hint kept for `peer` (it is no longer a member).
    DropHints {
        peer: NodeId,
    },
    /// Tombstone GC (`crate::tombstone_gc`): deletes the key's cell if its
    /// version is at or below `version`, and every peer's hint of the key
    /// holding a version at or below it. Only a Raft apply of a `Purge`
    /// command writes it, after every replica was seen to hold the
    /// tombstone at `version` (or something newer).
    Purge {
        key: Bytes,
        version: Version,
    },
}

impl WriteOp {
    fn payload_bytes(&self) -> usize {
        match self {
            WriteOp::Fresh { key, value, .. } => key.len() + value.as_ref().map_or(0, |v| v.len()),
            WriteOp::Cas { key, new_value, .. } => key.len() + new_value.len(),
            WriteOp::Merge { key, cell } => key.len() + cell.encoded_len(),
            WriteOp::Put { key, value, .. } => key.len() + value.len(),
            WriteOp::Delete { key, .. } => key.len(),
            WriteOp::DeleteRange { from, to, .. } => from.len() + to.len(),
            WriteOp::ClearHint { key, .. } => key.len(),
            WriteOp::DropHints { .. } => 0,
            WriteOp::Purge { key, .. } => key.len(),
        }
    }

    /// The column family and bytes of the memtable entry this op adds, for
    /// the memtable sizes (`memtable_size`); `None` for deletes and hints.
    fn memtable_entry(&self) -> Option<(Cf, u64)> {
        match self {
            WriteOp::Fresh { .. } | WriteOp::Cas { .. } | WriteOp::Merge { .. } => {
                Some((Cf::Cells, self.payload_bytes() as u64))
            }
            WriteOp::Put { cf, .. } => Some((*cf, self.payload_bytes() as u64)),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpOutcome {
    Done,
    /// The cell a `Fresh` op wrote.
    Written(Cell),
    /// `current` is the cell after the op (the new one when swapped).
    Cas {
        swapped: bool,
        current: Option<Cell>,
    },
    /// Whether a `Merge` changed the stored cell.
    Merged {
        applied: bool,
    },
    /// Whether a `Purge` deleted the key's cell.
    Purged {
        removed: bool,
    },
}

pub struct WriteJob {
    pub ops: Vec<WriteOp>,
    /// fsync the WAL before answering.
    pub sync: bool,
    pub reply: oneshot::Sender<Result<Vec<OpOutcome>, StoreError>>,
}

pub(super) struct Writer {
    /// Current cells, as written (None = absent), shared with readers; the
    /// writer is the only one to fill it (see `cache`). Spares a RocksDB
    /// read per write to a hot key.
    pub cache: Arc<CellCache>,
    pub db: Arc<DB>,
    pub clock: Arc<Clock>,
    pub digests: Arc<Digests>,
    pub reserved_hlc: Arc<AtomicU64>,
    pub peers: super::HintPeers,
    /// Whether `sync` jobs fsync the WAL. Only the simulation's inline
    /// writer says no (see `WriterMode::Inline`).
    pub fsync: bool,
    /// Failing batches logged once per streak, not one line each.
    pub failures: std::sync::Mutex<FailureLog>,
    /// The memtable sizes of the cells and state machine families, fed
    /// with what each batch wrote (shared with the store for metrics).
    pub memtables: Arc<std::sync::Mutex<MemtableSizes>>,
}

/// A cell's (version, tombstone) before and after a change.
type DigestUpdate = (Bytes, Option<(Version, bool)>, Option<(Version, bool)>);

/// Effects of a batch that become visible only once it is durable.
#[derive(Default)]
struct Pending {
    digest_updates: Vec<DigestUpdate>,
}

impl Writer {
    pub fn run(self, mut rx: mpsc::Receiver<WriteJob>) {
        while let Some(first) = rx.blocking_recv() {
            let mut jobs = vec![first];
            let mut bytes: usize = jobs[0].ops.iter().map(WriteOp::payload_bytes).sum();
            while jobs.len() < MAX_JOBS_PER_BATCH && bytes < MAX_WRITE_BATCH_BYTES {
                match rx.try_recv() {
                    Ok(job) => {
                        bytes += job.ops.iter().map(WriteOp::payload_bytes).sum::<usize>();
                        jobs.push(job);
                    }
                    Err(_) => break,
                }
            }
            self.commit(jobs);
        }
        tracing::debug!("writer: all senders gone, stopping");
    }

    pub(super) fn commit(&self, jobs: Vec<WriteJob>) {
        let mut batch = WriteBatch::default();
        let mut pending = Pending::default();
        let mut cells: HashMap<Bytes, Option<Cell>> = HashMap::new();
        let mut hints: HashMap<Vec<u8>, Option<Version>> = HashMap::new();
        let sync = jobs.iter().any(|j| j.sync);
        let mut results = Vec::with_capacity(jobs.len());
        for job in &jobs {
            let r: Result<Vec<OpOutcome>, StoreError> =
                job.ops.iter().map(|op| self.apply(op, &mut batch, &mut cells, &mut hints, &mut pending)).collect();
            results.push(r);
        }
        // Extend the stamp reservation in the same batch when issued stamps
        // (by anyone on this node) approach it.
        let issued = self.clock.current();
        let reserved = self.reserved_hlc.load(Ordering::SeqCst);
        let new_reservation = if issued.saturating_add(hlc_delta_ms(HLC_RESERVE_AHEAD_MS / 2)) >= reserved {
            let r = hlc_from_physical_ms(hlc_physical_ms(issued) + HLC_RESERVE_AHEAD_MS);
            batch.put_cf(cf(&self.db, Cf::Meta), keys::META_HLC_RESERVED, r.to_be_bytes());
            Some(r)
        } else {
            None
        };
        let mut opts = WriteOptions::default();
        opts.set_sync(sync && self.fsync);
        let outcome = self.db.write_opt(batch, &opts);
        // Before any job is answered: a read after the answer must see it.
        match &outcome {
            Ok(()) => {
                for (key, cell) in cells {
                    self.cache.insert(key, cell);
                }
            }
            // What is on disk is unknown: forget everything.
            Err(_) => self.cache.clear(),
        }
        // One clock read per batch, for the failure log and the memtable sizes.
        let now = std::time::Instant::now();
        self.log_outcome(&outcome, now);
        match outcome {
            Ok(()) => {
                if let Some(r) = new_reservation {
                    self.reserved_hlc.fetch_max(r, Ordering::SeqCst);
                }
                for (key, old, new) in &pending.digest_updates {
                    self.digests.update(key, *old, *new);
                }
                let resized = {
                    let mut sizes = self.memtables.lock().expect("memtable sizes lock");
                    for (c, bytes) in jobs.iter().flat_map(|j| j.ops.iter().filter_map(WriteOp::memtable_entry)) {
                        sizes.record(c, 1, bytes);
                    }
                    sizes.decide(now)
                };
                for (job, r) in jobs.into_iter().zip(results) {
                    let _ = job.reply.send(r);
                }
                // After the answers: `SetOptions` writes a file. The next
                // batch is written only after it, with the new size.
                self.resize_memtables(resized);
            }
            Err(e) => {
                for job in jobs {
                    let _ = job.reply.send(Err(StoreError::Rocks(e.clone())));
                }
            }
        }
    }

    /// Applies the memtable sizes the sizers chose, `(family, old, new)`.
    /// A size RocksDB refuses is logged, and the sizer goes back to the old
    /// size (the family keeps it, and the metric says so).
    fn resize_memtables(&self, changes: Vec<(Cf, usize, usize)>) {
        for (c, old, bytes) in changes {
            match self.db.set_options_cf(cf(&self.db, c), &[("write_buffer_size", &bytes.to_string())]) {
                Ok(()) => tracing::info!(cf = c.name(), bytes, "memtable size changed"),
                Err(e) => {
                    tracing::warn!(cf = c.name(), bytes, kept_bytes = old, error = %e, "cannot change the memtable size");
                    self.memtables.lock().expect("memtable sizes lock").refused(c, old);
                }
            }
        }
    }

    fn log_outcome(&self, outcome: &Result<(), rocksdb::Error>, now: std::time::Instant) {
        let mut failures = self.failures.lock().expect("failure log lock");
        match outcome {
            Ok(()) => {
                if let Some(r) = failures.succeeded(now) {
                    tracing::warn!(failed = r.failed, lasted_ms = r.lasted.as_millis() as u64, "writes succeed again");
                }
            }
            Err(e) => match failures.failed(now) {
                OnFailure::First => tracing::error!(error = %e, "write batch failed"),
                OnFailure::Summary { failed_since_last } => tracing::error!(
                    error = %e,
                    failed_since_last,
                    "write batches still failing (one line per {} s)",
                    super::failure_log::SUMMARY_INTERVAL_MS / 1000
                ),
                OnFailure::Quiet => {}
            },
        }
    }

    fn current_cell(&self, cells: &HashMap<Bytes, Option<Cell>>, key: &Bytes) -> Result<Option<Cell>, StoreError> {
        if let Some(c) = cells.get(key) {
            return Ok(c.clone());
        }
        if let Some(c) = self.cache.get(key) {
            return Ok(c);
        }
        // Exact: nobody else writes cells, so this stays current until the
        // writer itself changes it.
        let c = read_cell(&self.db, key)?;
        self.cache.insert(key.clone(), c.clone());
        Ok(c)
    }

    fn put_cell(
        &self,
        batch: &mut WriteBatch,
        cells: &mut HashMap<Bytes, Option<Cell>>,
        pending: &mut Pending,
        key: &Bytes,
        old: Option<&Cell>,
        new: Cell,
    ) {
        if let Some(old) = old {
            // Versions of a key never go backwards on a replica.
            assert!(new.supersedes(old), "cell version regression on {:?}: {} -> {}", key, old.version, new.version);
        }
        batch.put_cf(cf(&self.db, Cf::Cells), key, new.encode());
        pending.digest_updates.push((
            key.clone(),
            old.map(|c| (c.version, c.is_tombstone())),
            Some((new.version, new.is_tombstone())),
        ));
        cells.insert(key.clone(), Some(new));
    }

    fn put_hints(
        &self,
        batch: &mut WriteBatch,
        hints: &mut HashMap<Vec<u8>, Option<Version>>,
        key: &Bytes,
        cell: &Cell,
    ) {
        let encoded = cell.encode();
        for peer in self.peers.read().expect("hint peers").iter().copied() {
            let hk = keys::hint_key(peer, key);
            batch.put_cf(cf(&self.db, Cf::Hints), &hk, &encoded);
            hints.insert(hk, Some(cell.version));
        }
    }

    fn apply(
        &self,
        op: &WriteOp,
        batch: &mut WriteBatch,
        cells: &mut HashMap<Bytes, Option<Cell>>,
        hints: &mut HashMap<Vec<u8>, Option<Version>>,
        pending: &mut Pending,
    ) -> Result<OpOutcome, StoreError> {
        match op {
            WriteOp::Fresh { key, value, origin, hints: with_hints } => {
                let current = self.current_cell(cells, key)?;
                let floor = current.as_ref().map_or(Version::ZERO, |c| c.version);
                let cell = Cell { value: value.clone(), version: self.clock.next_after(floor)?, origin: *origin };
                self.put_cell(batch, cells, pending, key, current.as_ref(), cell.clone());
                if *with_hints {
                    self.put_hints(batch, hints, key, &cell);
                }
                Ok(OpOutcome::Written(cell))
            }
            WriteOp::Cas { key, expected, new_value, origin, hints: with_hints } => {
                let current = self.current_cell(cells, key)?;
                let current_value = current.as_ref().and_then(|c| c.value.as_ref());
                let matches = match (expected, current_value) {
                    (None, None) => true,
                    (Some(e), Some(v)) => e == v,
                    _ => false,
                };
                if !matches {
                    return Ok(OpOutcome::Cas { swapped: false, current: current.filter(|c| !c.is_tombstone()) });
                }
                let floor = current.as_ref().map_or(Version::ZERO, |c| c.version);
                let cell = Cell::value(new_value.clone(), self.clock.next_after(floor)?, *origin);
                self.put_cell(batch, cells, pending, key, current.as_ref(), cell.clone());
                if *with_hints {
                    self.put_hints(batch, hints, key, &cell);
                }
                Ok(OpOutcome::Cas { swapped: true, current: Some(cell) })
            }
            WriteOp::Merge { key, cell } => {
                self.clock.observe(cell.version.hlc);
                let current = self.current_cell(cells, key)?;
                let applied = match &current {
                    None => true,
                    Some(cur) => cell.supersedes(cur),
                };
                if applied {
                    self.put_cell(batch, cells, pending, key, current.as_ref(), cell.clone());
                }
                Ok(OpOutcome::Merged { applied })
            }
            WriteOp::Put { cf: c, key, value } => {
                assert!(*c != Cf::Cells && *c != Cf::Hints, "cells and hints are written through their own ops");
                batch.put_cf(cf(&self.db, *c), key, value);
                Ok(OpOutcome::Done)
            }
            WriteOp::Delete { cf: c, key } => {
                assert!(*c != Cf::Cells, "cells are never deleted directly (tombstones)");
                batch.delete_cf(cf(&self.db, *c), key);
                Ok(OpOutcome::Done)
            }
            WriteOp::DeleteRange { cf: c, from, to } => {
                assert!(*c != Cf::Cells && *c != Cf::Hints);
                batch.delete_range_cf(cf(&self.db, *c), from, to);
                Ok(OpOutcome::Done)
            }
            WriteOp::DropHints { peer } => {
                assert!(*peer < NodeId::MAX, "node ids are below NodeId::MAX");
                let (from, to) = (keys::hint_prefix(*peer), keys::hint_prefix(*peer + 1));
                batch.delete_range_cf(cf(&self.db, Cf::Hints), from, to);
                // Later ops of this batch must not read these hints back.
                for (hk, v) in hints.iter_mut() {
                    if keys::split_hint_key(hk).is_some_and(|(p, _)| p == *peer) {
                        *v = None;
                    }
                }
                Ok(OpOutcome::Done)
            }
            WriteOp::ClearHint { peer, key, version } => {
                let hk = keys::hint_key(*peer, key);
                if self.hint_version(hints, &hk)? == Some(*version) {
                    batch.delete_cf(cf(&self.db, Cf::Hints), &hk);
                    hints.insert(hk, None);
                }
                Ok(OpOutcome::Done)
            }
            WriteOp::Purge { key, version } => {
                let current = self.current_cell(cells, key)?;
                let removed = match &current {
                    // At the purged version itself only the tombstone goes:
                    // a live value of the same version (never expected)
                    // would win the LWW tie, so it stays.
                    Some(c) if c.version < *version || (c.version == *version && c.is_tombstone()) => {
                        batch.delete_cf(cf(&self.db, Cf::Cells), key);
                        pending.digest_updates.push((key.clone(), Some((c.version, c.is_tombstone())), None));
                        cells.insert(key.clone(), None);
                        true
                    }
                    _ => false,
                };
                let peers = self.peers.read().expect("hint peers").clone();
                for peer in peers {
                    let hk = keys::hint_key(peer, key);
                    if self.hint_version(hints, &hk)?.is_some_and(|v| v <= *version) {
                        batch.delete_cf(cf(&self.db, Cf::Hints), &hk);
                        hints.insert(hk, None);
                    }
                }
                Ok(OpOutcome::Purged { removed })
            }
        }
    }

    /// The version the hint under `hk` holds, as of this batch.
    fn hint_version(
        &self,
        hints: &HashMap<Vec<u8>, Option<Version>>,
        hk: &[u8],
    ) -> Result<Option<Version>, StoreError> {
        if let Some(v) = hints.get(hk) {
            return Ok(*v);
        }
        match self.db.get_pinned_cf(cf(&self.db, Cf::Hints), hk)? {
            Some(bytes) => Ok(Some(Cell::decode_version(&bytes)?.0)),
            None => Ok(None),
        }
    }
}

/// The HLC difference corresponding to `ms` milliseconds of physical time.
fn hlc_delta_ms(ms: i64) -> u64 {
    hlc_from_physical_ms(hlc_physical_ms(0) + ms)
}
