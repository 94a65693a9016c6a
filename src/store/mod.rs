//! The storage engine: one RocksDB per node (DESIGN §3).
//!
//! * [`cell`]: the LWW cell kept per user key.
//! * [`writer`]: the group-commit writer thread, the only writer (in the
//!   caller's task instead under simulation, [`WriterMode::Inline`]).
//! * [`cache`]: the current cells of recently written keys, filled by the
//!   writer and read first by [`Store::get_cell`].
//! * [`digest`]: per-bucket digests for anti-entropy.
//! * [`keys`]: column families and key layouts.
//! * [`lock`]: exclusive ownership of the data directory.
//! * [`memtable_size`]: the cells and state machine memtables sized from
//!   the entries written to them.
//!
//! Reads go to RocksDB from any thread (cells through the cell cache first);
//! every mutation is a [`WriteOp`] sent to the writer, answered after its
//! batch is written (and fsynced, for `sync` jobs).

pub mod cache;
pub mod cell;
pub mod digest;
pub mod engine_stats;
pub mod failure_log;
pub mod keys;
pub mod lock;
pub mod memtable_size;
pub mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rocksdb::{
    BlockBasedOptions, ColumnFamily, ColumnFamilyDescriptor, DBCompressionType, IteratorMode, Options, ReadOptions, DB,
};
use tokio::sync::{mpsc, oneshot};

pub use cell::Cell;
pub use digest::{Digests, BUCKETS};
pub use keys::Cf;
pub use writer::{OpOutcome, WriteOp};

use crate::clock::{Clock, NodeId, Version};
use lock::DirLock;

/// A boxed error that a decoder or a check of another layer returned.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why the storage engine (or data read through it) failed. Each variant
/// carries the facts; the messages are what operators see in logs and in
/// `INTERNAL` statuses.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the data directory's lock (`lock.rs`).
    #[error(
        "data dir {} is in use by another capkv process{}; stop it or choose another --data-dir",
        .dir.display(),
        .owner_pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    InUse {
        dir: PathBuf,
        /// The owner's pid as it wrote it into the lock file, if readable.
        owner_pid: Option<u32>,
    },
    /// A file-system call on `path` failed; `op` says which ("open",
    /// "stat snapshot", ...).
    #[error("storage I/O error: cannot {op} {}: {source}", .path.display())]
    Io { op: &'static str, path: PathBuf, source: std::io::Error },
    /// A thread of the engine could not be started.
    #[error("storage I/O error: cannot start {thread} thread: {source}")]
    Thread { thread: &'static str, source: std::io::Error },
    /// A blocking storage task panicked or was cancelled.
    #[error("storage I/O error: {task} task: {source}")]
    Task { task: &'static str, source: tokio::task::JoinError },
    /// RocksDB's own error (its message is all it carries).
    #[error("RocksDB error: {0}")]
    Rocks(#[from] rocksdb::Error),
    /// Stored data breaks its layout: `what` names the data.
    #[error("corrupt data: {what}")]
    Corrupt { what: &'static str },
    /// Stored data that does not decode (or a check of it fails): `what`
    /// names the data, `source` is the decoder's or the check's error.
    #[error("corrupt data: {what}: {source}")]
    Malformed { what: &'static str, source: BoxError },
    /// A stored cell that does not decode.
    #[error("corrupt data: {0}")]
    Cell(#[from] cell::DecodeError),
    /// The Raft log skips an index.
    #[error("corrupt data: gap in the raft log at index {index}")]
    RaftLogGap { index: u64 },
    /// A file handed over as a Raft snapshot lacks the snapshot header.
    #[error("corrupt data: {} is not a capkv snapshot", .path.display())]
    NotASnapshot { path: PathBuf },
    /// A snapshot record's key or value (`field`) claims more bytes than a
    /// record may hold.
    #[error("corrupt data: snapshot {field} of {bytes} bytes")]
    SnapshotRecordTooLarge { field: &'static str, bytes: u32 },
    /// A topic partition's log end lies below its log start.
    #[error("corrupt data: partition {topic_id}/{partition}: log end {log_end} below log start {log_start}")]
    LogEndBelowStart { topic_id: u64, partition: u32, log_end: u64, log_start: u64 },
    #[error("the storage engine is shut down")]
    Closed,
    #[error("clock: {0}")]
    Clock(#[from] crate::clock::ClockError),
    /// A snapshot beyond what one install may write, refused before
    /// anything was written.
    #[error(
        "too large: snapshot {name} holds {bytes} bytes; one install writes at most {max_bytes} (MAX_INSTALL_BYTES)"
    )]
    SnapshotTooLarge { name: String, bytes: u64, max_bytes: u64 },
}

/// Memtable size of the key-value and Raft column families. Small on
/// purpose: hot keys (sessions, counters) are rewritten constantly and every
/// version is a skip-list node until the flush, so the memtable's depth and
/// cache misses, not its size, set the cost of each insert and get. A deep
/// skip list made inserts and gets ~10 % of a busy node's CPU with RocksDB's
/// default of 64 MiB; 8 → 2 MiB gave 5–30 % more quorum and linearizable
/// sets at 32 clients (1 MiB measured the same as 2). The cells and state
/// machine families open with it and then follow the size of what is
/// written to them ([`memtable_size`]): large values get larger memtables.
pub const WRITE_BUFFER_BYTES: usize = 2 * 1024 * 1024;
/// Memtable size of topic records: appended once, never rewritten, and
/// written in bulk, where a small memtable would only mean more flushes.
pub const TOPIC_WRITE_BUFFER_BYTES: usize = 8 * 1024 * 1024;
/// Memtable size of the Raft log: like topic records, entries are
/// appended once under new keys and never rewritten (only deleted by log
/// compaction), so a small memtable buys no shallower skip list, only more
/// flushes. Measured against 2 MiB: docs/performance.md, "1 M keys of 4
/// KiB" (per column family).
pub const RAFT_LOG_WRITE_BUFFER_BYTES: usize = 16 * 1024 * 1024;
/// Write-ahead log kept at most before the column families still holding
/// its oldest file are flushed. Rarely written families (metadata, hints)
/// would otherwise pin every log file behind them, and none would become
/// obsolete to be recycled (below).
pub const MAX_TOTAL_WAL_BYTES: usize = 16 * 1024 * 1024;
/// Obsolete write-ahead log files kept to be written over instead of
/// creating new ones. A synced write that grows its file makes `fdatasync`
/// also write the inode (the new size), a second synchronous I/O on every
/// commit; a recycled file is already long enough. Measured: quorum sets at
/// 32 clients 7–15 % faster, 10–15 % less server CPU per set.
pub const WAL_RECYCLE_FILES: usize = 16;
/// Size at which RocksDB's info log (`db/LOG`: flushes, compactions,
/// statistics) is rolled over. RocksDB's default never rolls it while the
/// process runs: in a one-hour soak at 4.3 k ops/s every data directory grew
/// by about 20 MiB, and `db/LOG` alone grew by about 330 kB a minute at that load
/// (docs/performance.md, "Soak"). With [`INFO_LOG_FILES_KEPT`] old files
/// kept, the info log takes at most `(INFO_LOG_FILES_KEPT + 1) *
/// MAX_INFO_LOG_BYTES` (20 MiB, about an hour of that load).
pub const MAX_INFO_LOG_BYTES: usize = 4 * 1024 * 1024;
/// Rolled-over info log files kept (`LOG.old.*`); older ones are deleted.
pub const INFO_LOG_FILES_KEPT: usize = 4;

fn write_buffer_bytes(c: Cf) -> usize {
    match c {
        Cf::TopicData => TOPIC_WRITE_BUFFER_BYTES,
        Cf::RaftLog => RAFT_LOG_WRITE_BUFFER_BYTES,
        _ => WRITE_BUFFER_BYTES,
    }
}

pub(crate) fn cf(db: &DB, c: Cf) -> &ColumnFamily {
    db.cf_handle(c.name()).expect("every column family is created at open")
}

pub(crate) fn read_cell(db: &DB, key: &[u8]) -> Result<Option<Cell>, StoreError> {
    match db.get_pinned_cf(cf(db, Cf::Cells), key)? {
        Some(bytes) => Ok(Some(Cell::decode(&bytes)?)),
        None => Ok(None),
    }
}

/// (key, version, tombstone) of a cell, as anti-entropy lists them.
pub type KeyVersion = (Bytes, Version, bool);

/// Where the writer runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WriterMode {
    /// Its own thread, group-committing whatever queued while it wrote (the
    /// production shape).
    #[default]
    Thread,
    /// In the task that calls [`Store::write`], one job per batch: for the
    /// one-thread deterministic simulation (`crate::sim`), where a second
    /// thread would race the paused clock (see `crate::rt`). Only for a
    /// current-thread runtime: it blocks the caller for the write. Writes are
    /// not fsynced (they still reach the OS before the answer): the
    /// simulation's restarts are clean process stops, not power losses, so
    /// an fsync would change nothing but cost real time on every write.
    /// A `sync` job first waits `sync_delay_ms` of (simulated) time instead,
    /// the disk's latency: other tasks run meanwhile, as they would while
    /// the real writer fsyncs.
    Inline { sync_delay_ms: u64 },
}

/// The writer, as the store reaches it.
enum WriterHandle {
    Thread { tx: mpsc::Sender<writer::WriteJob>, thread: std::thread::JoinHandle<()> },
    Inline(writer::Writer),
}

/// The nodes hints are kept for, shared by the store and its writer.
pub(crate) type HintPeers = Arc<std::sync::RwLock<Vec<NodeId>>>;

pub struct Store {
    db: Arc<DB>,
    /// `None` once shut down.
    writer: Mutex<Option<WriterHandle>>,
    /// [`WriterMode::Inline`]'s simulated fsync time (0 with the thread).
    sync_delay_ms: u64,
    clock: Arc<Clock>,
    digests: Arc<Digests>,
    cache: Arc<cache::CellCache>,
    reserved_hlc: Arc<AtomicU64>,
    /// The other nodes (whose hints this node may keep); follows the
    /// member set ([`Store::set_hint_peers`]), shared with the writer.
    peers: HintPeers,
    /// The highest Raft index whose apply is durable here
    /// ([`Store::raft_applied`]).
    raft_applied: AtomicU64,
    /// Memtable sizes of the cells and state machine families, as the
    /// writer chose them.
    memtables: Arc<Mutex<memtable_size::MemtableSizes>>,
    dir: PathBuf,
    _lock: DirLock,
}

impl Store {
    /// Opens (creating if needed) the node's database in `dir`. `peers` are
    /// the other nodes, for which `Fresh { hints: true }` writes store hints.
    pub fn open(dir: &Path, clock: Arc<Clock>, peers: Vec<NodeId>) -> Result<Arc<Store>, StoreError> {
        Store::open_with(dir, clock, peers, WriterMode::Thread)
    }

    /// [`Store::open`] with the writer where `mode` says.
    pub fn open_with(
        dir: &Path,
        clock: Arc<Clock>,
        peers: Vec<NodeId>,
        mode: WriterMode,
    ) -> Result<Arc<Store>, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            op: "create data dir",
            path: dir.to_path_buf(),
            source,
        })?;
        let lock = DirLock::acquire(dir)?;
        let db_dir = dir.join("db");

        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.increase_parallelism(2);
        opts.set_compression_type(DBCompressionType::Lz4);
        opts.set_max_total_wal_size(MAX_TOTAL_WAL_BYTES as u64);
        opts.set_keep_log_file_num(INFO_LOG_FILES_KEPT);
        opts.set_max_log_file_size(MAX_INFO_LOG_BYTES);
        opts.set_recycle_log_file_num(WAL_RECYCLE_FILES);
        let mut table = BlockBasedOptions::default();
        table.set_bloom_filter(10.0, false);
        let cf_opts = |c: Cf| {
            let mut o = Options::default();
            o.set_compression_type(DBCompressionType::Lz4);
            o.set_write_buffer_size(write_buffer_bytes(c));
            o.set_block_based_table_factory(&table);
            o
        };
        let descriptors: Vec<_> = Cf::ALL.iter().map(|&c| ColumnFamilyDescriptor::new(c.name(), cf_opts(c))).collect();
        let db = Arc::new(DB::open_cf_descriptors(&opts, &db_dir, descriptors)?);

        // Never re-issue a stamp handed out before a crash or restart.
        let reserved = match db.get_cf(cf(&db, Cf::Meta), keys::META_HLC_RESERVED)? {
            Some(b) => u64::from_be_bytes(
                b.as_slice().try_into().map_err(|_| StoreError::Corrupt { what: "hlc reservation" })?,
            ),
            None => 0,
        };
        clock.force(reserved).map_err(|e| StoreError::Malformed { what: "hlc reservation", source: e.into() })?;

        let digests = Arc::new(Digests::default());
        let mut cells = 0u64;
        for item in db.iterator_cf(cf(&db, Cf::Cells), IteratorMode::Start) {
            let (k, v) = item?;
            let (version, tomb) = Cell::decode_version(&v)?;
            digests.update(&k, None, Some((version, tomb)));
            cells += 1;
        }
        tracing::info!(dir = %dir.display(), cells, "store opened");

        let reserved_hlc = Arc::new(AtomicU64::new(reserved));
        let cache = Arc::new(cache::CellCache::default());
        let peers: HintPeers = Arc::new(std::sync::RwLock::new(peers));
        let memtables = Arc::new(Mutex::new(memtable_size::MemtableSizes::default()));
        let w = writer::Writer {
            cache: cache.clone(),
            db: db.clone(),
            clock: clock.clone(),
            digests: digests.clone(),
            reserved_hlc: reserved_hlc.clone(),
            peers: peers.clone(),
            fsync: matches!(mode, WriterMode::Thread),
            failures: Default::default(),
            memtables: memtables.clone(),
        };
        let writer = match mode {
            WriterMode::Thread => {
                let (tx, rx) = mpsc::channel(writer::WRITE_QUEUE_DEPTH);
                let thread = std::thread::Builder::new()
                    .name("capkv-writer".into())
                    .spawn(move || w.run(rx))
                    .map_err(|source| StoreError::Thread { thread: "writer", source })?;
                WriterHandle::Thread { tx, thread }
            }
            WriterMode::Inline { .. } => WriterHandle::Inline(w),
        };
        Ok(Arc::new(Store {
            db,
            writer: Mutex::new(Some(writer)),
            sync_delay_ms: match mode {
                WriterMode::Inline { sync_delay_ms } => sync_delay_ms,
                WriterMode::Thread => 0,
            },
            clock,
            digests,
            cache,
            reserved_hlc,
            peers,
            raft_applied: AtomicU64::new(0),
            memtables,
            dir: dir.to_path_buf(),
            _lock: lock,
        }))
    }

    /// The nodes this node keeps hints for.
    pub fn hint_peers(&self) -> Vec<NodeId> {
        self.peers.read().expect("hint peers").clone()
    }

    /// The member set changed: from now on hints are kept for `peers`
    /// only, and every hint of a node no longer among them is deleted
    /// (durably): a removed member will never take them. Returns the
    /// nodes whose hints went.
    pub async fn set_hint_peers(&self, peers: Vec<NodeId>) -> Result<Vec<NodeId>, StoreError> {
        let gone: Vec<NodeId> = {
            let mut now = self.peers.write().expect("hint peers");
            let gone = now.iter().copied().filter(|p| !peers.contains(p)).collect();
            *now = peers;
            gone
        };
        // Queued behind every batch that may still have written a hint for
        // them with the old list, so none survives.
        let ops: Vec<WriteOp> = gone.iter().map(|&peer| WriteOp::DropHints { peer }).collect();
        if !ops.is_empty() {
            self.write(ops, true).await?;
        }
        Ok(gone)
    }

    pub fn db(&self) -> &Arc<DB> {
        &self.db
    }

    pub fn clock(&self) -> &Arc<Clock> {
        &self.clock
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn cf(&self, c: Cf) -> &ColumnFamily {
        cf(&self.db, c)
    }

    /// (family, memtable size in bytes) of the families whose memtable
    /// follows what is written ([`memtable_size`]).
    pub fn memtable_sizes(&self) -> Vec<(Cf, usize)> {
        self.memtables.lock().expect("memtable sizes lock").current()
    }

    /// The key's current cell, from the cell cache when it holds the key.
    pub fn get_cell(&self, key: &[u8]) -> Result<Option<Cell>, StoreError> {
        if let Some(cell) = self.cache.get(key) {
            return Ok(cell);
        }
        read_cell(&self.db, key)
    }

    pub fn get_raw(&self, c: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_cf(cf(&self.db, c), key)?)
    }

    /// Submits ops to the writer and waits for them to be written (and
    /// fsynced when `sync`). Outcomes are in op order.
    pub async fn write(&self, ops: Vec<WriteOp>, sync: bool) -> Result<Vec<OpOutcome>, StoreError> {
        let (reply, rx) = oneshot::channel();
        let job = writer::WriteJob { ops, sync, reply };
        let mut job = Some(job);
        if sync && self.sync_delay_ms > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(self.sync_delay_ms)).await;
        }
        let queue = match self.writer.lock().expect("store writer lock").as_ref().ok_or(StoreError::Closed)? {
            WriterHandle::Thread { tx, .. } => Some(tx.clone()),
            WriterHandle::Inline(w) => {
                // Written before anything else runs (no await under the lock).
                w.commit(job.take().into_iter().collect());
                None
            }
        };
        if let (Some(tx), Some(job)) = (queue, job) {
            tx.send(job).await.map_err(|_| StoreError::Closed)?;
        }
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// The highest Raft index whose apply is durable in this store: every
    /// cell the entries up to it merged (or a snapshot at or above it
    /// brought) is here, fsynced, or superseded by a newer cell. `0` until
    /// the Raft driver says otherwise. A replica asked to write back a
    /// command's cell that it has applied already holds it, so it need not
    /// write (or fsync) again (`levels::quorum::core::Message::Write`).
    pub fn raft_applied(&self) -> u64 {
        self.raft_applied.load(Ordering::SeqCst)
    }

    /// Called by the Raft driver once an apply (or a snapshot install) up
    /// to `index` is written and, when it merged cells, fsynced. Never goes
    /// back: the driver's applied index only grows.
    pub fn set_raft_applied(&self, index: u64) {
        self.raft_applied.fetch_max(index, Ordering::SeqCst);
    }

    /// Makes sure a stamp about to leave this node (e.g. a quorum write's
    /// version) is covered by the persisted reservation before it is used.
    pub async fn ensure_reserved(&self, hlc: u64) -> Result<(), StoreError> {
        if hlc < self.reserved_hlc.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.write(Vec::new(), true).await.map(|_| ())
    }

    pub fn digests(&self) -> Vec<u64> {
        self.digests.snapshot()
    }

    /// (key, version, tombstone) of every cell whose bucket is in `buckets`,
    /// in key order after `after_key`, at most `limit` entries; `true` when
    /// more remain.
    pub fn list_buckets(
        &self,
        buckets: &[u32],
        after_key: &[u8],
        limit: usize,
    ) -> Result<(Vec<KeyVersion>, bool), StoreError> {
        let wanted: std::collections::HashSet<u32> = buckets.iter().copied().collect();
        let mut out = Vec::new();
        let mode = if after_key.is_empty() {
            IteratorMode::Start
        } else {
            IteratorMode::From(after_key, rocksdb::Direction::Forward)
        };
        for item in self.db.iterator_cf(cf(&self.db, Cf::Cells), mode) {
            let (k, v) = item?;
            if !after_key.is_empty() && &*k == after_key {
                continue;
            }
            if !wanted.contains(&digest::bucket_of(&k)) {
                continue;
            }
            if out.len() == limit {
                return Ok((out, true));
            }
            let (version, tomb) = Cell::decode_version(&v)?;
            out.push((Bytes::copy_from_slice(&k), version, tomb));
        }
        Ok((out, false))
    }

    /// The quorum level's state transfer: at most `limit` cells in key
    /// order after `after` (from the first key when `None`), and past the
    /// first at most `bytes_max` of keys and values; `true` when more remain.
    pub fn scan_cells(
        &self,
        after: Option<&[u8]>,
        limit: usize,
        bytes_max: usize,
    ) -> Result<(Vec<(Bytes, Cell)>, bool), StoreError> {
        assert!(limit > 0, "an empty cell scan");
        let mode = match after {
            None => IteratorMode::Start,
            Some(a) => IteratorMode::From(a, rocksdb::Direction::Forward),
        };
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for item in self.db.iterator_cf(cf(&self.db, Cf::Cells), mode) {
            let (k, v) = item?;
            if after.is_some_and(|a| &*k == a) {
                continue;
            }
            let cell = Cell::decode(&v)?;
            let size = k.len() + cell.value.as_ref().map_or(0, |v| v.len());
            if out.len() == limit || (!out.is_empty() && bytes + size > bytes_max) {
                return Ok((out, true));
            }
            bytes += size;
            out.push((Bytes::copy_from_slice(&k), cell));
        }
        Ok((out, false))
    }

    /// Tombstone GC: whether this node holds `key` at `version` or newer,
    /// with no hint of the key left holding an older version (a hint is a
    /// copy still to be delivered: once the tombstone is purged, an older
    /// cell arriving from a hint would bring the deleted value back).
    pub fn gc_covers(&self, key: &[u8], version: Version) -> Result<bool, StoreError> {
        if self.get_cell(key)?.is_none_or(|c| c.version < version) {
            return Ok(false);
        }
        for peer in self.hint_peers() {
            if let Some(bytes) = self.db.get_pinned_cf(cf(&self.db, Cf::Hints), keys::hint_key(peer, key))? {
                if Cell::decode_version(&bytes)?.0 < version {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// Tombstone GC: the tombstones among at most `scan_max` cells after
    /// `after_key` (in key order) whose version `wanted` accepts, at most
    /// `take_max` of them; and where the next scan resumes (`None`: the
    /// scan reached the last cell).
    pub fn scan_tombstones(
        &self,
        after_key: &[u8],
        scan_max: usize,
        take_max: usize,
        wanted: impl Fn(Version) -> bool,
    ) -> Result<(Vec<(Bytes, Version)>, Option<Bytes>), StoreError> {
        assert!(scan_max > 0 && take_max > 0, "an empty tombstone scan");
        let mode = if after_key.is_empty() {
            IteratorMode::Start
        } else {
            IteratorMode::From(after_key, rocksdb::Direction::Forward)
        };
        let mut out = Vec::new();
        let mut scanned = 0;
        for item in self.db.iterator_cf(cf(&self.db, Cf::Cells), mode) {
            let (k, v) = item?;
            if !after_key.is_empty() && &*k == after_key {
                continue;
            }
            scanned += 1;
            let (version, tomb) = Cell::decode_version(&v)?;
            if tomb && wanted(version) {
                out.push((Bytes::copy_from_slice(&k), version));
            }
            if scanned == scan_max || out.len() == take_max {
                return Ok((out, Some(Bytes::copy_from_slice(&k))));
            }
        }
        Ok((out, None))
    }

    /// Hints for `peer`, in key order after `after_key`: at most `limit`
    /// and, past the first, at most `bytes_max` of keys plus encoded cells
    /// (a page must fit in one peer message, see `node::peer_batch`).
    pub fn scan_hints(
        &self,
        peer: NodeId,
        after_key: &[u8],
        limit: usize,
        bytes_max: usize,
    ) -> Result<Vec<(Bytes, Cell)>, StoreError> {
        assert!(limit > 0 && bytes_max > 0, "an empty hint page");
        let mut bytes = 0usize;
        let prefix = keys::hint_prefix(peer);
        let start = keys::hint_key(peer, after_key);
        let mut ro = ReadOptions::default();
        let mut upper = prefix.to_vec();
        increment(&mut upper);
        ro.set_iterate_upper_bound(upper);
        let mut out = Vec::new();
        for item in self.db.iterator_cf_opt(
            cf(&self.db, Cf::Hints),
            ro,
            IteratorMode::From(&start, rocksdb::Direction::Forward),
        ) {
            let (k, v) = item?;
            let Some((p, user_key)) = keys::split_hint_key(&k) else { continue };
            debug_assert_eq!(p, peer);
            if !after_key.is_empty() && user_key == after_key {
                continue;
            }
            let hint_bytes = user_key.len() + v.len();
            if !out.is_empty() && bytes.saturating_add(hint_bytes) > bytes_max {
                break;
            }
            bytes = bytes.saturating_add(hint_bytes);
            out.push((Bytes::copy_from_slice(user_key), Cell::decode(&v)?));
            if out.len() == limit {
                break;
            }
        }
        Ok(out)
    }

    /// Number of hints stored for `peer` (counted, up to `max`).
    pub fn count_hints(&self, peer: NodeId, max: usize) -> Result<usize, StoreError> {
        let prefix = keys::hint_prefix(peer);
        let mut ro = ReadOptions::default();
        let mut upper = prefix.to_vec();
        increment(&mut upper);
        ro.set_iterate_upper_bound(upper);
        let mut n = 0;
        for item in self.db.iterator_cf_opt(
            cf(&self.db, Cf::Hints),
            ro,
            IteratorMode::From(&prefix, rocksdb::Direction::Forward),
        ) {
            item?;
            n += 1;
            if n >= max {
                break;
            }
        }
        Ok(n)
    }

    /// Stops the writer after it has drained queued jobs, and waits for it.
    pub fn shutdown(&self) {
        let writer = self.writer.lock().expect("store writer lock").take();
        if let Some(WriterHandle::Thread { tx, thread }) = writer {
            drop(tx);
            let _ = thread.join();
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The smallest byte string greater than every string with prefix `bytes`.
pub(crate) fn increment(bytes: &mut Vec<u8>) {
    while let Some(last) = bytes.pop() {
        if last < 0xff {
            bytes.push(last + 1);
            return;
        }
    }
}

#[cfg(test)]
mod tests;
