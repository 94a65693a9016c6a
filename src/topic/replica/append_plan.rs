//! The decision part of the leader's append, pure: which queued produce
//! requests make one group commit ([`gather`]), and, for a batch, given the
//! log end and the producer state ([`plan_append`]), which requests are
//! refused (queued in another leader epoch, empty, out-of-order sequence),
//! which are retries of records already appended (answered with the
//! original offsets, nothing written), and at which offsets and positions
//! the others' records go. No I/O, locks or clock reads: the appender
//! (`appender.rs`) supplies the time, holds the locks and writes the plan.

use std::collections::HashMap;

use super::Appended;
use crate::proto::peer::StoredRecord;
use crate::proto::ProducerRecord;
use crate::topic::producer_state::{Check, ProducerEntry, MAX_PRODUCERS_PER_PARTITION};

/// Payload bytes of a request's records (keys and values).
pub(super) fn payload_bytes(records: &[ProducerRecord]) -> usize {
    records.iter().map(|r| r.key.len() + r.value.len()).sum()
}

/// One group commit: `first`, then the next queued request (`next` returns
/// `None` once the queue is empty) while the batch holds fewer than
/// `max_bytes` payload bytes. The last request taken may cross
/// `max_bytes`: a request is never split, so one larger than `max_bytes`
/// is a batch alone.
pub(super) fn gather<T>(
    first: T,
    max_bytes: usize,
    bytes: impl Fn(&T) -> usize,
    mut next: impl FnMut() -> Option<T>,
) -> Vec<T> {
    let mut total = bytes(&first);
    let mut batch = vec![first];
    while total < max_bytes {
        match next() {
            Some(a) => {
                total += bytes(&a);
                batch.push(a);
            }
            None => break,
        }
    }
    batch
}

/// A produce request as the planner sees it.
#[derive(Clone, Debug)]
pub(super) struct AppendRequest {
    /// The leader epoch the request was accepted in.
    pub epoch: u64,
    /// 0: not an idempotent producer (no sequence check).
    pub producer_id: u64,
    pub base_sequence: u64,
    pub records: Vec<ProducerRecord>,
}

/// Where the log ends: an append continues from one and leaves another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct LogEnd {
    /// The log end offset: the offset of the next record.
    pub offset: u64,
    /// `position` of the next record (payload bytes before it).
    pub position: u64,
    /// Timestamp of the last record; timestamps never go backwards.
    pub timestamp_ms: i64,
}

/// The answer a request of the batch gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Its records are in the plan, or were appended before (`duplicate`).
    /// Answered once the write is durable: a duplicate's original may be
    /// in this very batch.
    Ok(Appended),
    /// Queued in another leader epoch, or empty: refused now, as not leader.
    NotLeader,
    /// A sequence gap or overlap: refused now, nothing written; the
    /// producer must send `expected` next.
    OutOfOrder { expected: u64 },
}

/// What one group commit writes and answers.
#[derive(Clone, Debug)]
pub(super) struct AppendPlan {
    /// One per request, in the order of the requests.
    pub outcomes: Vec<Outcome>,
    /// The records to write, at consecutive offsets from the old log end.
    pub records: Vec<(u64, StoredRecord)>,
    /// The new state of every producer that appended records.
    pub producers: HashMap<u64, ProducerEntry>,
    /// Producers to forget, so that at most
    /// [`MAX_PRODUCERS_PER_PARTITION`] remain.
    pub evicted: Vec<u64>,
    /// The log end once the records are written.
    pub end: LogEnd,
}

impl AppendPlan {
    /// Every request was refused or a duplicate: there is nothing to write.
    pub fn writes_nothing(&self) -> bool {
        self.records.is_empty() && self.producers.is_empty() && self.evicted.is_empty()
    }
}

/// Plans one group commit of the leader of `leader_epoch` whose log ends
/// at `end`, with `producers` the producer state and `now_ms` the wall
/// clock. Every record of the batch gets the timestamp
/// `max(end.timestamp_ms, now_ms)` and the leader epoch; offsets and
/// positions continue from `end` without gaps, in the order of the
/// requests.
pub(super) fn plan_append(
    leader_epoch: u64,
    end: LogEnd,
    now_ms: i64,
    producers: &HashMap<u64, ProducerEntry>,
    requests: Vec<AppendRequest>,
) -> AppendPlan {
    let timestamp_ms = end.timestamp_ms.max(now_ms);
    let mut next = end.offset;
    let mut position = end.position;
    let mut outcomes = Vec::with_capacity(requests.len());
    let mut records = Vec::new();
    let mut touched: HashMap<u64, ProducerEntry> = HashMap::new();
    for a in requests {
        if a.epoch != leader_epoch || a.records.is_empty() {
            outcomes.push(Outcome::NotLeader);
            continue;
        }
        let count = a.records.len() as u64;
        let mut entry = if a.producer_id != 0 {
            let e = touched.get(&a.producer_id).or_else(|| producers.get(&a.producer_id)).cloned().unwrap_or_default();
            match e.check(a.base_sequence, count) {
                Check::Append => Some(e),
                Check::Duplicate(at) => {
                    outcomes.push(Outcome::Ok(Appended { base_offset: at, count, duplicate: true }));
                    continue;
                }
                Check::OutOfOrder { expected } => {
                    outcomes.push(Outcome::OutOfOrder { expected });
                    continue;
                }
            }
        } else {
            None
        };
        let base = next;
        for (i, r) in a.records.into_iter().enumerate() {
            let sequence = if a.producer_id != 0 { a.base_sequence + i as u64 } else { 0 };
            let len = (r.key.len() + r.value.len()) as u64;
            let rec = StoredRecord {
                leader_epoch,
                timestamp_ms,
                position,
                producer_id: a.producer_id,
                sequence,
                key: r.key,
                value: r.value,
            };
            records.push((next, rec));
            if let Some(e) = &mut entry {
                e.record(sequence, next, timestamp_ms);
            }
            position += len;
            next += 1;
        }
        if let Some(e) = entry {
            touched.insert(a.producer_id, e);
        }
        outcomes.push(Outcome::Ok(Appended { base_offset: Some(base), count, duplicate: false }));
    }
    assert_eq!(next, end.offset + records.len() as u64, "offsets are assigned without gaps");
    let evicted = evictions(producers, &touched);
    AppendPlan { outcomes, records, producers: touched, evicted, end: LogEnd { offset: next, position, timestamp_ms } }
}

/// Producers to forget so that at most [`MAX_PRODUCERS_PER_PARTITION`]
/// remain after `touched` is added to `producers`: the least recently
/// active. Followers bound their producer state the same way.
pub(super) fn evictions(producers: &HashMap<u64, ProducerEntry>, touched: &HashMap<u64, ProducerEntry>) -> Vec<u64> {
    let new = touched.keys().filter(|id| !producers.contains_key(id)).count();
    let total = producers.len() + new;
    if total <= MAX_PRODUCERS_PER_PARTITION {
        return Vec::new();
    }
    let mut idle: Vec<(i64, u64)> = producers
        .iter()
        .filter(|(id, _)| !touched.contains_key(id))
        .map(|(&id, e)| (e.last_timestamp_ms, id))
        .collect();
    idle.sort_unstable();
    idle.into_iter().take(total - MAX_PRODUCERS_PER_PARTITION).map(|(_, id)| id).collect()
}

#[cfg(test)]
mod tests;
