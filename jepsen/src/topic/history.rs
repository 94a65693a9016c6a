//! The topic workload's history format: `history.jsonl` of a
//! `--workload topic` run, and the operations it pairs into.
//!
//! One JSON object per line, one line per event, in recording order. Two
//! operations: `send` (a producer sends one message, a unique integer, to a
//! partition) and `poll` (one fetch of a partition from an offset, after
//! the heal):
//!
//! ```text
//! {"process":3,"type":"invoke","f":"send","partition":1,"value":17,"time_ns":100}
//! {"process":3,"type":"ok","f":"send","partition":1,"value":17,"offset":42,"time_ns":900}
//! {"process":30,"type":"invoke","f":"poll","partition":1,"offset":0,"time_ns":5000}
//! {"process":30,"type":"ok","f":"poll","partition":1,"offset":0,"records":[[0,4],[1,17]],"next_offset":2,"high_watermark":2,"log_end_offset":2,"time_ns":5100}
//! ```
//!
//! A `send` completes `ok` (acknowledged, with the `offset` the leader
//! gave it; none for acks=0), `fail` (certainly not written, with `error`)
//! or `info` (unknown; `note` says why). A `poll` completes `ok` with the
//! records read (`[offset, value]`; a value that is not an integer is kept
//! as a string), `next_offset`, the leader's `high_watermark` and (optional)
//! its `log_end_offset`, or
//! `fail` with `error` (a fetch changes nothing). An operation left without
//! completion counts as `info`. This module promises a typed [`TopicEvent`]
//! for exactly these lines, a bounded reader ([`read_topic_history`]) that
//! names the first malformed line, and [`pair_topic_operations`], which
//! refuses malformed histories with an error, never a panic.
//! `docs/jepsen.md` ("The topic workload") is the user-facing description.

use std::collections::BTreeMap;
use std::io::{self, BufRead, Read};

use serde::{Deserialize, Serialize};

use crate::history::EventType;

/// The longest line [`read_topic_history`] accepts, in bytes. A poll line
/// carries at most one fetch (see `consume::POLL_MAX_BYTES`), so a line
/// near this is garbage.
pub const TOPIC_LINE_BYTES_MAX: usize = 1024 * 1024;

/// Which operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TopicF {
    /// Send one message.
    Send,
    /// Fetch a partition from an offset.
    Poll,
}

impl std::fmt::Display for TopicF {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TopicF::Send => "send",
            TopicF::Poll => "poll",
        })
    }
}

/// A record's value as read: the integer a send wrote, or, for bytes that
/// are not one, the bytes (lossy UTF-8).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ReadValue {
    /// A decimal integer.
    Int(i64),
    /// Anything else.
    Raw(String),
}

impl ReadValue {
    /// The value of a record's bytes.
    pub fn of(bytes: &[u8]) -> ReadValue {
        match std::str::from_utf8(bytes).ok().and_then(|s| s.parse().ok()) {
            Some(v) => ReadValue::Int(v),
            None => ReadValue::Raw(String::from_utf8_lossy(bytes).into_owned()),
        }
    }
}

/// One line of a topic history; see the module docs. Unknown fields are
/// ignored when reading.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicEvent {
    /// The logical client; one operation at a time.
    pub process: u64,
    /// What this event says about the operation.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// Which operation.
    pub f: TopicF,
    /// The partition sent to or fetched.
    pub partition: u32,
    /// A send's message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<i64>,
    /// An ok send: the offset the leader acknowledged. A poll: the offset
    /// fetched from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// An ok poll: the records read, `[offset, value]`, in offset order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub records: Vec<(u64, ReadValue)>,
    /// An ok poll: where to fetch next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_offset: Option<u64>,
    /// An ok poll: the leader's high watermark.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high_watermark: Option<u64>,
    /// An ok poll: the leader's log end offset (optional; when given, a
    /// read counts as complete only once the high watermark reached it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_end_offset: Option<u64>,
    /// When, in ns on the run's monotonic clock.
    pub time_ns: u64,
    /// On a `fail`: why it certainly did not happen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// On an `info`: why the outcome is unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl TopicEvent {
    /// Checks the fields this `f` and `kind` need: a send has a `value`; a
    /// poll invoke has its `offset`; an ok poll has `next_offset` and
    /// `high_watermark`; only a fail carries an `error`.
    pub fn validate(&self) -> Result<(), String> {
        match self.f {
            TopicF::Send if self.value.is_none() => return Err("a send needs a value".into()),
            TopicF::Send if !self.records.is_empty() => return Err("a send carries no records".into()),
            TopicF::Poll if self.kind == EventType::Invoke && self.offset.is_none() => {
                return Err("a poll invoke needs the offset it fetches from".into())
            }
            TopicF::Poll
                if self.kind == EventType::Ok && (self.next_offset.is_none() || self.high_watermark.is_none()) =>
            {
                return Err("an ok poll needs next_offset and high_watermark".into())
            }
            _ => {}
        }
        if self.error.is_some() && self.kind != EventType::Fail {
            return Err(format!("only a fail carries an error, not an {}", self.kind));
        }
        Ok(())
    }
}

/// One send, invoke and completion together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendOp {
    /// The producer process.
    pub process: u64,
    /// The partition it was sent to.
    pub partition: u32,
    /// The message (unique in the run).
    pub value: i64,
    /// `ok`, `fail` or `info` (also: never completed).
    pub outcome: EventType,
    /// For `ok`: the acknowledged offset (none for acks=0).
    pub offset: Option<u64>,
    /// Invoke time, ns.
    pub invoke_ns: u64,
    /// Completion time, ns (end of the recording if it never completed).
    pub complete_ns: u64,
    /// Why a `fail` failed.
    pub error: Option<String>,
    /// Why an `info` is unknown.
    pub note: Option<String>,
}

/// One poll, invoke and completion together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PollOp {
    /// The consumer process.
    pub process: u64,
    /// The partition fetched.
    pub partition: u32,
    /// The offset fetched from.
    pub offset: u64,
    /// `ok`, `fail` or `info`.
    pub outcome: EventType,
    /// For `ok`: the records, in offset order.
    pub records: Vec<(u64, ReadValue)>,
    /// For `ok`: where to fetch next.
    pub next_offset: Option<u64>,
    /// For `ok`: the leader's high watermark.
    pub high_watermark: Option<u64>,
    /// For `ok`: the leader's log end offset, if recorded.
    pub log_end_offset: Option<u64>,
    /// Invoke time, ns.
    pub invoke_ns: u64,
    /// Completion time, ns.
    pub complete_ns: u64,
    /// Why a `fail` failed.
    pub error: Option<String>,
}

impl SendOp {
    /// Completion minus invoke, in ms.
    pub fn latency_ms(&self) -> f64 {
        (self.complete_ns - self.invoke_ns) as f64 / 1e6
    }
}

impl PollOp {
    /// Completion minus invoke, in ms.
    pub fn latency_ms(&self) -> f64 {
        (self.complete_ns - self.invoke_ns) as f64 / 1e6
    }
}

/// Why a topic history could not be read or paired.
#[derive(Debug, thiserror::Error)]
pub enum TopicHistoryError {
    /// Reading the stream failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// A line is not a valid event.
    #[error("line {line}: {message}")]
    Malformed {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// The events do not pair into operations.
    #[error("line {line}: {message}")]
    Unpaired {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
}

/// Reads a whole topic history, one event per line (a final newline is
/// optional; an empty line is malformed).
pub fn read_topic_history<R: BufRead>(mut input: R) -> Result<Vec<TopicEvent>, TopicHistoryError> {
    let mut events = Vec::new();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let line = events.len() + 1;
        let read = input.by_ref().take(TOPIC_LINE_BYTES_MAX as u64 + 1).read_until(b'\n', &mut buf)?;
        if read == 0 {
            return Ok(events);
        }
        if buf.last() == Some(&b'\n') {
            buf.pop();
        } else if buf.len() > TOPIC_LINE_BYTES_MAX {
            return Err(TopicHistoryError::Malformed {
                line,
                message: format!("line longer than {TOPIC_LINE_BYTES_MAX} bytes"),
            });
        }
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        let event: TopicEvent =
            serde_json::from_slice(&buf).map_err(|e| TopicHistoryError::Malformed { line, message: e.to_string() })?;
        event.validate().map_err(|message| TopicHistoryError::Malformed { line, message })?;
        events.push(event);
    }
}

/// Pairs events into sends and polls (each in completion order, then the
/// ones never completed, as `info`). A completion must follow an invoke of
/// the same process with the same `f`, partition and (send) value, not
/// earlier in time; a process has at most one operation outstanding.
pub fn pair_topic_operations(events: &[TopicEvent]) -> Result<(Vec<SendOp>, Vec<PollOp>), TopicHistoryError> {
    let mut open: BTreeMap<u64, (usize, &TopicEvent)> = BTreeMap::new();
    let mut sends = Vec::new();
    let mut polls = Vec::new();
    let end_ns = events.iter().map(|e| e.time_ns).max().unwrap_or(0);
    for (i, e) in events.iter().enumerate() {
        let line = i + 1;
        let unpaired = |message: String| TopicHistoryError::Unpaired { line, message };
        if e.kind == EventType::Invoke {
            if let Some((at, _)) = open.get(&e.process) {
                return Err(unpaired(format!(
                    "process {} invokes while its operation of line {} is outstanding",
                    e.process,
                    at + 1
                )));
            }
            open.insert(e.process, (i, e));
            continue;
        }
        let Some((_, invoke)) = open.remove(&e.process) else {
            return Err(unpaired(format!("process {} completes an operation it never invoked", e.process)));
        };
        if invoke.f != e.f || invoke.partition != e.partition {
            return Err(unpaired(format!(
                "the completion ({} of partition {}) does not match its invoke ({} of partition {})",
                e.f, e.partition, invoke.f, invoke.partition
            )));
        }
        if e.time_ns < invoke.time_ns {
            return Err(unpaired("the completion is earlier than its invoke".into()));
        }
        match e.f {
            TopicF::Send => {
                if e.value != invoke.value {
                    return Err(unpaired(format!(
                        "the completion's value {:?} differs from the invoke's {:?}",
                        e.value, invoke.value
                    )));
                }
                sends.push(send_op(invoke, Some(e), end_ns));
            }
            TopicF::Poll => polls.push(poll_op(invoke, Some(e), end_ns)),
        }
    }
    for (_, invoke) in open.into_values() {
        match invoke.f {
            TopicF::Send => sends.push(send_op(invoke, None, end_ns)),
            TopicF::Poll => polls.push(poll_op(invoke, None, end_ns)),
        }
    }
    Ok((sends, polls))
}

fn send_op(invoke: &TopicEvent, done: Option<&TopicEvent>, end_ns: u64) -> SendOp {
    let value = invoke.value.expect("validated: a send has a value");
    match done {
        Some(e) => SendOp {
            process: invoke.process,
            partition: invoke.partition,
            value,
            outcome: e.kind,
            offset: if e.kind == EventType::Ok { e.offset } else { None },
            invoke_ns: invoke.time_ns,
            complete_ns: e.time_ns,
            error: e.error.clone(),
            note: e.note.clone(),
        },
        None => SendOp {
            process: invoke.process,
            partition: invoke.partition,
            value,
            outcome: EventType::Info,
            offset: None,
            invoke_ns: invoke.time_ns,
            complete_ns: end_ns,
            error: None,
            note: Some("never completed".into()),
        },
    }
}

fn poll_op(invoke: &TopicEvent, done: Option<&TopicEvent>, end_ns: u64) -> PollOp {
    let offset = invoke.offset.expect("validated: a poll invoke has an offset");
    match done {
        Some(e) => PollOp {
            process: invoke.process,
            partition: invoke.partition,
            offset,
            outcome: e.kind,
            records: if e.kind == EventType::Ok { e.records.clone() } else { Vec::new() },
            next_offset: if e.kind == EventType::Ok { e.next_offset } else { None },
            high_watermark: if e.kind == EventType::Ok { e.high_watermark } else { None },
            log_end_offset: if e.kind == EventType::Ok { e.log_end_offset } else { None },
            invoke_ns: invoke.time_ns,
            complete_ns: e.time_ns,
            error: e.error.clone(),
        },
        None => PollOp {
            process: invoke.process,
            partition: invoke.partition,
            offset,
            outcome: EventType::Info,
            records: Vec::new(),
            next_offset: None,
            high_watermark: None,
            log_end_offset: None,
            invoke_ns: invoke.time_ns,
            complete_ns: end_ns,
            error: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HISTORY: &str = r#"{"process":3,"type":"invoke","f":"send","partition":1,"value":17,"time_ns":100}
{"process":4,"type":"invoke","f":"send","partition":0,"value":18,"time_ns":110}
{"process":3,"type":"ok","f":"send","partition":1,"value":17,"offset":42,"time_ns":900}
{"process":30,"type":"invoke","f":"poll","partition":1,"offset":0,"time_ns":5000}
{"process":30,"type":"ok","f":"poll","partition":1,"offset":0,"records":[[0,4],[1,"x y"]],"next_offset":2,"high_watermark":2,"time_ns":5100}
"#;

    // Proves: the documented lines read back into events and pair into
    // operations; a send never completed is unknown (info); a non-integer
    // record value is kept as a string.
    #[test]
    fn reads_and_pairs_the_documented_format() {
        let events = read_topic_history(HISTORY.as_bytes()).unwrap();
        assert_eq!(events.len(), 5);
        let (sends, polls) = pair_topic_operations(&events).unwrap();
        assert_eq!(sends.len(), 2);
        assert_eq!((sends[0].value, sends[0].outcome, sends[0].offset), (17, EventType::Ok, Some(42)));
        assert_eq!((sends[1].value, sends[1].outcome), (18, EventType::Info));
        assert_eq!(polls.len(), 1);
        assert_eq!(polls[0].records, vec![(0, ReadValue::Int(4)), (1, ReadValue::Raw("x y".into()))]);
        assert_eq!((polls[0].next_offset, polls[0].high_watermark), (Some(2), Some(2)));
        // Written back, an event is the same line.
        let line = serde_json::to_string(&events[4]).unwrap();
        assert_eq!(line, HISTORY.lines().nth(4).unwrap());
    }

    // Proves: malformed lines and unpaired events are refused with their
    // line number, never a panic.
    #[test]
    fn refuses_malformed_histories() {
        let no_value = r#"{"process":1,"type":"invoke","f":"send","partition":0,"time_ns":1}"#;
        assert!(matches!(read_topic_history(no_value.as_bytes()), Err(TopicHistoryError::Malformed { line: 1, .. })));
        let bad_poll = r#"{"process":1,"type":"invoke","f":"poll","partition":0,"offset":0,"time_ns":1}
{"process":1,"type":"ok","f":"poll","partition":0,"offset":0,"time_ns":2}"#;
        assert!(matches!(read_topic_history(bad_poll.as_bytes()), Err(TopicHistoryError::Malformed { line: 2, .. })));
        let orphan = r#"{"process":1,"type":"ok","f":"send","partition":0,"value":1,"time_ns":1}"#;
        let events = read_topic_history(orphan.as_bytes()).unwrap();
        assert!(matches!(pair_topic_operations(&events), Err(TopicHistoryError::Unpaired { line: 1, .. })));
        let twice = r#"{"process":1,"type":"invoke","f":"send","partition":0,"value":1,"time_ns":1}
{"process":1,"type":"invoke","f":"send","partition":0,"value":2,"time_ns":2}"#;
        let events = read_topic_history(twice.as_bytes()).unwrap();
        assert!(matches!(pair_topic_operations(&events), Err(TopicHistoryError::Unpaired { line: 2, .. })));
        let other_value = r#"{"process":1,"type":"invoke","f":"send","partition":0,"value":1,"time_ns":1}
{"process":1,"type":"ok","f":"send","partition":0,"value":2,"offset":0,"time_ns":2}"#;
        let events = read_topic_history(other_value.as_bytes()).unwrap();
        assert!(matches!(pair_topic_operations(&events), Err(TopicHistoryError::Unpaired { line: 2, .. })));
    }

    // Proves: record bytes that spell an integer read as that integer;
    // anything else is kept as text.
    #[test]
    fn read_values() {
        assert_eq!(ReadValue::of(b"42"), ReadValue::Int(42));
        assert_eq!(ReadValue::of(b"4 2"), ReadValue::Raw("4 2".into()));
        assert_eq!(ReadValue::of(b"\xff"), ReadValue::Raw("\u{fffd}".into()));
    }
}
