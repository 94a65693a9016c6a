//! Recording what the clients did: one monotonic clock for the run, the
//! `history.jsonl` file, and an in-memory copy of every operation for the
//! checkers and the report.
//!
//! Promises:
//! - every event gets its `time_ns` from [`RunClock`] *under the recorder's
//!   lock*, so lines are in time order and a completion is never before its
//!   invoke;
//! - the file is written through the history module's
//!   [`HistoryWriter`](crate::history::HistoryWriter), so it is exactly the
//!   documented format; every invoke also carries the operation's
//!   consistency `level`, and ok writes, cas and reads the capkv `version`
//!   they returned (extra fields the checker ignores);
//! - the number of operations is bounded ([`OPS_MAX`]): past it the
//!   recorder refuses new invokes and the workload stops.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::sync::Mutex;

use capkv::Level;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::history::{Event, EventType, HistoryError, HistoryWriter, OpKind, Value};

/// Most operations one run records.
pub const OPS_MAX: usize = 500_000;

/// The run's monotonic clock: ns since the run started.
#[derive(Clone, Copy, Debug)]
pub struct RunClock {
    start: Instant,
}

impl RunClock {
    /// A clock starting now.
    pub fn start_now() -> Self {
        RunClock { start: Instant::now() }
    }

    /// When the run started.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// ns since the run started.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).expect("a run shorter than 584 years")
    }
}

/// A capkv version `(hlc, node)`, totally ordered like capkv's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RecordedVersion {
    /// The HLC stamp.
    pub hlc: u64,
    /// The writer node.
    pub node: u32,
}

impl From<capkv::Version> for RecordedVersion {
    fn from(v: capkv::Version) -> Self {
        RecordedVersion { hlc: v.hlc, node: v.node_id }
    }
}

impl std::fmt::Display for RecordedVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", capkv::Version::new(self.hlc, self.node))
    }
}

/// Which part of the run an operation belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The workload under faults.
    Workload,
    /// The reads after everything was healed.
    FinalRead,
}

/// How an operation ended, as the client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    /// `ok`, `fail` or `info`.
    pub kind: EventType,
    /// The completion's value: what a read returned, else the invoke's.
    pub value: Value,
    /// On a `fail` that definitely did not happen: why.
    pub error: Option<String>,
    /// The version an ok operation returned (written or read).
    pub version: Option<RecordedVersion>,
    /// Anything odd worth keeping next to the event (not for `fail`s,
    /// which have `error`).
    pub note: Option<String>,
}

/// One operation, invoke and completion together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpRecord {
    /// The process that ran it.
    pub process: u64,
    /// Which operation.
    pub f: OpKind,
    /// The key.
    pub key: String,
    /// The invoke's value.
    pub invoke_value: Value,
    /// `ok`, `fail` or `info`; `info` also when it never completed.
    pub outcome: EventType,
    /// For an ok read: the value returned (`None` = absent).
    pub read: Option<i64>,
    /// The version an ok operation returned.
    pub version: Option<RecordedVersion>,
    /// Why a `fail` failed.
    pub error: Option<String>,
    /// The completion's note, if any (see [`Completion::note`]).
    pub note: Option<String>,
    /// The invoke's time, ns on the run clock.
    pub invoke_ns: u64,
    /// The completion's time; for an operation that never completed, the
    /// end of the recording.
    pub complete_ns: u64,
    /// Workload or final read.
    pub phase: Phase,
    /// The consistency level it ran at.
    pub level: Level,
}

impl OpRecord {
    /// The value this operation wrote or may have written (write: the
    /// value; cas: the new value); `None` for reads.
    pub fn written_value(&self) -> Option<i64> {
        match (self.f, self.invoke_value) {
            (OpKind::Write, Value::Int(v)) => Some(v),
            (OpKind::Cas, Value::Cas { new, .. }) => Some(new),
            _ => None,
        }
    }

    /// Completion time minus invoke time, in ms.
    pub fn latency_ms(&self) -> f64 {
        (self.complete_ns - self.invoke_ns) as f64 / 1e6
    }
}

/// Operation counts by outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Invoked.
    pub ops: u64,
    /// Ended `ok`.
    pub ok: u64,
    /// Ended `fail`.
    pub fail: u64,
    /// Ended `info`, or never completed.
    pub info: u64,
}

impl Counts {
    /// Counts one finished operation.
    pub fn add(&mut self, outcome: EventType) {
        match outcome {
            EventType::Ok => self.ok += 1,
            EventType::Fail => self.fail += 1,
            EventType::Info => self.info += 1,
            EventType::Invoke => unreachable!("an outcome is not an invoke"),
        }
    }
}

/// Why recording stopped.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// [`OPS_MAX`] operations were recorded.
    #[error("the history is full ({OPS_MAX} operations)")]
    Full,
    /// Writing the history failed.
    #[error(transparent)]
    History(#[from] HistoryError),
    /// The history file could not be created.
    #[error("cannot create {path}: {source}")]
    Create {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The invoke's extra field.
#[derive(Serialize)]
struct InvokeExtra {
    level: &'static str,
}

/// A completion's extra fields.
#[derive(Serialize)]
struct Extra<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<RecordedVersion>,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<&'a str>,
}

struct Pending {
    f: OpKind,
    key: String,
    value: Value,
    invoke_ns: u64,
    phase: Phase,
    level: Level,
}

struct Inner {
    writer: HistoryWriter<BufWriter<File>>,
    ops: Vec<OpRecord>,
    outstanding: BTreeMap<u64, Pending>,
    counts: Counts,
}

/// Records operations; see the module docs. Shared by every client task.
pub struct Recorder {
    clock: RunClock,
    inner: Mutex<Inner>,
}

impl Recorder {
    /// A recorder writing `path` (created or truncated).
    pub fn create(path: &Path, clock: RunClock) -> Result<Recorder, RecordError> {
        let file =
            File::create(path).map_err(|source| RecordError::Create { path: path.display().to_string(), source })?;
        Ok(Recorder {
            clock,
            inner: Mutex::new(Inner {
                writer: HistoryWriter::new(BufWriter::new(file)),
                ops: Vec::new(),
                outstanding: BTreeMap::new(),
                counts: Counts::default(),
            }),
        })
    }

    /// The run clock.
    pub fn clock(&self) -> RunClock {
        self.clock
    }

    /// Records that `process` invokes `f` on `key` at `level`; returns the
    /// invoke time.
    pub fn invoke(
        &self,
        process: u64,
        f: OpKind,
        key: &str,
        value: Value,
        level: Level,
        phase: Phase,
    ) -> Result<u64, RecordError> {
        let mut inner = self.inner.lock().expect("recorder lock");
        if inner.ops.len() + inner.outstanding.len() >= OPS_MAX {
            return Err(RecordError::Full);
        }
        assert!(!inner.outstanding.contains_key(&process), "process {process} invoked twice");
        let time_ns = self.clock.now_ns();
        let event = Event { process, kind: EventType::Invoke, f, key: key.to_string(), value, time_ns, error: None };
        inner.writer.append_with(&event, &InvokeExtra { level: level.name() })?;
        inner.outstanding.insert(process, Pending { f, key: key.to_string(), value, invoke_ns: time_ns, phase, level });
        inner.counts.ops += 1;
        Ok(time_ns)
    }

    /// Records how `process`'s outstanding operation ended.
    pub fn complete(&self, process: u64, completion: Completion) -> Result<(), RecordError> {
        let mut inner = self.inner.lock().expect("recorder lock");
        let pending =
            inner.outstanding.remove(&process).unwrap_or_else(|| panic!("process {process} completes nothing"));
        assert!(completion.kind != EventType::Invoke, "a completion is not an invoke");
        let time_ns = self.clock.now_ns();
        let event = Event {
            process,
            kind: completion.kind,
            f: pending.f,
            key: pending.key.clone(),
            value: completion.value,
            time_ns,
            error: completion.error.clone(),
        };
        let extra = Extra { version: completion.version, note: completion.note.as_deref() };
        inner.writer.append_with(&event, &extra)?;
        inner.counts.add(completion.kind);
        let read = match (pending.f, completion.kind, completion.value) {
            (OpKind::Read, EventType::Ok, Value::Int(v)) => Some(v),
            _ => None,
        };
        inner.ops.push(OpRecord {
            process,
            f: pending.f,
            key: pending.key,
            invoke_value: pending.value,
            outcome: completion.kind,
            read,
            version: completion.version,
            error: completion.error,
            note: completion.note,
            invoke_ns: pending.invoke_ns,
            complete_ns: time_ns,
            phase: pending.phase,
            level: pending.level,
        });
        Ok(())
    }

    /// Counts so far.
    pub fn counts(&self) -> Counts {
        self.inner.lock().expect("recorder lock").counts
    }

    /// Flushes the file and returns every operation in completion order;
    /// operations still outstanding count as `info` ending now (the file
    /// keeps them without completion, which the checker reads the same way).
    pub fn finish(self) -> Result<Vec<OpRecord>, RecordError> {
        let end_ns = self.clock.now_ns();
        let mut inner = self.inner.into_inner().expect("recorder lock");
        inner.writer.flush()?;
        let outstanding = std::mem::take(&mut inner.outstanding);
        for (process, p) in outstanding {
            inner.ops.push(OpRecord {
                process,
                f: p.f,
                key: p.key,
                invoke_value: p.value,
                outcome: EventType::Info,
                read: None,
                version: None,
                error: None,
                note: None,
                invoke_ns: p.invoke_ns,
                complete_ns: end_ns,
                phase: p.phase,
                level: p.level,
            });
        }
        Ok(inner.ops)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{pair_operations, read_history, Completion as HistCompletion};

    // Proves: what the recorder writes is a valid history the checker's
    // reader pairs back into the same operations, with the version as an
    // extra field; an operation left outstanding is unknown in both views.
    #[test]
    fn recorded_history_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let recorder = Recorder::create(&path, RunClock::start_now()).unwrap();
        let v = RecordedVersion { hlc: 99, node: 2 };
        recorder.invoke(0, OpKind::Write, "k", Value::Int(1), Level::Quorum, Phase::Workload).unwrap();
        recorder.invoke(1, OpKind::Read, "k", Value::Null, Level::Linearizable, Phase::Workload).unwrap();
        recorder
            .complete(
                0,
                Completion { kind: EventType::Ok, value: Value::Int(1), error: None, version: Some(v), note: None },
            )
            .unwrap();
        recorder
            .invoke(2, OpKind::Cas, "k", Value::Cas { expected: 1, new: 2 }, Level::Quorum, Phase::Workload)
            .unwrap();
        recorder
            .complete(
                1,
                Completion { kind: EventType::Ok, value: Value::Int(1), error: None, version: Some(v), note: None },
            )
            .unwrap();
        assert_eq!(recorder.counts(), Counts { ops: 3, ok: 2, fail: 0, info: 0 });
        let ops = recorder.finish().unwrap();
        assert_eq!(ops.len(), 3);
        assert_eq!((ops[1].read, ops[1].version), (Some(1), Some(v)));
        assert_eq!((ops[2].f, ops[2].outcome, ops[2].level), (OpKind::Cas, EventType::Info, Level::Quorum));
        assert_eq!(ops[1].level, Level::Linearizable);
        assert!(ops.iter().all(|op| op.invoke_ns <= op.complete_ns));

        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.lines().next().unwrap().ends_with(r#","level":"quorum"}"#), "{text}");
        assert!(text.lines().nth(1).unwrap().ends_with(r#","level":"linearizable"}"#), "{text}");
        assert!(text.lines().nth(2).unwrap().ends_with(r#""version":{"hlc":99,"node":2}}"#), "{text}");
        let events = read_history(text.as_bytes()).unwrap();
        assert!(events.windows(2).all(|w| w[0].time_ns <= w[1].time_ns), "lines in time order");
        let paired = pair_operations(&events).unwrap();
        assert_eq!(paired.len(), 3);
        assert_eq!(paired[1].completion, HistCompletion::Ok { read: Some(1) });
        assert_eq!(paired[2].completion, HistCompletion::Unknown);
    }
}
