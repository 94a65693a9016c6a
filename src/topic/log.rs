//! One partition replica's log in the node's RocksDB: key layouts, reads,
//! recovery after a restart, and the write ops the replica runtime batches
//! (every mutation still goes through the group-commit writer).
//!
//! * `topic_data`: `topic id (u64) | partition (u32) | offset (u64)`, all
//!   big-endian, so one partition is one contiguous key range in offset
//!   order, and truncation or retention is one `DeleteRange`. The value is
//!   an encoded [`StoredRecord`], shipped to followers verbatim.
//! * `topic_meta` (node-local, never replicated as such): `kind | topic id |
//!   partition | suffix` with kinds `e` (leader epoch → start offset),
//!   `h` (high watermark checkpoint), `s` (log start offset and its
//!   position), `p` (producer id → idempotence state) and `r` (marker: this
//!   node holds a replica; the value is the topic name).

use std::collections::HashMap;

use bytes::Bytes;
use prost::Message;
use rocksdb::{Direction, IteratorMode, ReadOptions, DB};

use super::epochs::EpochCache;
use super::producer_state::ProducerEntry;
use crate::proto::peer::StoredRecord;
use crate::store::{cf, Cf, StoreError, WriteOp};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionId {
    pub topic_id: u64,
    pub partition: u32,
}

impl std::fmt::Display for PartitionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.topic_id, self.partition)
    }
}

const KIND_EPOCH: u8 = b'e';
const KIND_HW: u8 = b'h';
const KIND_START: u8 = b's';
const KIND_PRODUCER: u8 = b'p';
const KIND_REPLICA: u8 = b'r';
const META_KINDS: [u8; 5] = [KIND_EPOCH, KIND_HW, KIND_START, KIND_PRODUCER, KIND_REPLICA];

fn prefix(pid: PartitionId) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&pid.topic_id.to_be_bytes());
    k[8..].copy_from_slice(&pid.partition.to_be_bytes());
    k
}

/// The first key after every key starting with `p`.
fn prefix_end(p: &[u8]) -> Vec<u8> {
    let mut v = p.to_vec();
    crate::store::increment(&mut v);
    v
}

pub fn data_key(pid: PartitionId, offset: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(20);
    k.extend_from_slice(&prefix(pid));
    k.extend_from_slice(&offset.to_be_bytes());
    k
}

fn offset_of(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.get(12..20)?.try_into().ok()?))
}

fn meta_key(kind: u8, pid: PartitionId, suffix: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(13 + suffix.len());
    k.push(kind);
    k.extend_from_slice(&prefix(pid));
    k.extend_from_slice(suffix);
    k
}

fn u64_at(b: &[u8], at: usize) -> Result<u64, StoreError> {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or(StoreError::Corrupt { what: "short topic metadata value" })
}

pub fn decode_record(b: &[u8]) -> Result<StoredRecord, StoreError> {
    StoredRecord::decode(b).map_err(|e| StoreError::Malformed { what: "topic record", source: e.into() })
}

/// Key + value bytes of a record: what `position` and retention.bytes count.
pub fn payload_len(r: &StoredRecord) -> u64 {
    (r.key.len() + r.value.len()) as u64
}

/// What a replica finds on disk at start-up.
#[derive(Clone, Debug, Default)]
pub struct Recovered {
    pub log_start: u64,
    /// `position` of the record at `log_start`.
    pub start_position: u64,
    pub leo: u64,
    pub high_watermark: u64,
    /// `position` of the next record to append.
    pub end_position: u64,
    pub last_timestamp_ms: i64,
    pub epochs: EpochCache,
    pub producers: HashMap<u64, ProducerEntry>,
}

fn scan_prefix<'a>(
    db: &'a DB,
    c: Cf,
    p: &[u8],
) -> impl Iterator<Item = Result<(Box<[u8]>, Box<[u8]>), rocksdb::Error>> + 'a {
    let mut ro = ReadOptions::default();
    ro.set_iterate_upper_bound(prefix_end(p));
    db.iterator_cf_opt(cf(db, c), ro, IteratorMode::From(p, Direction::Forward))
}

pub fn recover(db: &DB, pid: PartitionId) -> Result<Recovered, StoreError> {
    let mut r = Recovered::default();
    let mut start_position = 0;
    if let Some(v) = db.get_cf(cf(db, Cf::TopicMeta), meta_key(KIND_START, pid, &[]))? {
        r.log_start = u64_at(&v, 0)?;
        start_position = u64_at(&v, 8)?;
    }
    r.start_position = start_position;
    let p = prefix(pid);
    let mut ro = ReadOptions::default();
    ro.set_iterate_lower_bound(p.to_vec());
    ro.set_iterate_upper_bound(prefix_end(&p));
    let last = db.iterator_cf_opt(cf(db, Cf::TopicData), ro, IteratorMode::End).next().transpose()?;
    match last {
        Some((k, v)) => {
            let offset = offset_of(&k).ok_or(StoreError::Corrupt { what: "topic data key" })?;
            let rec = decode_record(&v)?;
            r.leo = offset + 1;
            r.end_position = rec.position + payload_len(&rec);
            r.last_timestamp_ms = rec.timestamp_ms;
        }
        None => {
            r.leo = r.log_start;
            r.end_position = start_position;
        }
    }
    if r.leo < r.log_start {
        return Err(StoreError::LogEndBelowStart {
            topic_id: pid.topic_id,
            partition: pid.partition,
            log_end: r.leo,
            log_start: r.log_start,
        });
    }
    if let Some(v) = db.get_cf(cf(db, Cf::TopicMeta), meta_key(KIND_HW, pid, &[]))? {
        r.high_watermark = u64_at(&v, 0)?.min(r.leo);
    }
    let mut epochs = Vec::new();
    for item in scan_prefix(db, Cf::TopicMeta, &meta_key(KIND_EPOCH, pid, &[])) {
        let (k, v) = item?;
        epochs.push((u64_at(&k, 13)?, u64_at(&v, 0)?));
    }
    r.epochs = EpochCache::from_entries(epochs);
    for item in scan_prefix(db, Cf::TopicMeta, &meta_key(KIND_PRODUCER, pid, &[])) {
        let (k, v) = item?;
        let id = u64_at(&k, 13)?;
        let e = ProducerEntry::decode(&v).ok_or(StoreError::Corrupt { what: "producer state" })?;
        r.producers.insert(id, e);
    }
    Ok(r)
}

/// Raw records `[from, to)`, at most `max_bytes` of them (but at least one
/// when any exists), in offset order.
pub fn read(db: &DB, pid: PartitionId, from: u64, to: u64, max_bytes: usize) -> Result<Vec<Bytes>, StoreError> {
    let mut out = Vec::new();
    if from >= to {
        return Ok(out);
    }
    let mut ro = ReadOptions::default();
    ro.set_iterate_upper_bound(data_key(pid, to));
    let start = data_key(pid, from);
    let mut bytes = 0usize;
    for item in db.iterator_cf_opt(cf(db, Cf::TopicData), ro, IteratorMode::From(&start, Direction::Forward)) {
        let (k, v) = item?;
        let offset = offset_of(&k).ok_or(StoreError::Corrupt { what: "topic data key" })?;
        if offset != from + out.len() as u64 {
            // A hole: retention or truncation ran concurrently; stop here.
            break;
        }
        if !out.is_empty() && bytes + v.len() > max_bytes {
            break;
        }
        bytes += v.len();
        out.push(Bytes::copy_from_slice(&v));
    }
    Ok(out)
}

pub fn read_record(db: &DB, pid: PartitionId, offset: u64) -> Result<Option<StoredRecord>, StoreError> {
    db.get_pinned_cf(cf(db, Cf::TopicData), data_key(pid, offset))?.map(|v| decode_record(&v)).transpose()
}

pub fn put_record(pid: PartitionId, offset: u64, record: Vec<u8>) -> WriteOp {
    WriteOp::Put { cf: Cf::TopicData, key: data_key(pid, offset), value: record }
}

/// Removes records at `from` and beyond.
pub fn delete_from(pid: PartitionId, from: u64) -> WriteOp {
    WriteOp::DeleteRange { cf: Cf::TopicData, from: data_key(pid, from), to: prefix_end(&prefix(pid)) }
}

/// Removes records below `to`.
pub fn delete_below(pid: PartitionId, to: u64) -> WriteOp {
    WriteOp::DeleteRange { cf: Cf::TopicData, from: prefix(pid).to_vec(), to: data_key(pid, to) }
}

pub fn put_epoch(pid: PartitionId, epoch: u64, start: u64) -> WriteOp {
    WriteOp::Put {
        cf: Cf::TopicMeta,
        key: meta_key(KIND_EPOCH, pid, &epoch.to_be_bytes()),
        value: start.to_be_bytes().to_vec(),
    }
}

pub fn delete_epoch(pid: PartitionId, epoch: u64) -> WriteOp {
    WriteOp::Delete { cf: Cf::TopicMeta, key: meta_key(KIND_EPOCH, pid, &epoch.to_be_bytes()) }
}

pub fn put_high_watermark(pid: PartitionId, hw: u64) -> WriteOp {
    WriteOp::Put { cf: Cf::TopicMeta, key: meta_key(KIND_HW, pid, &[]), value: hw.to_be_bytes().to_vec() }
}

pub fn put_log_start(pid: PartitionId, offset: u64, position: u64) -> WriteOp {
    let mut v = offset.to_be_bytes().to_vec();
    v.extend_from_slice(&position.to_be_bytes());
    WriteOp::Put { cf: Cf::TopicMeta, key: meta_key(KIND_START, pid, &[]), value: v }
}

pub fn put_producer(pid: PartitionId, producer_id: u64, e: &ProducerEntry) -> WriteOp {
    WriteOp::Put { cf: Cf::TopicMeta, key: meta_key(KIND_PRODUCER, pid, &producer_id.to_be_bytes()), value: e.encode() }
}

pub fn delete_producer(pid: PartitionId, producer_id: u64) -> WriteOp {
    WriteOp::Delete { cf: Cf::TopicMeta, key: meta_key(KIND_PRODUCER, pid, &producer_id.to_be_bytes()) }
}

pub fn put_replica_marker(pid: PartitionId, topic: &str) -> WriteOp {
    WriteOp::Put { cf: Cf::TopicMeta, key: meta_key(KIND_REPLICA, pid, &[]), value: topic.as_bytes().to_vec() }
}

/// Everything this node keeps about the partition.
pub fn delete_partition(pid: PartitionId) -> Vec<WriteOp> {
    let p = prefix(pid);
    let mut ops = vec![WriteOp::DeleteRange { cf: Cf::TopicData, from: p.to_vec(), to: prefix_end(&p) }];
    for kind in META_KINDS {
        let from = meta_key(kind, pid, &[]);
        let to = prefix_end(&from);
        ops.push(WriteOp::DeleteRange { cf: Cf::TopicMeta, from, to });
    }
    ops
}

/// Partitions this node holds a replica of (from the markers).
pub fn local_replicas(db: &DB) -> Result<Vec<(PartitionId, String)>, StoreError> {
    let mut out = Vec::new();
    for item in scan_prefix(db, Cf::TopicMeta, &[KIND_REPLICA]) {
        let (k, v) = item?;
        let topic_id = u64_at(&k, 1)?;
        let partition = u32::from_be_bytes(
            k.get(9..13).and_then(|s| s.try_into().ok()).ok_or(StoreError::Corrupt { what: "replica marker" })?,
        );
        out.push((PartitionId { topic_id, partition }, String::from_utf8_lossy(&v).into_owned()));
    }
    Ok(out)
}

/// Producers whose state mentions offsets at or beyond `offset`, rebuilt
/// from the records kept below it: reads back at most `max_records`
/// records; a producer not seen in them is forgotten (its next batch is
/// accepted with any sequence number).
pub fn rebuild_producers(
    db: &DB,
    pid: PartitionId,
    log_start: u64,
    offset: u64,
    affected: &[u64],
    max_records: u64,
) -> Result<HashMap<u64, Option<ProducerEntry>>, StoreError> {
    let mut found: HashMap<u64, Vec<(u64, u64, i64)>> = affected.iter().map(|&id| (id, Vec::new())).collect();
    let from = offset.saturating_sub(max_records).max(log_start);
    let mut ro = ReadOptions::default();
    ro.set_iterate_upper_bound(data_key(pid, offset));
    let start = data_key(pid, from);
    for item in db.iterator_cf_opt(cf(db, Cf::TopicData), ro, IteratorMode::From(&start, Direction::Forward)) {
        let (k, v) = item?;
        let o = offset_of(&k).ok_or(StoreError::Corrupt { what: "topic data key" })?;
        let rec = decode_record(&v)?;
        if let Some(list) = found.get_mut(&rec.producer_id) {
            list.push((rec.sequence, o, rec.timestamp_ms));
        }
    }
    Ok(found
        .into_iter()
        .map(|(id, recs)| {
            if recs.is_empty() {
                return (id, None);
            }
            let mut e = ProducerEntry::default();
            for (seq, o, ts) in recs {
                e.record(seq, o, ts);
            }
            (id, Some(e))
        })
        .collect())
}
