//! Raft snapshots of the replicated state machine (KV values, sessions and
//! topic metadata alike: the whole `rsm` family).
//!
//! A snapshot is the `rsm` column family at one applied index, written to a
//! file `snapshots/snap-INDEX-TERM.bin` from a RocksDB point-in-time view
//! (so apply goes on meanwhile). `raft::Storage::snapshot` hands out the
//! newest file that is recent enough, or asks for a new one and answers
//! "temporarily unavailable" (raft-rs retries). The transport streams the
//! file in chunks ([`CHUNK_BYTES`]); the receiver writes it to its own
//! snapshot dir before stepping the snapshot message into Raft.
//!
//! Installing replaces the `rsm` family by the file's records and
//! LWW-merges every user key into `cells`, so eventual/quorum data is never
//! lost. It is one write batch, so readers of the `rsm` family never see it
//! half done (hence [`MAX_INSTALL_BYTES`]). An `installing` marker in
//! `raft_state` makes a crash before that batch redo it at start-up.
//!
//! File: `MAGIC | index u64 | term u64 | {klen u32, key, vlen u32, value}* |
//! END u32 | xxh3 of all preceding bytes u64`, big-endian.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use bytes::Bytes;
use prost::Message;
use rocksdb::{IteratorMode, DB};
use xxhash_rust::xxh3::Xxh3;

use super::state_machine::{decode_applied, kv, KEY_PREFIX, META_APPLIED};
use crate::proto::rsm;
use crate::store::{cf, Cf, StoreError, WriteOp};

const MAGIC: &[u8; 8] = b"CAPKVSN1";
const END: u32 = u32::MAX;
/// Bytes per snapshot chunk on the wire.
pub const CHUNK_BYTES: usize = 1024 * 1024;
/// Largest snapshot file a node installs. The install is one write batch
/// (readers never see it half done), held in memory about three times over
/// (records, merged cells, the RocksDB batch) while it is built; a state
/// machine beyond this needs a staged install, which capkv does not have.
pub const MAX_INSTALL_BYTES: u64 = 512 * 1024 * 1024;
/// Largest key or value record accepted from a snapshot file.
pub const MAX_RECORD_BYTES: u32 = 128 * 1024 * 1024;

/// A snapshot file name that [`SnapMeta::file_name`] did not produce.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a snapshot file name (snap-INDEX-TERM.bin)")]
pub struct BadSnapshotName(pub String);

impl From<BadSnapshotName> for StoreError {
    fn from(e: BadSnapshotName) -> Self {
        StoreError::Malformed { what: "snapshot message", source: e.into() }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapMeta {
    pub index: u64,
    pub term: u64,
}

impl SnapMeta {
    pub fn file_name(&self) -> String {
        format!("snap-{:020}-{:020}.bin", self.index, self.term)
    }

    pub fn parse(name: &str) -> Option<SnapMeta> {
        let rest = name.strip_prefix("snap-")?.strip_suffix(".bin")?;
        let (i, t) = rest.split_once('-')?;
        Some(SnapMeta { index: i.parse().ok()?, term: t.parse().ok()? })
    }
}

/// The node's snapshot files and the pending request for a new one.
pub struct Snapshots {
    dir: PathBuf,
    latest: Mutex<Option<SnapMeta>>,
    requested: AtomicU64,
    wanted: AtomicBool,
}

impl Snapshots {
    pub fn open(dir: PathBuf) -> Result<Snapshots, StoreError> {
        std::fs::create_dir_all(&dir).map_err(io_at("create", &dir))?;
        let mut latest: Option<SnapMeta> = None;
        for entry in std::fs::read_dir(&dir).map_err(io_at("list", &dir))? {
            let entry = entry.map_err(io_at("list", &dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                let _ = std::fs::remove_file(entry.path());
            } else if let Some(m) = SnapMeta::parse(&name) {
                if latest.is_none_or(|l| m.index > l.index) {
                    latest = Some(m);
                }
            }
        }
        Ok(Snapshots { dir, latest: Mutex::new(latest), requested: AtomicU64::new(0), wanted: AtomicBool::new(false) })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The path of the snapshot file `name`, which must be exactly what
    /// [`SnapMeta::file_name`] produces. A snapshot message's data (the
    /// file name) crosses the network; any other name — a path, `..`, an
    /// absolute path — could make this node read a file outside its
    /// snapshot dir.
    pub fn file(&self, name: &str) -> Result<PathBuf, BadSnapshotName> {
        match SnapMeta::parse(name) {
            Some(m) if m.file_name() == name => Ok(self.dir.join(name)),
            _ => Err(BadSnapshotName(name.to_string())),
        }
    }

    /// The newest generated snapshot if its index is at least `index`.
    pub fn ready_at_least(&self, index: u64) -> Option<SnapMeta> {
        self.latest.lock().expect("snapshots lock").filter(|m| m.index >= index)
    }

    pub fn request(&self, index: u64, to: u64) {
        self.requested.fetch_max(index, Ordering::SeqCst);
        if !self.wanted.swap(true, Ordering::SeqCst) {
            tracing::info!(index, to, "snapshot requested for a lagging follower");
        }
    }

    /// A pending request, if any (cleared).
    pub fn take_request(&self) -> Option<u64> {
        self.wanted.swap(false, Ordering::SeqCst).then(|| self.requested.load(Ordering::SeqCst))
    }

    /// Writes a snapshot of the current `rsm` state (blocking).
    pub fn generate(&self, db: &DB) -> Result<SnapMeta, StoreError> {
        let view = db.snapshot();
        let rsm_cf = cf(db, Cf::Rsm);
        let applied = view
            .get_cf(rsm_cf, META_APPLIED)?
            .and_then(|b| decode_applied(&b))
            .ok_or(StoreError::Corrupt { what: "no applied index to snapshot" })?;
        let meta = SnapMeta { index: applied.0, term: applied.1 };
        let final_path = self.path(&meta.file_name());
        if final_path.exists() {
            self.publish(meta);
            return Ok(meta);
        }
        let tmp = self.path(&format!("{}.tmp", meta.file_name()));
        let mut w = ChecksumWriter::new(File::create(&tmp).map_err(io_at("create", &tmp))?, tmp.clone());
        w.write_all(MAGIC)?;
        w.write_all(&meta.index.to_be_bytes())?;
        w.write_all(&meta.term.to_be_bytes())?;
        let mut records = 0u64;
        for item in view.iterator_cf(rsm_cf, IteratorMode::Start) {
            let (k, v) = item?;
            w.write_all(&(k.len() as u32).to_be_bytes())?;
            w.write_all(&k)?;
            w.write_all(&(v.len() as u32).to_be_bytes())?;
            w.write_all(&v)?;
            records += 1;
        }
        w.write_all(&END.to_be_bytes())?;
        let sum = w.hasher.digest();
        let mut file = w.inner.into_inner().map_err(|e| io_at("write", &tmp)(e.into_error()))?;
        file.write_all(&sum.to_be_bytes()).map_err(io_at("write", &tmp))?;
        file.sync_all().map_err(io_at("sync", &tmp))?;
        std::fs::rename(&tmp, &final_path).map_err(io_at("rename", &tmp))?;
        let file_bytes = std::fs::metadata(&final_path).map_err(io_at("stat", &final_path))?.len();
        if file_bytes > MAX_INSTALL_BYTES {
            tracing::error!(
                index = meta.index,
                file_bytes,
                max_bytes = MAX_INSTALL_BYTES,
                "snapshot too large for a follower to install (MAX_INSTALL_BYTES)"
            );
        }
        tracing::info!(index = meta.index, term = meta.term, records, file_bytes, "snapshot generated");
        self.publish(meta);
        Ok(meta)
    }

    /// Makes `meta` the snapshot handed out, removing older files.
    pub fn publish(&self, meta: SnapMeta) {
        let mut latest = self.latest.lock().expect("snapshots lock");
        if latest.is_none_or(|l| meta.index >= l.index) {
            *latest = Some(meta);
        }
        let keep = latest.map(|m| m.file_name());
        drop(latest);
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(m) = SnapMeta::parse(&name) {
                    // Keep the newest and anything being installed/sent.
                    if Some(&name) != keep.as_ref() && m.index < meta.index {
                        let _ = std::fs::remove_file(e.path());
                    }
                }
            }
        }
    }
}

/// The error of file-system call `op` on `path`.
fn io_at<'a>(op: &'static str, path: &'a Path) -> impl Fn(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io { op, path: path.to_path_buf(), source }
}

struct ChecksumWriter {
    inner: BufWriter<File>,
    hasher: Xxh3,
    /// The file written, for errors.
    path: PathBuf,
}

impl ChecksumWriter {
    fn new(f: File, path: PathBuf) -> Self {
        ChecksumWriter { inner: BufWriter::new(f), hasher: Xxh3::new(), path }
    }

    fn write_all(&mut self, b: &[u8]) -> Result<(), StoreError> {
        self.hasher.update(b);
        self.inner.write_all(b).map_err(io_at("write", &self.path))
    }
}

/// A snapshot file that ended early.
fn truncated(e: std::io::Error) -> StoreError {
    StoreError::Malformed { what: "truncated snapshot", source: e.into() }
}

/// Reads a snapshot file record by record, verifying the checksum at the end.
pub struct SnapshotReader {
    r: BufReader<File>,
    hasher: Xxh3,
    pub meta: SnapMeta,
    done: bool,
}

impl SnapshotReader {
    pub fn open(path: &Path) -> Result<SnapshotReader, StoreError> {
        let f = File::open(path).map_err(io_at("open snapshot", path))?;
        let mut r = SnapshotReader {
            r: BufReader::new(f),
            hasher: Xxh3::new(),
            meta: SnapMeta { index: 0, term: 0 },
            done: false,
        };
        let mut magic = [0u8; 8];
        r.read_exact(&mut magic)?;
        if &magic != MAGIC {
            return Err(StoreError::NotASnapshot { path: path.to_path_buf() });
        }
        r.meta = SnapMeta { index: r.read_u64()?, term: r.read_u64()? };
        Ok(r)
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), StoreError> {
        self.r.read_exact(buf).map_err(truncated)?;
        self.hasher.update(buf);
        Ok(())
    }

    fn read_u32(&mut self) -> Result<u32, StoreError> {
        let mut b = [0u8; 4];
        self.read_exact(&mut b)?;
        Ok(u32::from_be_bytes(b))
    }

    fn read_u64(&mut self) -> Result<u64, StoreError> {
        let mut b = [0u8; 8];
        self.read_exact(&mut b)?;
        Ok(u64::from_be_bytes(b))
    }

    /// The next (key, value), or None at the (verified) end.
    pub fn next_record(&mut self) -> Result<Option<(Vec<u8>, Vec<u8>)>, StoreError> {
        if self.done {
            return Ok(None);
        }
        let klen = self.read_u32()?;
        if klen == END {
            let expected = self.hasher.digest();
            let mut b = [0u8; 8];
            self.r.read_exact(&mut b).map_err(truncated)?;
            if u64::from_be_bytes(b) != expected {
                return Err(StoreError::Corrupt { what: "snapshot checksum mismatch" });
            }
            self.done = true;
            return Ok(None);
        }
        if klen > MAX_RECORD_BYTES {
            return Err(StoreError::SnapshotRecordTooLarge { field: "key", bytes: klen });
        }
        let mut k = vec![0u8; klen as usize];
        self.read_exact(&mut k)?;
        let vlen = self.read_u32()?;
        if vlen > MAX_RECORD_BYTES {
            return Err(StoreError::SnapshotRecordTooLarge { field: "value", bytes: vlen });
        }
        let mut v = vec![0u8; vlen as usize];
        self.read_exact(&mut v)?;
        Ok(Some((k, v)))
    }
}

/// Appends to `ops` the writes of every record left in the file (checking
/// its checksum at the end): rsm puts plus the LWW merge of user keys into
/// `cells`. Returns how many records there were.
pub fn install_ops(reader: &mut SnapshotReader, ops: &mut Vec<WriteOp>) -> Result<u64, StoreError> {
    let mut records = 0u64;
    while let Some((k, v)) = reader.next_record()? {
        if k.first() == Some(&KEY_PREFIX) {
            let val = rsm::Value::decode(&v[..])
                .map_err(|e| StoreError::Malformed { what: "snapshot value", source: e.into() })?;
            // The carstamp whole (`rmw` too): a CAS result without it would
            // sort below its chain's earlier results.
            let cell = kv::cell_of(val);
            ops.push(WriteOp::Merge { key: Bytes::copy_from_slice(&k[1..]), cell });
        }
        ops.push(WriteOp::Put { cf: Cf::Rsm, key: k, value: v });
        records += 1;
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A snapshot file holding `records`, in the format [`Snapshots::generate`] writes.
    fn snapshot_file(path: &Path, meta: SnapMeta, records: &[(Vec<u8>, Vec<u8>)]) {
        let mut w = ChecksumWriter::new(File::create(path).unwrap(), path.to_path_buf());
        w.write_all(MAGIC).unwrap();
        w.write_all(&meta.index.to_be_bytes()).unwrap();
        w.write_all(&meta.term.to_be_bytes()).unwrap();
        for (k, v) in records {
            w.write_all(&(k.len() as u32).to_be_bytes()).unwrap();
            w.write_all(k).unwrap();
            w.write_all(&(v.len() as u32).to_be_bytes()).unwrap();
            w.write_all(v).unwrap();
        }
        w.write_all(&END.to_be_bytes()).unwrap();
        let sum = w.hasher.digest();
        let mut file = w.inner.into_inner().unwrap();
        file.write_all(&sum.to_be_bytes()).unwrap();
    }

    /// Installing a snapshot merges into `cells` the very cell the state
    /// machine holds for each user key (`kv::read_cell`), version included:
    /// a CAS result's version is a carstamp `(hlc, node_id, rmw)`, and the
    /// same cell with `rmw` dropped sorts *below* the CAS's earlier results
    /// (and ties with its base write, which has another value), so a quorum
    /// read could order the CAS chain wrongly.
    #[test]
    fn an_install_merges_the_state_machines_cells_with_their_versions() {
        use crate::rsm::state_machine::{kv, MemRsm};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snap.bin");
        let value =
            rsm::Value { value: Bytes::from_static(b"after-two-cas"), tombstone: false, hlc: 7, node_id: 3, rmw: 2 };
        let record = (kv::user_key(b"k"), value.encode_to_vec());
        snapshot_file(&path, SnapMeta { index: 5, term: 1 }, std::slice::from_ref(&record));
        let mut reader = SnapshotReader::open(&path).unwrap();
        let mut ops = Vec::new();
        assert_eq!(install_ops(&mut reader, &mut ops).unwrap(), 1);
        let merged: Vec<&crate::store::Cell> = ops
            .iter()
            .filter_map(|op| match op {
                WriteOp::Merge { cell, .. } => Some(cell),
                _ => None,
            })
            .collect();
        let state = MemRsm([record].into_iter().collect());
        let held = kv::read_cell(&state, b"k").unwrap().unwrap();
        assert_eq!(merged, vec![&held], "the install merges the state machine's cell as it is");
    }

    #[test]
    fn snapshot_file_names_round_trip() {
        let m = SnapMeta { index: 42, term: 7 };
        assert_eq!(SnapMeta::parse(&m.file_name()), Some(m));
        assert_eq!(SnapMeta::parse("snap-x.bin"), None);
    }

    #[test]
    fn only_generated_file_names_name_a_snapshot_file() {
        let dir = tempfile::tempdir().unwrap();
        let snaps = Snapshots::open(dir.path().join("snapshots")).unwrap();
        let name = SnapMeta { index: 42, term: 7 }.file_name();
        assert_eq!(snaps.file(&name).unwrap(), dir.path().join("snapshots").join(&name));
        for bad in [
            "../../etc/passwd",
            "/etc/passwd",
            "snap-1-2.bin/../../x",
            "../snap-00000000000000000042-00000000000000000007.bin",
            "snap-+42-7.bin",
            "snap-42-7.bin",
            "",
        ] {
            assert_eq!(snaps.file(bad), Err(BadSnapshotName(bad.to_string())), "{bad:?}");
        }
    }
}
