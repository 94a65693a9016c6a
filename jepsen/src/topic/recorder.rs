//! Recording the topic workload: the `history.jsonl` file (format in
//! [`super::history`]) and an in-memory copy of every operation for the
//! checker and the report.
//!
//! Promises, as the register workload's [`crate::record::Recorder`]:
//! - every event takes its `time_ns` from the run clock *under the
//!   recorder's lock*, so lines are in time order and a completion is never
//!   before its invoke;
//! - each event is validated before it is written, so the harness cannot
//!   record a history its own reader would refuse;
//! - the number of operations is bounded ([`TOPIC_OPS_MAX`]): past it new
//!   invokes are refused and the workload stops.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;

use super::history::{PollOp, ReadValue, SendOp, TopicEvent, TopicF};
use crate::history::EventType;
use crate::record::{Counts, RecordError, RunClock};

/// Most operations (sends and polls) one run records: the register
/// workload's bound, so [`RecordError::Full`] names it right.
pub const TOPIC_OPS_MAX: usize = crate::record::OPS_MAX;

/// How a send ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendCompletion {
    /// `ok`, `fail` or `info`.
    pub kind: EventType,
    /// For `ok`: the acknowledged offset (none for acks=0).
    pub offset: Option<u64>,
    /// For `fail`: why it certainly did not happen.
    pub error: Option<String>,
    /// For `info`: why the outcome is unknown.
    pub note: Option<String>,
}

/// How a poll ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PollCompletion {
    /// Records read.
    Ok {
        /// `[offset, value]`, in offset order.
        records: Vec<(u64, ReadValue)>,
        /// Where to fetch next.
        next_offset: u64,
        /// The leader's high watermark.
        high_watermark: u64,
        /// The leader's log end offset.
        log_end_offset: u64,
    },
    /// The fetch failed; it changed nothing.
    Fail(String),
}

struct Pending {
    f: TopicF,
    partition: u32,
    value: Option<i64>,
    offset: Option<u64>,
    invoke_ns: u64,
}

struct Inner {
    out: BufWriter<File>,
    line: Vec<u8>,
    sends: Vec<SendOp>,
    polls: Vec<PollOp>,
    outstanding: BTreeMap<u64, Pending>,
    counts: Counts,
}

impl Inner {
    fn write(&mut self, event: &TopicEvent) -> Result<(), RecordError> {
        event.validate().map_err(|m| RecordError::History(crate::history::HistoryError::InvalidEvent(m)))?;
        self.line.clear();
        serde_json::to_writer(&mut self.line, event).map_err(|e| history_io(e.into()))?;
        self.line.push(b'\n');
        self.out.write_all(&self.line).map_err(history_io)
    }
}

fn history_io(e: std::io::Error) -> RecordError {
    RecordError::History(crate::history::HistoryError::Io(e))
}

/// Records sends and polls; shared by every client task.
pub struct TopicRecorder {
    clock: RunClock,
    inner: Mutex<Inner>,
}

impl TopicRecorder {
    /// A recorder writing `path` (created or truncated).
    pub fn create(path: &Path, clock: RunClock) -> Result<TopicRecorder, RecordError> {
        let file =
            File::create(path).map_err(|source| RecordError::Create { path: path.display().to_string(), source })?;
        Ok(TopicRecorder {
            clock,
            inner: Mutex::new(Inner {
                out: BufWriter::new(file),
                line: Vec::with_capacity(256),
                sends: Vec::new(),
                polls: Vec::new(),
                outstanding: BTreeMap::new(),
                counts: Counts::default(),
            }),
        })
    }

    /// The run clock.
    pub fn clock(&self) -> RunClock {
        self.clock
    }

    /// Records that `process` sends `value` to `partition`.
    pub fn invoke_send(&self, process: u64, partition: u32, value: i64) -> Result<(), RecordError> {
        self.invoke(process, TopicF::Send, partition, Some(value), None)
    }

    /// Records that `process` fetches `partition` from `offset`.
    pub fn invoke_poll(&self, process: u64, partition: u32, offset: u64) -> Result<(), RecordError> {
        self.invoke(process, TopicF::Poll, partition, None, Some(offset))
    }

    fn invoke(
        &self,
        process: u64,
        f: TopicF,
        partition: u32,
        value: Option<i64>,
        offset: Option<u64>,
    ) -> Result<(), RecordError> {
        let mut inner = self.inner.lock().expect("recorder lock");
        if inner.sends.len() + inner.polls.len() + inner.outstanding.len() >= TOPIC_OPS_MAX {
            return Err(RecordError::Full);
        }
        assert!(!inner.outstanding.contains_key(&process), "process {process} invoked twice");
        let time_ns = self.clock.now_ns();
        inner.write(&TopicEvent {
            process,
            kind: EventType::Invoke,
            f,
            partition,
            value,
            offset,
            records: Vec::new(),
            next_offset: None,
            high_watermark: None,
            log_end_offset: None,
            time_ns,
            error: None,
            note: None,
        })?;
        inner.outstanding.insert(process, Pending { f, partition, value, offset, invoke_ns: time_ns });
        inner.counts.ops += 1;
        Ok(())
    }

    /// Records how `process`'s outstanding send ended.
    pub fn complete_send(&self, process: u64, done: SendCompletion) -> Result<(), RecordError> {
        assert!(done.kind != EventType::Invoke, "a completion is not an invoke");
        let mut inner = self.inner.lock().expect("recorder lock");
        let pending = inner.outstanding.remove(&process).unwrap_or_else(|| panic!("process {process} sends nothing"));
        assert_eq!(pending.f, TopicF::Send, "process {process} completes a send it did not invoke");
        let time_ns = self.clock.now_ns();
        let offset = if done.kind == EventType::Ok { done.offset } else { None };
        inner.write(&TopicEvent {
            process,
            kind: done.kind,
            f: TopicF::Send,
            partition: pending.partition,
            value: pending.value,
            offset,
            records: Vec::new(),
            next_offset: None,
            high_watermark: None,
            log_end_offset: None,
            time_ns,
            error: done.error.clone(),
            note: done.note.clone(),
        })?;
        inner.counts.add(done.kind);
        inner.sends.push(SendOp {
            process,
            partition: pending.partition,
            value: pending.value.expect("a send has a value"),
            outcome: done.kind,
            offset,
            invoke_ns: pending.invoke_ns,
            complete_ns: time_ns,
            error: done.error,
            note: done.note,
        });
        Ok(())
    }

    /// Records how `process`'s outstanding poll ended.
    pub fn complete_poll(&self, process: u64, done: PollCompletion) -> Result<(), RecordError> {
        let mut inner = self.inner.lock().expect("recorder lock");
        let pending = inner.outstanding.remove(&process).unwrap_or_else(|| panic!("process {process} polls nothing"));
        assert_eq!(pending.f, TopicF::Poll, "process {process} completes a poll it did not invoke");
        let time_ns = self.clock.now_ns();
        let from = pending.offset.expect("a poll has an offset");
        let (kind, records, next_offset, high_watermark, log_end_offset, error) = match done {
            PollCompletion::Ok { records, next_offset, high_watermark, log_end_offset } => {
                (EventType::Ok, records, Some(next_offset), Some(high_watermark), Some(log_end_offset), None)
            }
            PollCompletion::Fail(error) => (EventType::Fail, Vec::new(), None, None, None, Some(error)),
        };
        let event = TopicEvent {
            process,
            kind,
            f: TopicF::Poll,
            partition: pending.partition,
            value: None,
            offset: Some(from),
            records,
            next_offset,
            high_watermark,
            log_end_offset,
            time_ns,
            error,
            note: None,
        };
        inner.write(&event)?;
        inner.counts.add(kind);
        inner.polls.push(PollOp {
            process,
            partition: pending.partition,
            offset: from,
            outcome: kind,
            records: event.records,
            next_offset,
            high_watermark,
            log_end_offset,
            invoke_ns: pending.invoke_ns,
            complete_ns: time_ns,
            error: event.error,
        });
        Ok(())
    }

    /// Counts so far (sends and polls).
    pub fn counts(&self) -> Counts {
        self.inner.lock().expect("recorder lock").counts
    }

    /// Flushes the file and returns every send and poll in completion
    /// order; operations still outstanding count as `info` ending now (the
    /// file keeps them without completion, which the reader reads the same
    /// way).
    pub fn finish(self) -> Result<(Vec<SendOp>, Vec<PollOp>), RecordError> {
        let end_ns = self.clock.now_ns();
        let mut inner = self.inner.into_inner().expect("recorder lock");
        inner.out.flush().map_err(history_io)?;
        for (process, p) in std::mem::take(&mut inner.outstanding) {
            match p.f {
                TopicF::Send => inner.sends.push(SendOp {
                    process,
                    partition: p.partition,
                    value: p.value.expect("a send has a value"),
                    outcome: EventType::Info,
                    offset: None,
                    invoke_ns: p.invoke_ns,
                    complete_ns: end_ns,
                    error: None,
                    note: Some("never completed".into()),
                }),
                TopicF::Poll => inner.polls.push(PollOp {
                    process,
                    partition: p.partition,
                    offset: p.offset.expect("a poll has an offset"),
                    outcome: EventType::Info,
                    records: Vec::new(),
                    next_offset: None,
                    high_watermark: None,
                    log_end_offset: None,
                    invoke_ns: p.invoke_ns,
                    complete_ns: end_ns,
                    error: None,
                }),
            }
        }
        Ok((inner.sends, inner.polls))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::history::{pair_topic_operations, read_topic_history};

    // Proves: what the recorder writes reads back, through the topic
    // history reader, into the same operations it returns; a send left
    // outstanding is unknown in both views.
    #[test]
    fn recorded_history_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let recorder = TopicRecorder::create(&path, RunClock::start_now()).unwrap();
        recorder.invoke_send(0, 1, 10).unwrap();
        recorder.invoke_send(1, 2, 11).unwrap();
        recorder
            .complete_send(0, SendCompletion { kind: EventType::Ok, offset: Some(0), error: None, note: None })
            .unwrap();
        recorder.invoke_poll(9, 1, 0).unwrap();
        recorder
            .complete_poll(
                9,
                PollCompletion::Ok {
                    records: vec![(0, ReadValue::Int(10))],
                    next_offset: 1,
                    high_watermark: 1,
                    log_end_offset: 1,
                },
            )
            .unwrap();
        assert_eq!(recorder.counts(), Counts { ops: 3, ok: 2, fail: 0, info: 0 });
        let (sends, polls) = recorder.finish().unwrap();
        assert_eq!(sends.len(), 2);
        assert_eq!((sends[1].value, sends[1].outcome), (11, EventType::Info));

        let text = std::fs::read_to_string(&path).unwrap();
        let events = read_topic_history(text.as_bytes()).unwrap();
        assert!(events.windows(2).all(|w| w[0].time_ns <= w[1].time_ns), "lines in time order");
        let (read_sends, read_polls) = pair_topic_operations(&events).unwrap();
        assert_eq!(read_polls, polls);
        assert_eq!(read_sends[0], sends[0]);
        assert_eq!((read_sends[1].value, read_sends[1].outcome), (11, EventType::Info));
    }
}
