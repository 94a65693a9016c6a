//! The capkv history format, `history.jsonl`: what the Jepsen harness records
//! and what the linearizability checker reads.
//!
//! One JSON object per line, one line per event, in the order the harness
//! recorded them:
//!
//! ```text
//! {"process":3,"type":"invoke","f":"cas","key":"k7","value":[1,2],"time_ns":123}
//! {"process":3,"type":"fail","f":"cas","key":"k7","value":[1,2],"time_ns":456}
//! ```
//!
//! An operation is an `invoke` event followed, on the same process, by its
//! completion: `ok` (it happened), `fail` (it did not happen) or `info` (its
//! outcome is unknown). This module promises:
//!
//! - a typed [`Event`] that (de)serializes to exactly that line format;
//! - [`HistoryWriter`], which appends one line per event to any `io::Write`;
//! - [`read_history`], which reads a whole history and names the line of the
//!   first malformed event;
//! - [`pair_operations`], which turns events into [`Operation`]s (call time,
//!   return time or "never" for unknown outcomes) and rejects malformed
//!   histories — a completion without an invoke, two outstanding operations on
//!   one process — with an error, never a panic.
//!
//! What the outcomes *mean* for linearizability (which ops constrain the
//! search and how) is the checker's business: see `checker::kv`.
//! `docs/jepsen.md` ("History format") is the user-facing description.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, BufRead, Read, Write};

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The largest history line [`read_history`] accepts, in bytes. A line is one
/// event; keys are at most 4 KiB in capkv, so anything near this is garbage.
pub const LINE_BYTES_MAX: usize = 64 * 1024;

/// What an event says about its operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    /// The client is about to send the request.
    Invoke,
    /// The operation happened; a read carries the value it returned.
    Ok,
    /// The operation did not happen.
    Fail,
    /// The outcome is unknown (e.g. a timeout): the operation may take effect
    /// at any time after its invocation, or never.
    Info,
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EventType::Invoke => "invoke",
            EventType::Ok => "ok",
            EventType::Fail => "fail",
            EventType::Info => "info",
        })
    }
}

/// Which operation an event belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    /// Read the key's value.
    Read,
    /// Write an integer to the key.
    Write,
    /// Compare-and-set: if the key holds `expected`, write `new`.
    Cas,
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OpKind::Read => "read",
            OpKind::Write => "write",
            OpKind::Cas => "cas",
        })
    }
}

/// The `value` field of an event: `null`, an integer, or `[expected, new]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Value {
    /// `null`: a read's invocation, or a read that found the key absent.
    #[default]
    Null,
    /// An integer: the value written, or the value a read returned.
    Int(i64),
    /// `[expected, new]`: a compare-and-set's arguments.
    Cas {
        /// The value the key must hold for the swap to happen.
        expected: i64,
        /// The value written if it does.
        new: i64,
    },
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Int(v) => write!(f, "{v}"),
            Value::Cas { expected, new } => write!(f, "[{expected},{new}]"),
        }
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => serializer.serialize_none(),
            Value::Int(v) => serializer.serialize_i64(*v),
            Value::Cas { expected, new } => [*expected, *new].serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ValueVisitor;

        impl<'de> Visitor<'de> for ValueVisitor {
            type Value = Value;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("null, a 64-bit signed integer, or [expected, new]")
            }

            fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
                Ok(Value::Null)
            }

            fn visit_none<E: de::Error>(self) -> Result<Value, E> {
                Ok(Value::Null)
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
                Ok(Value::Int(v))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
                i64::try_from(v).map(Value::Int).map_err(|_| E::custom(format!("integer {v} does not fit in i64")))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
                let expected =
                    seq.next_element::<i64>()?.ok_or_else(|| de::Error::invalid_length(0, &"[expected, new]"))?;
                let new = seq.next_element::<i64>()?.ok_or_else(|| de::Error::invalid_length(1, &"[expected, new]"))?;
                if seq.next_element::<de::IgnoredAny>()?.is_some() {
                    return Err(de::Error::invalid_length(3, &"[expected, new]"));
                }
                Ok(Value::Cas { expected, new })
            }
        }

        deserializer.deserialize_any(ValueVisitor)
    }
}

/// One line of `history.jsonl`.
///
/// Unknown fields are ignored when reading, so the harness may record more
/// (e.g. the consistency level) without breaking older checkers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The logical client that issued the operation; one operation at a time.
    pub process: u64,
    /// What this event says about the operation.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// Which operation.
    pub f: OpKind,
    /// The key it acts on.
    pub key: String,
    /// See [`Value`]; which shapes are valid depends on `kind` and `f`
    /// (checked by [`Event::validate`]). A missing `value` reads as `null`.
    #[serde(default)]
    pub value: Value,
    /// When the event happened, in nanoseconds on the harness's monotonic
    /// clock (one clock for the whole history).
    pub time_ns: u64,
    /// On a `fail`: why the request failed. A `fail` with an error means the
    /// request definitely did not happen (e.g. `UNAVAILABLE` before sending);
    /// a cas `fail` without one means "the compare failed".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Event {
    /// Checks that `value` has a shape this `kind` and `f` allow:
    ///
    /// | f     | invoke          | ok              | fail / info             |
    /// |-------|-----------------|-----------------|-------------------------|
    /// | read  | null            | null or integer | null or integer         |
    /// | write | integer         | null or integer | null or integer         |
    /// | cas   | [expected, new] | null or pair    | null or [expected, new] |
    ///
    /// and that only a `fail` carries an `error`. Whether a completion's value
    /// matches its invocation is checked by [`pair_operations`].
    pub fn validate(&self) -> Result<(), String> {
        let shape_ok = match (self.f, self.kind, self.value) {
            (OpKind::Read, EventType::Invoke, Value::Null) => true,
            (OpKind::Read, _, Value::Null | Value::Int(_)) => self.kind != EventType::Invoke,
            (OpKind::Write, EventType::Invoke, Value::Int(_)) => true,
            (OpKind::Write, _, Value::Null | Value::Int(_)) => self.kind != EventType::Invoke,
            (OpKind::Cas, EventType::Invoke, Value::Cas { .. }) => true,
            (OpKind::Cas, _, Value::Null | Value::Cas { .. }) => self.kind != EventType::Invoke,
            _ => false,
        };
        if !shape_ok {
            let wanted = match (self.f, self.kind) {
                (OpKind::Read, EventType::Invoke) => "null",
                (OpKind::Read, _) => "null or an integer",
                (OpKind::Write, EventType::Invoke) => "an integer",
                (OpKind::Write, _) => "null or the integer written",
                (OpKind::Cas, EventType::Invoke) => "[expected, new]",
                (OpKind::Cas, _) => "null or [expected, new]",
            };
            return Err(format!("a {} {} must have value {wanted}, not {}", self.f, self.kind, self.value));
        }
        if self.error.is_some() && self.kind != EventType::Fail {
            return Err(format!("only a fail carries an error, not an {}", self.kind));
        }
        Ok(())
    }
}

/// Why a history could not be written, read or paired.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// Reading or writing the underlying stream failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// [`HistoryWriter::append`] was given an event with a value of the
    /// wrong shape (see [`Event::validate`]).
    #[error("refusing to record an invalid event: {0}")]
    InvalidEvent(String),
    /// A line is not a valid event (bad JSON, unknown `type`/`f`, missing
    /// field, wrong value shape, too long).
    #[error("line {line}: {message}")]
    Malformed {
        /// 1-based line number in the history file.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// The events do not form a well-formed history (a completion without an
    /// invoke, two operations outstanding on one process, …).
    #[error("line {line}: {message}")]
    Unpaired {
        /// 1-based line number (= position in the event list) of the event.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
}

/// Appends events to a `history.jsonl` stream, one line each.
///
/// Each event is written with a single `write_all` of the whole line, so a
/// crash leaves at most the last line truncated. The writer does not flush
/// on drop: call [`HistoryWriter::flush`] to push buffered lines out.
#[derive(Debug)]
pub struct HistoryWriter<W: Write> {
    out: W,
    line: Vec<u8>,
}

impl<W: Write> HistoryWriter<W> {
    /// A writer appending to `out` (wrap a file in a `BufWriter` yourself if
    /// you want buffering).
    pub fn new(out: W) -> Self {
        Self { out, line: Vec::with_capacity(128) }
    }

    /// Appends `event` as one line. Refuses (without writing anything) an event
    /// whose value has the wrong shape for its type, so the harness cannot
    /// record a history the checker would reject.
    pub fn append(&mut self, event: &Event) -> Result<(), HistoryError> {
        event.validate().map_err(HistoryError::InvalidEvent)?;
        self.line.clear();
        serde_json::to_writer(&mut self.line, event).map_err(io::Error::from)?;
        self.line.push(b'\n');
        self.out.write_all(&self.line)?;
        Ok(())
    }

    /// Appends `event` as one line followed by `extra`'s fields (e.g. the
    /// version a write got), which readers ignore. `extra` must serialize to
    /// a map (a struct or a map) whose keys differ from the event's own
    /// fields; refuses an invalid event as [`HistoryWriter::append`] does.
    pub fn append_with<X: Serialize>(&mut self, event: &Event, extra: &X) -> Result<(), HistoryError> {
        #[derive(Serialize)]
        struct Line<'a, X> {
            #[serde(flatten)]
            event: &'a Event,
            #[serde(flatten)]
            extra: &'a X,
        }
        event.validate().map_err(HistoryError::InvalidEvent)?;
        self.line.clear();
        serde_json::to_writer(&mut self.line, &Line { event, extra }).map_err(io::Error::from)?;
        self.line.push(b'\n');
        self.out.write_all(&self.line)?;
        Ok(())
    }

    /// Flushes the underlying stream.
    pub fn flush(&mut self) -> Result<(), HistoryError> {
        self.out.flush()?;
        Ok(())
    }

    /// Returns the underlying stream.
    pub fn into_inner(self) -> W {
        self.out
    }
}

/// Reads a whole history: one event per line, every line an event (so the
/// event at index `i` is on line `i + 1`). A final newline is optional; an
/// empty line is malformed.
pub fn read_history<R: BufRead>(mut input: R) -> Result<Vec<Event>, HistoryError> {
    let mut events = Vec::new();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let line = events.len() + 1;
        // Read at most LINE_BYTES_MAX + 1 bytes so an endless line is caught
        // without reading it all into memory.
        let read = input.by_ref().take(LINE_BYTES_MAX as u64 + 1).read_until(b'\n', &mut buf)?;
        if read == 0 {
            return Ok(events);
        }
        if buf.last() == Some(&b'\n') {
            buf.pop();
        } else if buf.len() > LINE_BYTES_MAX {
            return Err(HistoryError::Malformed { line, message: format!("line longer than {LINE_BYTES_MAX} bytes") });
        }
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        let event: Event =
            serde_json::from_slice(&buf).map_err(|e| HistoryError::Malformed { line, message: e.to_string() })?;
        event.validate().map_err(|message| HistoryError::Malformed { line, message })?;
        events.push(event);
    }
}

/// When an operation returned, as the checker sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReturnTime {
    /// Its completion event's `time_ns`.
    At(u64),
    /// Never: the outcome is unknown (`info`, or no completion at all), so it
    /// may take effect at any time after its invocation. The checker treats
    /// this as a return at +infinity.
    Never,
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Completion {
    /// `ok`; for a read, the value it returned (`None` = key absent).
    Ok {
        /// The value a read returned; `None` for writes and cas, and for a
        /// read of an absent key.
        read: Option<i64>,
    },
    /// `fail`: it did not happen. `error` is the completion's `error` field.
    Fail {
        /// Why the request failed, when the harness knew.
        error: Option<String>,
    },
    /// `info`, or no completion before the history ended: unknown outcome.
    Unknown,
}

/// One operation: an invoke paired with its completion on the same process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// The process that ran it.
    pub process: u64,
    /// Which operation.
    pub f: OpKind,
    /// The key.
    pub key: String,
    /// The invocation's value: null for a read, the integer for a write,
    /// `[expected, new]` for a cas.
    pub invoke_value: Value,
    /// How it ended.
    pub completion: Completion,
    /// The invoke's `time_ns`.
    pub call_ns: u64,
    /// The completion's `time_ns`, or [`ReturnTime::Never`].
    pub return_time: ReturnTime,
    /// 1-based line (= event position + 1) of the invoke.
    pub invoke_line: usize,
}

/// Pairs each invoke with the next completion of the same process.
///
/// Rules, each violation an [`HistoryError::Unpaired`] naming the line:
/// - a process has at most one operation outstanding: an `invoke` while its
///   previous operation has no completion is an error;
/// - a completion needs an outstanding invoke on its process, with the same
///   `f` and `key`, a `time_ns` not before the invoke's, and, for a write or
///   cas, a value that is `null` or equal to the invoke's;
/// - an invoke with no completion when the history ends has an unknown
///   outcome ([`Completion::Unknown`], [`ReturnTime::Never`]); so has `info`.
///
/// A process may invoke again after an `info` (its earlier operation is still
/// "unknown"; real time alone orders operations for the checker).
///
/// Operations are returned in the order of their invokes.
pub fn pair_operations(events: &[Event]) -> Result<Vec<Operation>, HistoryError> {
    let mut ops: Vec<Operation> = Vec::new();
    // process -> index in `ops` of its outstanding operation.
    let mut outstanding: BTreeMap<u64, usize> = BTreeMap::new();

    for (index, event) in events.iter().enumerate() {
        let line = index + 1;
        let unpaired = |message: String| HistoryError::Unpaired { line, message };
        event.validate().map_err(|message| HistoryError::Malformed { line, message })?;

        if event.kind == EventType::Invoke {
            if let Some(&previous) = outstanding.get(&event.process) {
                return Err(unpaired(format!(
                    "process {} invokes a {} while its {} invoked on line {} is still outstanding",
                    event.process, event.f, ops[previous].f, ops[previous].invoke_line
                )));
            }
            outstanding.insert(event.process, ops.len());
            ops.push(Operation {
                process: event.process,
                f: event.f,
                key: event.key.clone(),
                invoke_value: event.value,
                completion: Completion::Unknown,
                call_ns: event.time_ns,
                return_time: ReturnTime::Never,
                invoke_line: line,
            });
            continue;
        }

        let Some(op_index) = outstanding.remove(&event.process) else {
            return Err(unpaired(format!(
                "{} of a {} on process {} without an outstanding invoke",
                event.kind, event.f, event.process
            )));
        };
        let op = &mut ops[op_index];
        if op.f != event.f || op.key != event.key {
            return Err(unpaired(format!(
                "{} of {} on key {:?} completes the {} on key {:?} invoked on line {}",
                event.kind, event.f, event.key, op.f, op.key, op.invoke_line
            )));
        }
        if event.time_ns < op.call_ns {
            return Err(unpaired(format!(
                "completion at {} ns is before its invoke (line {}) at {} ns",
                event.time_ns, op.invoke_line, op.call_ns
            )));
        }
        if op.f != OpKind::Read && event.value != Value::Null && event.value != op.invoke_value {
            return Err(unpaired(format!(
                "completion value {} differs from the invoked {} (line {})",
                event.value, op.invoke_value, op.invoke_line
            )));
        }
        match event.kind {
            EventType::Ok => {
                op.completion = Completion::Ok {
                    read: match (op.f, event.value) {
                        (OpKind::Read, Value::Int(v)) => Some(v),
                        _ => None,
                    },
                };
                op.return_time = ReturnTime::At(event.time_ns);
            }
            EventType::Fail => {
                op.completion = Completion::Fail { error: event.error.clone() };
                op.return_time = ReturnTime::At(event.time_ns);
            }
            EventType::Info => {
                op.completion = Completion::Unknown;
                op.return_time = ReturnTime::Never;
            }
            EventType::Invoke => unreachable!("invokes are handled above"),
        }
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(process: u64, kind: EventType, f: OpKind, value: Value, time_ns: u64) -> Event {
        Event { process, kind, f, key: "k".to_string(), value, time_ns, error: None }
    }

    // Proves: the documented example line parses to the expected typed event
    // and serializes back to the same JSON (field for field).
    #[test]
    fn example_line_round_trips() {
        let line = r#"{"process":3,"type":"invoke","f":"cas","key":"k7","value":[1,2],"time_ns":123}"#;
        let event: Event = serde_json::from_str(line).unwrap();
        assert_eq!(
            event,
            Event {
                process: 3,
                kind: EventType::Invoke,
                f: OpKind::Cas,
                key: "k7".into(),
                value: Value::Cas { expected: 1, new: 2 },
                time_ns: 123,
                error: None,
            }
        );
        assert_eq!(serde_json::to_string(&event).unwrap(), line);
    }

    // Proves: the writer's output is read back identically, including null
    // values and the optional error field.
    #[test]
    fn writer_output_reads_back() {
        let mut fail = ev(1, EventType::Fail, OpKind::Write, Value::Int(5), 9);
        fail.error = Some("UNAVAILABLE: no quorum".into());
        let events = vec![
            ev(0, EventType::Invoke, OpKind::Read, Value::Null, 1),
            ev(1, EventType::Invoke, OpKind::Write, Value::Int(5), 2),
            ev(0, EventType::Ok, OpKind::Read, Value::Null, 3),
            fail,
        ];
        let mut writer = HistoryWriter::new(Vec::new());
        for e in &events {
            writer.append(e).unwrap();
        }
        let bytes = writer.into_inner();
        assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 4);
        assert_eq!(read_history(&bytes[..]).unwrap(), events);
    }

    // Proves: extra fields written after an event (the harness records a
    // write's version) are ignored by the reader: the event reads back as is.
    #[test]
    fn extra_fields_are_ignored_by_the_reader() {
        #[derive(Serialize)]
        struct Extra {
            version: [u64; 2],
        }
        let event = ev(2, EventType::Ok, OpKind::Write, Value::Int(5), 9);
        let mut writer = HistoryWriter::new(Vec::new());
        writer.append_with(&event, &Extra { version: [7, 3] }).unwrap();
        let bytes = writer.into_inner();
        let line = String::from_utf8(bytes.clone()).unwrap();
        assert!(line.ends_with(",\"version\":[7,3]}\n"), "{line}");
        assert_eq!(read_history(&bytes[..]).unwrap(), vec![event]);
    }

    // Proves: the writer refuses an event the reader would reject.
    #[test]
    fn writer_refuses_wrong_value_shape() {
        let mut writer = HistoryWriter::new(Vec::new());
        let bad = ev(0, EventType::Invoke, OpKind::Write, Value::Null, 1);
        assert!(writer.append(&bad).is_err());
        assert!(writer.into_inner().is_empty());
    }

    // Proves: malformed lines are reported with their line number, for bad
    // JSON, unknown enum values, missing fields and wrong value shapes.
    #[test]
    fn malformed_lines_name_their_line() {
        let good = r#"{"process":0,"type":"invoke","f":"read","key":"a","value":null,"time_ns":1}"#;
        let cases = [
            "{not json",
            r#"{"process":0,"type":"begin","f":"read","key":"a","value":null,"time_ns":1}"#,
            r#"{"process":0,"type":"ok","f":"delete","key":"a","value":null,"time_ns":1}"#,
            r#"{"process":0,"type":"ok","f":"read","value":null,"time_ns":1}"#,
            r#"{"process":0,"type":"invoke","f":"write","key":"a","value":null,"time_ns":1}"#,
            r#"{"process":0,"type":"invoke","f":"cas","key":"a","value":[1],"time_ns":1}"#,
            r#"{"process":0,"type":"invoke","f":"cas","key":"a","value":[1,2,3],"time_ns":1}"#,
            r#"{"process":0,"type":"ok","f":"read","key":"a","value":"x","time_ns":1}"#,
            r#"{"process":0,"type":"ok","f":"read","key":"a","value":1.5,"time_ns":1}"#,
            r#"{"process":0,"type":"ok","f":"read","key":"a","value":9223372036854775808,"time_ns":1}"#,
            r#"{"process":0,"type":"ok","f":"read","key":"a","value":1,"time_ns":1,"error":"x"}"#,
            "",
        ];
        for bad in cases {
            let text = format!("{good}\n{good}\n{bad}\n{good}\n");
            match read_history(text.as_bytes()) {
                Err(HistoryError::Malformed { line: 3, .. }) => {}
                other => panic!("{bad:?}: expected a malformed line 3, got {other:?}"),
            }
        }
    }

    // Proves: an endless line is refused without being read whole.
    #[test]
    fn overlong_line_is_malformed() {
        let text = vec![b'x'; LINE_BYTES_MAX * 2];
        assert!(matches!(read_history(&text[..]), Err(HistoryError::Malformed { line: 1, .. })));
    }

    // Proves: pairing matches invokes to completions per process, keeps
    // unknown outcomes (info and missing completion) with return "never",
    // and records fail errors.
    #[test]
    fn pairs_per_process() {
        let mut fail = ev(2, EventType::Fail, OpKind::Write, Value::Int(7), 40);
        fail.error = Some("UNAVAILABLE".into());
        let events = vec![
            ev(1, EventType::Invoke, OpKind::Write, Value::Int(1), 10),
            ev(2, EventType::Invoke, OpKind::Write, Value::Int(7), 11),
            ev(3, EventType::Invoke, OpKind::Read, Value::Null, 12),
            ev(1, EventType::Info, OpKind::Write, Value::Int(1), 20),
            ev(3, EventType::Ok, OpKind::Read, Value::Int(1), 30),
            fail,
            ev(1, EventType::Invoke, OpKind::Cas, Value::Cas { expected: 1, new: 2 }, 50),
        ];
        let ops = pair_operations(&events).unwrap();
        assert_eq!(ops.len(), 4);
        assert_eq!((ops[0].completion.clone(), ops[0].return_time), (Completion::Unknown, ReturnTime::Never));
        assert_eq!(ops[1].completion, Completion::Fail { error: Some("UNAVAILABLE".into()) });
        assert_eq!(ops[1].return_time, ReturnTime::At(40));
        assert_eq!(ops[2].completion, Completion::Ok { read: Some(1) });
        assert_eq!((ops[2].call_ns, ops[2].return_time), (12, ReturnTime::At(30)));
        assert_eq!(ops[3].f, OpKind::Cas);
        assert_eq!(ops[3].invoke_line, 7);
        assert_eq!((ops[3].completion.clone(), ops[3].return_time), (Completion::Unknown, ReturnTime::Never));
    }

    // Proves: every malformed pairing is an error naming the offending line,
    // not a panic.
    #[test]
    fn malformed_histories_are_errors() {
        let inv = |p, t| ev(p, EventType::Invoke, OpKind::Write, Value::Int(1), t);
        let ok = |p, t| ev(p, EventType::Ok, OpKind::Write, Value::Int(1), t);
        let mut other_key = ok(0, 5);
        other_key.key = "other".into();
        let cases: Vec<(Vec<Event>, usize)> = vec![
            // completion without invoke
            (vec![inv(0, 1), ok(1, 2)], 2),
            // second invoke while outstanding
            (vec![inv(0, 1), inv(0, 2)], 2),
            // completion of another key
            (vec![inv(0, 1), other_key], 2),
            // completion of another f
            (vec![inv(0, 1), ev(0, EventType::Ok, OpKind::Read, Value::Null, 2)], 2),
            // completion before invoke
            (vec![inv(0, 10), ok(0, 9)], 2),
            // completion value differs from the invoked one
            (vec![inv(0, 1), ev(0, EventType::Ok, OpKind::Write, Value::Int(2), 2)], 2),
        ];
        for (events, line) in cases {
            match pair_operations(&events) {
                Err(HistoryError::Unpaired { line: l, .. }) if l == line => {}
                other => panic!("{events:?}: expected unpaired line {line}, got {other:?}"),
            }
        }
    }
}
