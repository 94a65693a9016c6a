//! The topic checker: what a topic log promises acknowledged messages,
//! checked on the sends of a run and the final read of every partition.
//!
//! Violations (any makes the run invalid):
//! - **lost**: acknowledged (`ok` send), and not read anywhere although its
//!   partition was read from offset 0 to the high watermark;
//! - **duplicated**: one message read at more than one position
//!   (partition, offset) — whatever its send's outcome;
//! - **reordered**: a message acknowledged *before* another was sent to the
//!   same partition is read at a higher offset than it. For one producer
//!   this is send order: a process sends one message at a time, so each of
//!   its acknowledged messages was acknowledged before its next was sent
//!   (counted apart as `reordered_same_producer`); across producers it is
//!   real-time order, which the log also promises (an acknowledged record
//!   is committed, and every later append lands after it);
//! - **wrong offset**: acknowledged at (partition, offset) but read only
//!   elsewhere — the log was rewritten under an acknowledgement;
//! - **unexpected**: a record whose value no producer sent.
//!
//! Statistics: sends by outcome, records read, messages of unknown outcome
//! (`info`) that were read, failed sends that were read anyway (a `fail`
//! promises "not written", so any such names a client-side
//! misclassification), and all of it per partition.
//!
//! A partition counts as read completely when its ok polls cover every
//! offset from 0 up to a `next_offset` at or beyond the high watermark the
//! leader reported, in a poll where that high watermark was at the
//! leader's log end (when the poll recorded it; a new leader's high
//! watermark can lag records committed before it led). Acknowledged
//! messages of a partition that was not read completely are *unread*, not
//! lost, and make the answer unknown.
//! Every list is bounded ([`EXAMPLES_MAX`]); the counts are exact.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use serde::Serialize;

use super::history::{pair_topic_operations, read_topic_history, PollOp, ReadValue, SendOp, TopicHistoryError};
use crate::history::EventType;
use crate::validity::Validity;

/// Most examples kept per kind of finding.
pub const EXAMPLES_MAX: usize = 50;
/// Most read positions listed for one duplicated message.
pub const POSITIONS_MAX: usize = 8;

/// A count and the first [`EXAMPLES_MAX`] examples.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Findings<T> {
    /// How many, exactly.
    pub count: u64,
    /// The first of them.
    pub examples: Vec<T>,
}

impl<T> Default for Findings<T> {
    fn default() -> Self {
        Findings { count: 0, examples: Vec::new() }
    }
}

impl<T> Findings<T> {
    fn push(&mut self, example: T) {
        self.count += 1;
        if self.examples.len() < EXAMPLES_MAX {
            self.examples.push(example);
        }
    }
}

/// A sent message, as reports show it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Message {
    /// The message (unique in the run).
    pub value: i64,
    /// The producer process.
    pub process: u64,
    /// The partition it was sent to.
    pub partition: u32,
    /// `ok`, `fail` or `info`.
    pub outcome: String,
    /// The offset it was acknowledged at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acked_offset: Option<u64>,
    /// When it was sent, s since the run started.
    pub sent_s: f64,
    /// When its send completed, s.
    pub completed_s: f64,
}

impl Message {
    fn of(s: &SendOp) -> Message {
        Message {
            value: s.value,
            process: s.process,
            partition: s.partition,
            outcome: s.outcome.to_string(),
            acked_offset: s.offset,
            sent_s: s.invoke_ns as f64 / 1e9,
            completed_s: s.complete_ns as f64 / 1e9,
        }
    }
}

/// A message read at more than one position.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Duplicate {
    /// The message.
    pub message: Message,
    /// Where it was read, `[partition, offset]` (at most [`POSITIONS_MAX`]).
    pub read_at: Vec<(u32, u64)>,
}

/// Two messages of one partition read against the order they were
/// acknowledged and sent in.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Reorder {
    /// The partition.
    pub partition: u32,
    /// Acknowledged before `later` was sent…
    pub earlier: Message,
    /// …but read at this offset,
    pub earlier_read_offset: u64,
    /// which is above this one's.
    pub later: Message,
    /// Where `later` was read.
    pub later_read_offset: u64,
    /// Both from one producer (send order) rather than two (real-time
    /// order).
    pub same_producer: bool,
}

/// An acknowledged message not read at its acknowledged position.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WrongOffset {
    /// The message (with its acknowledged offset).
    pub message: Message,
    /// Where it was read instead, `[partition, offset]`.
    pub read_at: Vec<(u32, u64)>,
}

/// A record no producer sent.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Unexpected {
    /// The partition.
    pub partition: u32,
    /// The offset.
    pub offset: u64,
    /// What it held.
    pub value: ReadValue,
}

/// One partition's numbers.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PartitionStats {
    /// Sends acknowledged to it.
    pub acked: u64,
    /// Sends that failed.
    pub failed: u64,
    /// Sends of unknown outcome.
    pub unknown: u64,
    /// Distinct offsets read.
    pub records_read: u64,
    /// The first offset not read: the read covered `[0, read_end)`.
    pub read_end: u64,
    /// Read from 0 to the high watermark without a gap.
    pub complete: bool,
    /// Acknowledged messages read (anywhere).
    pub acked_read: u64,
    /// Messages of unknown outcome read.
    pub unknown_read: u64,
    /// Failed sends read.
    pub failed_read: u64,
    /// Acknowledged, not read, partition read completely.
    pub lost: u64,
    /// Acknowledged, not read, partition not read completely.
    pub unread: u64,
    /// Messages read at a position below one acknowledged before they were
    /// sent.
    pub reordered: u64,
}

/// The checker's answer; see the module docs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TopicCheckResult {
    /// Invalid with any violation; unknown if some partition could not be
    /// read completely or nothing was acknowledged; else valid.
    pub valid: Validity,
    /// Sends in the history.
    pub sends: u64,
    /// Of those, acknowledged (`ok`).
    pub acked: u64,
    /// Failed (certainly not written).
    pub failed: u64,
    /// Unknown outcome (`info`, or never completed).
    pub unknown: u64,
    /// Distinct (partition, offset) positions read.
    pub records_read: u64,
    /// Acknowledged messages that were read.
    pub acked_read: u64,
    /// Messages of unknown outcome that were read (they took effect).
    pub unknown_read: u64,
    /// Failed sends that were read anyway (see the module docs).
    pub failed_read: u64,
    /// Acknowledged messages in partitions not read completely.
    pub unread: u64,
    /// Acknowledged and never read.
    pub lost: Findings<Message>,
    /// Read at more than one position.
    pub duplicated: Findings<Duplicate>,
    /// Read below a message acknowledged before they were sent.
    pub reordered: Findings<Reorder>,
    /// Of the reordered pairs, those where one producer's consecutive
    /// acknowledged messages were read in the opposite order.
    pub reordered_same_producer: u64,
    /// Acknowledged at one offset, read only elsewhere.
    pub wrong_offset: Findings<WrongOffset>,
    /// Records no producer sent.
    pub unexpected: Findings<Unexpected>,
    /// Partitions not read completely.
    pub incomplete_partitions: Vec<u32>,
    /// Per partition.
    pub partitions: BTreeMap<u32, PartitionStats>,
}

impl TopicCheckResult {
    /// Lost + duplicated + reordered + wrong offset + unexpected.
    pub fn violations(&self) -> u64 {
        self.lost.count + self.duplicated.count + self.reordered.count + self.wrong_offset.count + self.unexpected.count
    }
}

impl TopicCheckResult {
    /// One line: the counts the verdict rests on (`kv-jepsen check --format
    /// topic` and the run's last line print it).
    pub fn summary(&self) -> String {
        format!(
            "{} sends ({} acked, {} failed, {} unknown), {} records read; lost {}, duplicated {}, reordered {}, \
             wrong offset {}, unexpected {}; unknown-outcome read {}, failed read {}, unread {}",
            self.sends,
            self.acked,
            self.failed,
            self.unknown,
            self.records_read,
            self.lost.count,
            self.duplicated.count,
            self.reordered.count,
            self.wrong_offset.count,
            self.unexpected.count,
            self.unknown_read,
            self.failed_read,
            self.unread
        )
    }

    /// The findings in words, a line each (at most [`EXAMPLES_MAX`] per
    /// kind); empty without findings.
    pub fn explain(&self) -> String {
        let mut out = String::new();
        let m = |m: &Message| {
            format!(
                "value {} (process {}, partition {}, {}{}, sent {:.3} s, done {:.3} s)",
                m.value,
                m.process,
                m.partition,
                m.outcome,
                m.acked_offset.map(|o| format!(" at offset {o}")).unwrap_or_default(),
                m.sent_s,
                m.completed_s
            )
        };
        for l in &self.lost.examples {
            let _ = writeln!(out, "lost: {}", m(l));
        }
        for d in &self.duplicated.examples {
            let _ = writeln!(out, "duplicated: {} read at {:?}", m(&d.message), d.read_at);
        }
        for o in &self.reordered.examples {
            let _ = writeln!(
                out,
                "reordered: partition {}: {} read at offset {}, below {} read at offset {}",
                o.partition,
                m(&o.later),
                o.later_read_offset,
                m(&o.earlier),
                o.earlier_read_offset
            );
        }
        for w in &self.wrong_offset.examples {
            let _ = writeln!(out, "wrong offset: {} read at {:?}", m(&w.message), w.read_at);
        }
        for u in &self.unexpected.examples {
            let _ = writeln!(out, "unexpected: {}/{}: {:?}", u.partition, u.offset, u.value);
        }
        if !self.incomplete_partitions.is_empty() {
            let _ = writeln!(out, "not read to the high watermark: partitions {:?}", self.incomplete_partitions);
        }
        out
    }
}

/// Why a history cannot be checked.
#[derive(Debug, thiserror::Error)]
pub enum TopicCheckError {
    /// Two sends carry one value, so a read cannot name its send.
    #[error("value {0} was sent twice: messages must be unique")]
    ValueSentTwice(i64),
    /// The file cannot be opened.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a topic history.
    #[error(transparent)]
    History(#[from] TopicHistoryError),
}

impl PartialEq for TopicCheckError {
    fn eq(&self, other: &Self) -> bool {
        matches!((self, other), (TopicCheckError::ValueSentTwice(a), TopicCheckError::ValueSentTwice(b)) if a == b)
    }
}

/// Reads a topic history file (`history.jsonl` of a `--workload topic`
/// run) and checks it.
pub fn check_file(path: &Path) -> Result<TopicCheckResult, TopicCheckError> {
    let file = std::fs::File::open(path)
        .map_err(|source| TopicCheckError::Open { path: path.display().to_string(), source })?;
    let events = read_topic_history(std::io::BufReader::new(file))?;
    let (sends, polls) = pair_topic_operations(&events)?;
    check(&sends, &polls)
}

/// What the polls of one partition read.
#[derive(Default)]
struct PartitionRead {
    /// offset → value (the first poll that read it wins).
    records: BTreeMap<u64, ReadValue>,
    /// The highest `next_offset` of a poll that reached the high watermark
    /// (at the log end).
    reached_end: Option<u64>,
}

/// Checks sends against the final read; see the module docs.
pub fn check(sends: &[SendOp], polls: &[PollOp]) -> Result<TopicCheckResult, TopicCheckError> {
    let mut by_value: BTreeMap<i64, &SendOp> = BTreeMap::new();
    for s in sends {
        if by_value.insert(s.value, s).is_some() {
            return Err(TopicCheckError::ValueSentTwice(s.value));
        }
    }

    // What was read, per partition.
    let mut reads: BTreeMap<u32, PartitionRead> = BTreeMap::new();
    for p in polls.iter().filter(|p| p.outcome == EventType::Ok) {
        let read = reads.entry(p.partition).or_default();
        for (offset, value) in &p.records {
            read.records.entry(*offset).or_insert_with(|| value.clone());
        }
        if let (Some(next), Some(hw)) = (p.next_offset, p.high_watermark) {
            if next >= hw && p.log_end_offset.is_none_or(|leo| hw >= leo) {
                read.reached_end = Some(read.reached_end.map_or(next, |e| e.max(next)));
            }
        }
    }
    let mut partitions: BTreeMap<u32, PartitionStats> = BTreeMap::new();
    for p in sends.iter().map(|s| s.partition).chain(polls.iter().map(|p| p.partition)) {
        partitions.entry(p).or_default();
    }
    let mut result = TopicCheckResult {
        valid: Validity::Valid,
        sends: sends.len() as u64,
        acked: 0,
        failed: 0,
        unknown: 0,
        records_read: 0,
        acked_read: 0,
        unknown_read: 0,
        failed_read: 0,
        unread: 0,
        lost: Findings::default(),
        duplicated: Findings::default(),
        reordered: Findings::default(),
        reordered_same_producer: 0,
        wrong_offset: Findings::default(),
        unexpected: Findings::default(),
        incomplete_partitions: Vec::new(),
        partitions: BTreeMap::new(),
    };

    // Where each value was read; records nobody sent.
    let mut read_at: BTreeMap<i64, Vec<(u32, u64)>> = BTreeMap::new();
    for (&partition, stats) in &mut partitions {
        let Some(read) = reads.get(&partition) else { continue };
        stats.records_read = read.records.len() as u64;
        stats.read_end = read.records.keys().enumerate().take_while(|(i, o)| *i as u64 == **o).count() as u64;
        stats.complete = read.reached_end.is_some_and(|end| stats.read_end >= end);
        for (&offset, value) in &read.records {
            match value {
                ReadValue::Int(v) if by_value.contains_key(v) => {
                    read_at.entry(*v).or_default().push((partition, offset))
                }
                _ => result.unexpected.push(Unexpected { partition, offset, value: value.clone() }),
            }
        }
    }
    for (&partition, stats) in &partitions {
        result.records_read += stats.records_read;
        if !stats.complete {
            result.incomplete_partitions.push(partition);
        }
    }

    // Each send against what was read.
    for s in sends {
        let at = read_at.get(&s.value).map(Vec::as_slice).unwrap_or_default();
        let complete = partitions.get(&s.partition).is_some_and(|p| p.complete);
        let stats = partitions.get_mut(&s.partition).expect("every send's partition is listed");
        match s.outcome {
            EventType::Ok => {
                result.acked += 1;
                stats.acked += 1;
                if at.is_empty() {
                    if complete {
                        result.lost.push(Message::of(s));
                        stats.lost += 1;
                    } else {
                        result.unread += 1;
                        stats.unread += 1;
                    }
                } else {
                    result.acked_read += 1;
                    stats.acked_read += 1;
                    if let Some(offset) = s.offset {
                        if !at.contains(&(s.partition, offset)) {
                            result.wrong_offset.push(WrongOffset { message: Message::of(s), read_at: at.to_vec() });
                        }
                    }
                }
            }
            EventType::Fail => {
                result.failed += 1;
                stats.failed += 1;
                if !at.is_empty() {
                    result.failed_read += 1;
                    stats.failed_read += 1;
                }
            }
            _ => {
                result.unknown += 1;
                stats.unknown += 1;
                if !at.is_empty() {
                    result.unknown_read += 1;
                    stats.unknown_read += 1;
                }
            }
        }
        if at.len() > 1 {
            result
                .duplicated
                .push(Duplicate { message: Message::of(s), read_at: at.iter().copied().take(POSITIONS_MAX).collect() });
        }
    }

    check_order(sends, &read_at, &mut partitions, &mut result);
    result.partitions = partitions;
    result.valid = if result.violations() > 0 {
        Validity::Invalid
    } else if !result.incomplete_partitions.is_empty() || result.acked == 0 {
        Validity::Unknown
    } else {
        Validity::Valid
    };
    Ok(result)
}

/// The reorder check of the module docs, per partition: scanning the
/// acknowledged messages read there from the highest read offset down,
/// keep the one acknowledged earliest; a message sent after that
/// acknowledgement is reordered.
fn check_order(
    sends: &[SendOp],
    read_at: &BTreeMap<i64, Vec<(u32, u64)>>,
    partitions: &mut BTreeMap<u32, PartitionStats>,
    result: &mut TopicCheckResult,
) {
    // (partition) → [(read offset, send)] for acknowledged messages read in
    // the partition they were sent to (lowest offset if read twice there).
    let mut placed: BTreeMap<u32, Vec<(u64, &SendOp)>> = BTreeMap::new();
    for s in sends.iter().filter(|s| s.outcome == EventType::Ok) {
        let offset =
            read_at.get(&s.value).and_then(|at| at.iter().filter(|(p, _)| *p == s.partition).map(|(_, o)| *o).min());
        if let Some(offset) = offset {
            placed.entry(s.partition).or_default().push((offset, s));
        }
    }
    for (partition, mut msgs) in placed {
        msgs.sort_by_key(|(offset, s)| (*offset, s.invoke_ns));
        let mut earliest_above: Option<(u64, &SendOp)> = None;
        for &(offset, s) in msgs.iter().rev() {
            if let Some((above_offset, above)) = earliest_above {
                if above.complete_ns < s.invoke_ns && above_offset > offset {
                    result.reordered.push(Reorder {
                        partition,
                        earlier: Message::of(above),
                        earlier_read_offset: above_offset,
                        later: Message::of(s),
                        later_read_offset: offset,
                        same_producer: above.process == s.process,
                    });
                    partitions.get_mut(&partition).expect("listed").reordered += 1;
                }
            }
            if earliest_above.is_none_or(|(_, e)| s.complete_ns < e.complete_ns) {
                earliest_above = Some((offset, s));
            }
        }
        // One producer's consecutive acknowledged messages.
        let mut by_process: BTreeMap<u64, Vec<(u64, u64)>> = BTreeMap::new();
        for &(offset, s) in &msgs {
            by_process.entry(s.process).or_default().push((s.invoke_ns, offset));
        }
        for mut sent in by_process.into_values() {
            sent.sort();
            result.reordered_same_producer += sent.windows(2).filter(|w| w[1].1 < w[0].1).count() as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_text(text: &str) -> TopicCheckResult {
        let events = read_topic_history(text.as_bytes()).unwrap();
        let (sends, polls) = pair_topic_operations(&events).unwrap();
        check(&sends, &polls).unwrap()
    }

    /// Two producers, two partitions, every acknowledged message read where
    /// it was acknowledged; one unknown-outcome message read, one failed
    /// send not read.
    const CLEAN: &str = r#"{"process":0,"type":"invoke","f":"send","partition":0,"value":1,"time_ns":100}
{"process":1,"type":"invoke","f":"send","partition":1,"value":2,"time_ns":110}
{"process":0,"type":"ok","f":"send","partition":0,"value":1,"offset":0,"time_ns":200}
{"process":1,"type":"ok","f":"send","partition":1,"value":2,"offset":0,"time_ns":210}
{"process":0,"type":"invoke","f":"send","partition":0,"value":3,"time_ns":300}
{"process":1,"type":"invoke","f":"send","partition":0,"value":4,"time_ns":310}
{"process":0,"type":"ok","f":"send","partition":0,"value":3,"offset":1,"time_ns":400}
{"process":1,"type":"info","f":"send","partition":0,"value":4,"time_ns":900,"note":"timeout"}
{"process":2,"type":"invoke","f":"send","partition":1,"value":5,"time_ns":910}
{"process":2,"type":"fail","f":"send","partition":1,"value":5,"time_ns":920,"error":"not enough replicas"}
{"process":9,"type":"invoke","f":"poll","partition":0,"offset":0,"time_ns":1000}
{"process":9,"type":"ok","f":"poll","partition":0,"offset":0,"records":[[0,1],[1,3]],"next_offset":2,"high_watermark":3,"time_ns":1010}
{"process":9,"type":"invoke","f":"poll","partition":0,"offset":2,"time_ns":1020}
{"process":9,"type":"ok","f":"poll","partition":0,"offset":2,"records":[[2,4]],"next_offset":3,"high_watermark":3,"time_ns":1030}
{"process":10,"type":"invoke","f":"poll","partition":1,"offset":0,"time_ns":1040}
{"process":10,"type":"ok","f":"poll","partition":1,"offset":0,"records":[[0,2]],"next_offset":1,"high_watermark":1,"time_ns":1050}
"#;

    // Proves: a history where every acknowledged message was read once, in
    // order, at its acknowledged offset is valid, with the statistics the
    // docs list (an unknown-outcome message that was read counts as such).
    #[test]
    fn clean_history_is_valid() {
        let r = check_text(CLEAN);
        assert_eq!(r.valid, Validity::Valid, "{r:#?}");
        assert_eq!((r.sends, r.acked, r.failed, r.unknown), (5, 3, 1, 1));
        assert_eq!((r.records_read, r.acked_read, r.unknown_read, r.failed_read), (4, 3, 1, 0));
        assert_eq!(r.violations(), 0);
        assert!(r.incomplete_partitions.is_empty());
        let p0 = &r.partitions[&0];
        assert_eq!((p0.acked, p0.unknown, p0.records_read, p0.read_end, p0.complete), (2, 1, 3, 3, true));
        assert_eq!(r.partitions[&1].failed, 1);
    }

    // Proves: an acknowledged message missing from a completely read
    // partition is reported lost (with its acknowledged offset), and makes
    // the history invalid.
    #[test]
    fn lost_message_is_found() {
        // Partition 0 holds only value 3: value 1, acknowledged at offset 0,
        // is gone (as after an unclean election, offset 0 now holds 3).
        let text = CLEAN
            .replace(r#""records":[[0,1],[1,3]],"next_offset":2"#, r#""records":[[0,3]],"next_offset":1"#)
            .replace(r#""offset":2,"time_ns":1020"#, r#""offset":1,"time_ns":1020"#)
            .replace(
                r#""offset":2,"records":[[2,4]],"next_offset":3,"high_watermark":3"#,
                r#""offset":1,"records":[[1,4]],"next_offset":2,"high_watermark":2"#,
            )
            .replace(r#""high_watermark":3,"time_ns":1010"#, r#""high_watermark":2,"time_ns":1010"#);
        let r = check_text(&text);
        assert_eq!(r.valid, Validity::Invalid, "{r:#?}");
        assert_eq!(r.lost.count, 1);
        assert_eq!((r.lost.examples[0].value, r.lost.examples[0].acked_offset), (1, Some(0)));
        assert_eq!(r.partitions[&0].lost, 1);
        // Value 3 was acknowledged at offset 1 but sits at 0.
        assert_eq!(r.wrong_offset.count, 1);
        assert_eq!(r.wrong_offset.examples[0].read_at, vec![(0, 0)]);
    }

    // Proves: a message read at two offsets is reported duplicated, with
    // both positions, and makes the history invalid.
    #[test]
    fn duplicate_is_found() {
        let text = CLEAN.replace(r#""records":[[2,4]]"#, r#""records":[[2,1]]"#);
        let r = check_text(&text);
        assert_eq!(r.valid, Validity::Invalid, "{r:#?}");
        assert_eq!(r.duplicated.count, 1);
        assert_eq!(r.duplicated.examples[0].message.value, 1);
        assert_eq!(r.duplicated.examples[0].read_at, vec![(0, 0), (0, 2)]);
        assert_eq!(r.unknown_read, 0, "value 4 is no longer read");
    }

    // Proves: one producer's acknowledged messages read in the opposite of
    // their send order are reported reordered (same producer), and make
    // the history invalid.
    #[test]
    fn reorder_within_a_producer_is_found() {
        // Offsets 0 and 1 swapped in the log (and in the acks, so only the
        // order is wrong).
        let text = CLEAN
            .replace(r#""value":1,"offset":0"#, r#""value":1,"offset":1"#)
            .replace(r#""value":3,"offset":1"#, r#""value":3,"offset":0"#)
            .replace(r#"[[0,1],[1,3]]"#, r#"[[0,3],[1,1]]"#);
        let r = check_text(&text);
        assert_eq!(r.valid, Validity::Invalid, "{r:#?}");
        assert_eq!(r.reordered.count, 1);
        assert_eq!(r.reordered_same_producer, 1);
        let o = &r.reordered.examples[0];
        assert_eq!((o.earlier.value, o.earlier_read_offset, o.later.value, o.later_read_offset), (1, 1, 3, 0));
        assert!(o.same_producer);
        assert_eq!(r.wrong_offset.count, 0);
    }

    // Proves: across producers, a message sent after another was
    // acknowledged but read below it is reordered (real-time order); two
    // concurrent sends may land in either order.
    #[test]
    fn reorder_across_producers_is_found() {
        let history = |second_invoke_ns: u64| {
            format!(
                r#"{{"process":0,"type":"invoke","f":"send","partition":0,"value":1,"time_ns":100}}
{{"process":1,"type":"invoke","f":"send","partition":0,"value":2,"time_ns":{second_invoke_ns}}}
{{"process":0,"type":"ok","f":"send","partition":0,"value":1,"offset":1,"time_ns":200}}
{{"process":1,"type":"ok","f":"send","partition":0,"value":2,"offset":0,"time_ns":300}}
{{"process":9,"type":"invoke","f":"poll","partition":0,"offset":0,"time_ns":1000}}
{{"process":9,"type":"ok","f":"poll","partition":0,"offset":0,"records":[[0,2],[1,1]],"next_offset":2,"high_watermark":2,"time_ns":1010}}
"#
            )
        };
        // Concurrent: 2 was sent before 1 was acknowledged.
        let r = check_text(&history(150));
        assert_eq!(r.valid, Validity::Valid, "{r:#?}");
        // 2 sent after 1 was acknowledged, yet below it.
        let r = check_text(&history(250));
        assert_eq!(r.valid, Validity::Invalid, "{r:#?}");
        assert_eq!((r.reordered.count, r.reordered_same_producer), (1, 0));
        assert!(!r.reordered.examples[0].same_producer);
    }

    // Proves: a partition not read to its high watermark (or with a gap)
    // makes its acknowledged messages unread, not lost, and the answer
    // unknown; a record nobody sent is unexpected (invalid).
    #[test]
    fn incomplete_read_is_unknown_and_strangers_are_unexpected() {
        let text = CLEAN.replace(
            r#"{"process":10,"type":"ok","f":"poll","partition":1,"offset":0,"records":[[0,2]],"next_offset":1,"high_watermark":1,"time_ns":1050}"#,
            r#"{"process":10,"type":"fail","f":"poll","partition":1,"time_ns":1050,"error":"unavailable"}"#,
        );
        let r = check_text(&text);
        assert_eq!(r.valid, Validity::Unknown, "{r:#?}");
        assert_eq!((r.lost.count, r.unread), (0, 1));
        assert_eq!(r.incomplete_partitions, vec![1]);

        let gap = CLEAN.replace(r#""records":[[0,1],[1,3]]"#, r#""records":[[1,3]]"#);
        let r = check_text(&gap);
        assert_eq!(r.valid, Validity::Unknown, "{r:#?}");
        assert_eq!(r.partitions[&0].read_end, 0);

        let stranger = CLEAN.replace(r#""records":[[0,2]]"#, r#""records":[[0,"hello"]]"#);
        let r = check_text(&stranger);
        assert_eq!(r.valid, Validity::Invalid, "{r:#?}");
        assert_eq!(r.unexpected.count, 1);
        assert_eq!(r.lost.count, 1, "value 2 is not there");
    }

    // Proves: a read that stopped at a high watermark below the leader's
    // log end (a new leader whose high watermark still lags records
    // committed before it led) is incomplete: the acknowledged message
    // above it is unread, not lost. Once the high watermark reached the
    // log end, the same absence is a loss.
    #[test]
    fn read_below_the_log_end_is_incomplete() {
        let history = |hw: u64| {
            format!(
                r#"{{"process":0,"type":"invoke","f":"send","partition":0,"value":1,"time_ns":100}}
{{"process":0,"type":"ok","f":"send","partition":0,"value":1,"offset":0,"time_ns":200}}
{{"process":0,"type":"invoke","f":"send","partition":0,"value":2,"time_ns":300}}
{{"process":0,"type":"ok","f":"send","partition":0,"value":2,"offset":1,"time_ns":400}}
{{"process":9,"type":"invoke","f":"poll","partition":0,"offset":0,"time_ns":1000}}
{{"process":9,"type":"ok","f":"poll","partition":0,"offset":0,"records":[[0,1]],"next_offset":1,"high_watermark":{hw},"log_end_offset":2,"time_ns":1010}}
"#
            )
        };
        let r = check_text(&history(1));
        assert_eq!(r.valid, Validity::Unknown, "{r:#?}");
        assert_eq!((r.lost.count, r.unread, r.incomplete_partitions.clone()), (0, 1, vec![0]));
        // The same read, but the leader's log ends at its high watermark:
        // value 2 was acknowledged and is not there.
        let r = check_text(&history(1).replace(r#""log_end_offset":2"#, r#""log_end_offset":1"#));
        assert_eq!(r.valid, Validity::Invalid, "{r:#?}");
        assert_eq!((r.lost.count, r.lost.examples[0].value), (1, 2));
    }

    // Proves: a failed send that was read is counted (the client said it
    // was not written), without making the history invalid; a value sent
    // twice cannot be checked.
    #[test]
    fn failed_but_read_is_a_statistic() {
        let text = CLEAN.replace(r#""records":[[0,2]]"#, r#""records":[[0,2],[1,5]]"#).replace(
            r#""next_offset":1,"high_watermark":1,"time_ns":1050"#,
            r#""next_offset":2,"high_watermark":2,"time_ns":1050"#,
        );
        let r = check_text(&text);
        assert_eq!(r.valid, Validity::Valid, "{r:#?}");
        assert_eq!(r.failed_read, 1);

        let events = read_topic_history(CLEAN.as_bytes()).unwrap();
        let (mut sends, polls) = pair_topic_operations(&events).unwrap();
        sends[1].value = sends[0].value;
        assert_eq!(check(&sends, &polls), Err(TopicCheckError::ValueSentTwice(1)));
    }

    // Proves: examples are bounded while counts stay exact.
    #[test]
    fn findings_are_bounded() {
        let mut f = Findings::default();
        for i in 0..(EXAMPLES_MAX + 10) {
            f.push(i);
        }
        assert_eq!((f.count, f.examples.len()), ((EXAMPLES_MAX + 10) as u64, EXAMPLES_MAX));
    }
}
