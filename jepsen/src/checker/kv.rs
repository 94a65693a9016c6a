//! Checks capkv's own histories (`history.jsonl`, see [`crate::history`])
//! against the per-key [register model](super::register).
//!
//! This is where the outcomes of the history format get their meaning:
//!
//! | operation ended with | becomes |
//! |----------------------|---------|
//! | `ok` read → v        | read that returned v, between its call and return |
//! | `ok` write / cas     | write / swapped cas, between call and return |
//! | `fail` cas, no `error` | "compare failed": no effect, and the register did not hold `expected` at its linearization point |
//! | `fail` with `error`  | dropped: it definitely did not happen and constrains nothing |
//! | `fail` read or write, no `error` | dropped: it did not happen |
//! | `info`, or no completion | write / cas with unknown outcome (return time +∞); a read is dropped |
//!
//! Times are the events' `time_ns`: an operation is concurrent with every
//! operation whose interval overlaps its own (equal times count as overlap).

use std::io::BufRead;
use std::time::Duration;

use porcupine_rs::Operation as PorcupineOp;

use super::register::{RegisterAction, RegisterModel, RegisterOp};
use super::{OpOrigin, Verdict, RETURN_NEVER};
use crate::history::{self, Completion, Event, HistoryError, OpKind, Operation, ReturnTime, Value};

/// Reads a `history.jsonl` and turns it into register operations.
pub fn load<R: BufRead>(input: R) -> Result<Vec<PorcupineOp<RegisterModel>>, HistoryError> {
    from_events(&history::read_history(input)?)
}

/// Pairs `events` (see [`history::pair_operations`]) and turns them into
/// register operations, dropping those that constrain nothing.
pub fn from_events(events: &[Event]) -> Result<Vec<PorcupineOp<RegisterModel>>, HistoryError> {
    let ops = history::pair_operations(events)?;
    let mut out = Vec::with_capacity(ops.len());
    for op in &ops {
        if let Some(checked) = to_register_op(op)? {
            out.push(checked);
        }
    }
    Ok(out)
}

/// Checks register operations within `budget`.
pub fn check(history: &[PorcupineOp<RegisterModel>], budget: Duration) -> Verdict {
    super::check_operations(history, budget)
}

/// Checks a history given as events within `budget`.
pub fn check_events(events: &[Event], budget: Duration) -> Result<Verdict, HistoryError> {
    Ok(check(&from_events(events)?, budget))
}

fn time(ns: u64, op: &Operation) -> Result<i64, HistoryError> {
    i64::try_from(ns).ok().filter(|t| *t < RETURN_NEVER).ok_or_else(|| HistoryError::Malformed {
        line: op.invoke_line,
        message: format!("time_ns {ns} is too large (must be below 2^63 - 1)"),
    })
}

fn to_register_op(op: &Operation) -> Result<Option<PorcupineOp<RegisterModel>>, HistoryError> {
    let unknown = matches!(op.completion, Completion::Unknown);
    let action = match (op.f, op.invoke_value, &op.completion) {
        (_, _, Completion::Fail { error: Some(_) }) => return Ok(None),
        (OpKind::Read, _, Completion::Ok { read }) => RegisterAction::Read(*read),
        (OpKind::Read, _, _) => return Ok(None),
        (OpKind::Write, _, Completion::Fail { .. }) => return Ok(None),
        (OpKind::Write, Value::Int(v), _) if unknown => RegisterAction::WriteUnknown(v),
        (OpKind::Write, Value::Int(v), _) => RegisterAction::Write(v),
        (OpKind::Cas, Value::Cas { expected, new }, Completion::Ok { .. }) => RegisterAction::CasOk { expected, new },
        (OpKind::Cas, Value::Cas { expected, new }, Completion::Fail { .. }) => {
            RegisterAction::CasFailed { expected, new }
        }
        (OpKind::Cas, Value::Cas { expected, new }, Completion::Unknown) => {
            RegisterAction::CasUnknown { expected, new }
        }
        (f, value, _) => unreachable!("pair_operations validated a {f} invoke with value {value}"),
    };
    let return_time = match op.return_time {
        ReturnTime::At(ns) => time(ns, op)?,
        ReturnTime::Never => RETURN_NEVER,
    };
    Ok(Some(PorcupineOp {
        client_id: u32::try_from(op.process).ok(),
        call_time: time(op.call_ns, op)?,
        return_time,
        op: RegisterOp { key: op.key.clone(), action },
        metadata: Some(OpOrigin { process: op.process, line: op.invoke_line }),
    }))
}
