//! Idempotent producers: which sequence numbers of a producer a partition
//! already holds, so a retried produce is answered with the original
//! offsets instead of being appended twice.
//!
//! A producer (random 64-bit id) numbers its records per partition 0, 1,
//! 2, ... and sends them in batches `(base_sequence, count)`, one batch in
//! flight per partition. The partition remembers, per producer, the last
//! few *runs* — stretches where offsets and sequence numbers advance
//! together — which is enough to find the offset of any recent batch.
//!
//! Every replica derives this state from the records it appends (each
//! record carries its producer id and sequence number), so a new leader
//! knows it without a handover, and it is persisted with the records in the
//! same write batch. Pure logic; persistence is in [`super::log`].

use std::collections::VecDeque;

/// Runs remembered per producer and partition (Kafka keeps 5 batches).
pub const MAX_RUNS_PER_PRODUCER: usize = 5;
/// Producers remembered per partition; the least recently active go first.
pub const MAX_PRODUCERS_PER_PARTITION: usize = 10_000;

/// Offsets `first_offset..first_offset + count` hold sequence numbers
/// `first_sequence..first_sequence + count` of one producer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    pub first_sequence: u64,
    pub first_offset: u64,
    pub count: u64,
}

impl Run {
    fn end_sequence(&self) -> u64 {
        self.first_sequence + self.count
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProducerEntry {
    pub runs: VecDeque<Run>,
    /// Timestamp (ms) of its last record, for eviction.
    pub last_timestamp_ms: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// New records: append them.
    Append,
    /// A retry of records already appended, the first at this offset
    /// (`None`: too old to know the offset, but certainly appended).
    Duplicate(Option<u64>),
    /// A gap or an overlap: nothing is appended; the producer must send
    /// sequence `expected` next.
    OutOfOrder { expected: u64 },
}

impl ProducerEntry {
    /// The next sequence number this producer must send.
    pub fn next_sequence(&self) -> Option<u64> {
        self.runs.back().map(Run::end_sequence)
    }

    /// Classifies a batch of `count` records starting at `base_sequence`.
    pub fn check(&self, base_sequence: u64, count: u64) -> Check {
        assert!(count > 0, "empty batch");
        let Some(next) = self.next_sequence() else { return Check::Append };
        if base_sequence == next {
            return Check::Append;
        }
        if base_sequence > next || base_sequence + count > next {
            return Check::OutOfOrder { expected: next };
        }
        for r in &self.runs {
            if base_sequence >= r.first_sequence && base_sequence + count <= r.end_sequence() {
                return Check::Duplicate(Some(r.first_offset + (base_sequence - r.first_sequence)));
            }
        }
        Check::Duplicate(None)
    }

    /// Notes that the producer's record `sequence` was stored at `offset`.
    pub fn record(&mut self, sequence: u64, offset: u64, timestamp_ms: i64) {
        self.last_timestamp_ms = self.last_timestamp_ms.max(timestamp_ms);
        if let Some(last) = self.runs.back_mut() {
            if last.end_sequence() == sequence && last.first_offset + last.count == offset {
                last.count += 1;
                return;
            }
        }
        self.runs.push_back(Run { first_sequence: sequence, first_offset: offset, count: 1 });
        while self.runs.len() > MAX_RUNS_PER_PRODUCER {
            self.runs.pop_front();
        }
    }

    /// Forgets runs at or beyond `offset` (the log was truncated there).
    /// Returns whether anything is left.
    pub fn truncate_from(&mut self, offset: u64) -> bool {
        while let Some(last) = self.runs.back_mut() {
            if last.first_offset >= offset {
                self.runs.pop_back();
            } else {
                last.count = last.count.min(offset - last.first_offset);
                break;
            }
        }
        !self.runs.is_empty()
    }

    /// Fixed-width encoding for the `topic_meta` family.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(8 + 1 + self.runs.len() * 24);
        b.extend_from_slice(&self.last_timestamp_ms.to_be_bytes());
        b.push(self.runs.len() as u8);
        for r in &self.runs {
            b.extend_from_slice(&r.first_sequence.to_be_bytes());
            b.extend_from_slice(&r.first_offset.to_be_bytes());
            b.extend_from_slice(&r.count.to_be_bytes());
        }
        b
    }

    pub fn decode(b: &[u8]) -> Option<ProducerEntry> {
        let ts = i64::from_be_bytes(b.get(..8)?.try_into().ok()?);
        let n = *b.get(8)? as usize;
        if b.len() != 9 + n * 24 {
            return None;
        }
        let u = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let runs = (0..n)
            .map(|k| {
                let at = 9 + k * 24;
                Run { first_sequence: u(at), first_offset: u(at + 8), count: u(at + 16) }
            })
            .collect();
        Some(ProducerEntry { runs, last_timestamp_ms: ts })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry_with(batches: &[(u64, u64, u64)]) -> ProducerEntry {
        let mut e = ProducerEntry::default();
        for &(seq, offset, count) in batches {
            for i in 0..count {
                e.record(seq + i, offset + i, 0);
            }
        }
        e
    }

    #[test]
    fn a_new_producer_may_start_anywhere_then_must_continue() {
        let e = ProducerEntry::default();
        assert_eq!(e.check(7, 3), Check::Append);
        let e = entry_with(&[(0, 100, 3)]);
        assert_eq!(e.check(3, 2), Check::Append);
        assert_eq!(e.check(5, 1), Check::OutOfOrder { expected: 3 });
        assert_eq!(e.check(2, 2), Check::OutOfOrder { expected: 3 }, "overlapping old and new");
    }

    #[test]
    fn a_retry_gets_the_original_offsets_even_across_interleaved_producers() {
        // Producer's batches landed at 100..103 and (after others' records) 110..112.
        let e = entry_with(&[(0, 100, 3), (3, 110, 2)]);
        assert_eq!(e.runs.len(), 2);
        assert_eq!(e.check(0, 3), Check::Duplicate(Some(100)));
        assert_eq!(e.check(1, 2), Check::Duplicate(Some(101)));
        assert_eq!(e.check(3, 2), Check::Duplicate(Some(110)));
        assert_eq!(e.check(2, 2), Check::Duplicate(None), "spans two runs");
    }

    #[test]
    fn only_recent_runs_are_kept() {
        let batches: Vec<(u64, u64, u64)> = (0..8).map(|i| (i, i * 10, 1)).collect();
        let e = entry_with(&batches);
        assert_eq!(e.runs.len(), MAX_RUNS_PER_PRODUCER);
        assert_eq!(e.check(0, 1), Check::Duplicate(None));
        assert_eq!(e.check(7, 1), Check::Duplicate(Some(70)));
    }

    #[test]
    fn truncation_forgets_removed_records() {
        let mut e = entry_with(&[(0, 100, 3), (3, 110, 2)]);
        assert!(e.truncate_from(111));
        assert_eq!(e.next_sequence(), Some(4));
        assert!(e.truncate_from(101));
        assert_eq!(e.next_sequence(), Some(1));
        assert!(!e.truncate_from(100));
    }

    #[test]
    fn encoding_round_trips() {
        let e = entry_with(&[(0, 100, 3), (3, 110, 2)]);
        assert_eq!(ProducerEntry::decode(&e.encode()), Some(e));
        assert_eq!(ProducerEntry::decode(&[1, 2]), None);
    }
}
