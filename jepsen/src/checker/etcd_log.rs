//! Loads Jepsen's etcd logs (the reference histories in
//! `shared/porcupine-data/etcd/etcd_NNN.log`) as operations on the
//! [register model](super::register), so the checker can be validated
//! against their published verdicts.
//!
//! Only lines containing `jepsen.util` matter; after its ` - ` come
//! whitespace-separated `PROCESS TYPE F VALUE` (tabs in most lines, spaces in
//! some). The log has one register (initially absent) and no timestamps: a
//! line's number is its time. Meaning:
//!
//! | line | becomes |
//! |------|---------|
//! | `:invoke :read nil` / `:write N` / `:cas [A B]` | the call of an operation |
//! | `:ok :read N` or `nil` | a read that returned N / "absent" |
//! | `:ok :write N` / `:ok :cas [A B]` | a write / a cas that swapped |
//! | `:fail :cas [A B]` | a cas whose compare failed (the register did not hold A) |
//! | `:fail :read …`, other `:fail`s | dropped: did not happen, constrains nothing |
//! | `:info …`, or no completion at all | write / cas with unknown outcome (return time +∞); a read is dropped |
//!
//! Anything else on a `jepsen.util` line is an error naming the line.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::time::Duration;

use porcupine_rs::Operation;

use super::register::{RegisterAction, RegisterModel, RegisterOp};
use super::{LogError, OpOrigin, Verdict, RETURN_NEVER};

/// The key under which the log's single register is reported.
pub const REGISTER_KEY: &str = "register";

/// The largest log line accepted, in bytes.
pub const LINE_BYTES_MAX: usize = 64 * 1024;

/// A parsed `VALUE` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LogValue {
    Nil,
    Int(i64),
    Pair(i64, i64),
    /// A keyword such as `:timed-out`.
    Keyword,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Invoke,
    Ok,
    Fail,
    Info,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum F {
    Read,
    Write,
    Cas,
}

/// An invoke waiting for its completion.
struct Pending {
    f: F,
    value: LogValue,
    line: usize,
}

/// Reads a Jepsen etcd log and returns its operations, in invoke order.
pub fn load<R: BufRead>(input: R) -> Result<Vec<Operation<RegisterModel>>, LogError> {
    let mut ops: Vec<(usize, Operation<RegisterModel>)> = Vec::new();
    let mut pending: BTreeMap<u64, Pending> = BTreeMap::new();
    let mut line = 0usize;

    for text in input.lines() {
        let text = text?;
        line += 1;
        if text.len() > LINE_BYTES_MAX {
            return Err(malformed(line, format!("longer than {LINE_BYTES_MAX} bytes")));
        }
        let Some(at) = text.find("jepsen.util") else {
            continue;
        };
        let rest = &text[at + "jepsen.util".len()..];
        let rest = rest
            .trim_start()
            .strip_prefix('-')
            .ok_or_else(|| malformed(line, "expected ` - ` after `jepsen.util`".into()))?;
        let (process, kind, f, value) = parse_fields(rest).map_err(|m| malformed(line, m))?;

        if kind == Kind::Invoke {
            let expected_shape = match f {
                F::Read => value == LogValue::Nil,
                F::Write => matches!(value, LogValue::Int(_)),
                F::Cas => matches!(value, LogValue::Pair(..)),
            };
            if !expected_shape {
                return Err(malformed(line, format!("invoke of {f:?} with value {value:?}")));
            }
            if let Some(previous) = pending.insert(process, Pending { f, value, line }) {
                return Err(malformed(
                    line,
                    format!("process {process} invokes while its invoke on line {} is outstanding", previous.line),
                ));
            }
            continue;
        }

        let Some(call) = pending.remove(&process) else {
            return Err(malformed(line, format!("completion on process {process} without an outstanding invoke")));
        };
        if call.f != f {
            return Err(malformed(line, format!("{f:?} completion of the {:?} invoked on line {}", call.f, call.line)));
        }
        if f != F::Read && matches!(value, LogValue::Int(_) | LogValue::Pair(..)) && value != call.value {
            return Err(malformed(
                line,
                format!("completion value {value:?} differs from the invoked {:?}", call.value),
            ));
        }
        let action = match (kind, f, call.value, value) {
            (Kind::Ok, F::Read, _, LogValue::Nil) => Some(RegisterAction::Read(None)),
            (Kind::Ok, F::Read, _, LogValue::Int(v)) => Some(RegisterAction::Read(Some(v))),
            (Kind::Ok, F::Write, LogValue::Int(v), _) => Some(RegisterAction::Write(v)),
            (Kind::Ok, F::Cas, LogValue::Pair(expected, new), _) => Some(RegisterAction::CasOk { expected, new }),
            (Kind::Fail, F::Cas, LogValue::Pair(expected, new), LogValue::Pair(..)) => {
                Some(RegisterAction::CasFailed { expected, new })
            }
            (Kind::Fail, _, _, _) => None,
            (Kind::Info, F::Read, _, _) => None,
            (Kind::Info, F::Write, LogValue::Int(v), _) => Some(RegisterAction::WriteUnknown(v)),
            (Kind::Info, F::Cas, LogValue::Pair(expected, new), _) => {
                Some(RegisterAction::CasUnknown { expected, new })
            }
            _ => {
                return Err(malformed(line, format!("{kind:?} {f:?} with value {value:?} is not a valid completion")));
            }
        };
        if let Some(action) = action {
            let return_time = if kind == Kind::Info { RETURN_NEVER } else { time(line)? };
            ops.push((call.line, operation(process, &call, action, return_time)?));
        }
    }

    // Invokes without completion: unknown outcome.
    for (process, call) in &pending {
        let action = match call.value {
            LogValue::Int(v) if call.f == F::Write => RegisterAction::WriteUnknown(v),
            LogValue::Pair(expected, new) if call.f == F::Cas => RegisterAction::CasUnknown { expected, new },
            _ => continue, // a read: constrains nothing
        };
        ops.push((call.line, operation(*process, call, action, RETURN_NEVER)?));
    }
    ops.sort_by_key(|(line, _)| *line);
    Ok(ops.into_iter().map(|(_, op)| op).collect())
}

/// Checks the operations of an etcd log within `budget`.
pub fn check(history: &[Operation<RegisterModel>], budget: Duration) -> Verdict {
    super::check_operations(history, budget)
}

fn malformed(line: usize, message: String) -> LogError {
    LogError::Malformed { line, message }
}

fn time(line: usize) -> Result<i64, LogError> {
    i64::try_from(line).map_err(|_| malformed(line, "too many lines".into()))
}

fn operation(
    process: u64,
    call: &Pending,
    action: RegisterAction,
    return_time: i64,
) -> Result<Operation<RegisterModel>, LogError> {
    Ok(Operation {
        client_id: u32::try_from(process).ok(),
        call_time: time(call.line)?,
        return_time,
        op: RegisterOp { key: REGISTER_KEY.to_string(), action },
        metadata: Some(OpOrigin { process, line: call.line }),
    })
}

/// Parses `PROCESS TYPE F VALUE…` (whitespace-separated).
fn parse_fields(rest: &str) -> Result<(u64, Kind, F, LogValue), String> {
    let mut fields = rest.split_whitespace();
    let mut next = |what: &str| fields.next().ok_or_else(|| format!("missing {what}"));
    let process_text = next("process")?;
    let process: u64 = process_text.parse().map_err(|_| format!("process {process_text:?} is not a number"))?;
    let kind = match next("type")? {
        ":invoke" => Kind::Invoke,
        ":ok" => Kind::Ok,
        ":fail" => Kind::Fail,
        ":info" => Kind::Info,
        other => return Err(format!("unknown type {other:?}")),
    };
    let f = match next("f")? {
        ":read" => F::Read,
        ":write" => F::Write,
        ":cas" => F::Cas,
        other => return Err(format!("unknown f {other:?}")),
    };
    let value_text: Vec<&str> = fields.collect();
    let value = parse_value(&value_text.join(" "))?;
    Ok((process, kind, f, value))
}

fn parse_value(text: &str) -> Result<LogValue, String> {
    let int = |s: &str| s.trim().parse::<i64>().map_err(|_| format!("{s:?} is not an integer"));
    if text == "nil" {
        Ok(LogValue::Nil)
    } else if text.starts_with(':') && !text.contains(char::is_whitespace) {
        Ok(LogValue::Keyword)
    } else if let Some(inner) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        let parts: Vec<&str> = inner.split_whitespace().collect();
        match parts.as_slice() {
            [a, b] => Ok(LogValue::Pair(int(a)?, int(b)?)),
            _ => Err(format!("{text:?} is not a pair [A B]")),
        }
    } else if text.is_empty() {
        Err("missing value".into())
    } else {
        Ok(LogValue::Int(int(text)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFIX: &str = "INFO  jepsen.util - ";

    fn log(lines: &[&str]) -> String {
        lines.iter().map(|l| format!("{PREFIX}{l}\n")).collect()
    }

    // Proves: every line kind of the README maps to the documented action,
    // tabs and spaces both separate fields, other lines are ignored, and an
    // invoke without completion becomes an unknown-outcome operation.
    #[test]
    fn maps_every_line_kind() {
        let mut text = String::from("some unrelated line\n");
        text += &log(&[
            "0\t:invoke\t:write\t3",
            "1 :invoke :read nil",
            "0\t:ok\t:write\t3",
            "1\t:ok\t:read\t3",
            "2\t:invoke\t:cas\t[3 4]",
            "2\t:ok\t:cas\t[3 4]",
            "3\t:invoke\t:cas\t[1 2]",
            "3\t:fail\t:cas\t[1 2]",
            "4\t:invoke\t:read\tnil",
            "4\t:fail\t:read\t:timed-out",
            "5\t:invoke\t:write\t9",
            "5\t:info\t:write\t:timed-out",
            "6\t:invoke\t:cas\t[4 0]",
            "6\t:info\t:cas\t:timed-out",
            "7\t:invoke\t:read\tnil",
            "7\t:ok\t:read\tnil",
            "8\t:invoke\t:write\t1",
        ]);
        let ops = load(text.as_bytes()).unwrap();
        let got: Vec<(RegisterAction, i64, i64, usize)> =
            ops.iter().map(|o| (o.op.action, o.call_time, o.return_time, o.metadata.unwrap().line)).collect();
        use RegisterAction::*;
        assert_eq!(
            got,
            vec![
                (Write(3), 2, 4, 2),
                (Read(Some(3)), 3, 5, 3),
                (CasOk { expected: 3, new: 4 }, 6, 7, 6),
                (CasFailed { expected: 1, new: 2 }, 8, 9, 8),
                (WriteUnknown(9), 12, RETURN_NEVER, 12),
                (CasUnknown { expected: 4, new: 0 }, 14, RETURN_NEVER, 14),
                (Read(None), 16, 17, 16),
                (WriteUnknown(1), 18, RETURN_NEVER, 18),
            ]
        );
        assert!(ops.iter().all(|o| o.op.key == REGISTER_KEY));
    }

    // Proves: malformed jepsen.util lines are errors naming their line.
    #[test]
    fn malformed_lines_are_errors() {
        let cases: [(&[&str], usize); 7] = [
            (&["x\t:invoke\t:read\tnil"], 1),
            (&["0\t:begin\t:read\tnil"], 1),
            (&["0\t:invoke\t:delete\tnil"], 1),
            (&["0\t:invoke\t:write\tnil"], 1),
            (&["0\t:invoke\t:cas\t[1 2 3]"], 1),
            (&["0\t:invoke\t:read\tnil", "0\t:invoke\t:read\tnil"], 2),
            (&["0\t:invoke\t:read\tnil", "1\t:ok\t:read\t3"], 2),
        ];
        for (lines, line) in cases {
            match load(log(lines).as_bytes()) {
                Err(LogError::Malformed { line: l, .. }) if l == line => {}
                other => panic!("{lines:?}: expected malformed line {line}, got {other:?}"),
            }
        }
    }
}
