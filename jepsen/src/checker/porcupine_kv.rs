//! Loads Porcupine's kv logs (the reference histories in
//! `shared/porcupine-data/kv/cNN-{ok,bad}.txt`) and checks them against a
//! string key/value model, so the checker's per-key partitioning is validated
//! against published verdicts too.
//!
//! Each line is an EDN map
//! `{:process P, :type :invoke|:ok, :f :get|:put|:append, :key "K", :value "V"|nil}`;
//! a line's number is its time. The model: every key starts as the empty
//! string; `get` returns the value, `put` replaces it, `append` concatenates.
//! Keys are independent, so the history is partitioned per key.
//!
//! Outcomes: an invoke paired with the next `:ok` of its process is a
//! completed operation (a `get` whose `:ok` value is `nil` read the empty
//! string); an invoke with no `:ok` (or ended by `:info`) has an unknown
//! outcome: a `put`/`append` gets return time +∞, a `get` is dropped.
//! `:fail` means it did not happen: dropped.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::time::Duration;

use porcupine_rs::{Model, Operation};

use super::edn::{self, EdnValue};
use super::explanation::Explain;
use super::{LogError, OpOrigin, Verdict, RETURN_NEVER};

/// The largest log line accepted, in bytes.
pub const LINE_BYTES_MAX: usize = 64 * 1024;

/// One operation on one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvOp {
    /// The key.
    pub key: String,
    /// What happened.
    pub action: KvAction,
    /// True when the outcome is unknown (only shown in descriptions: the
    /// model treats it like a completed put/append, its return time is +∞).
    pub unknown: bool,
}

/// What happened to a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvAction {
    /// A get that returned this string.
    Get(String),
    /// A put of this string.
    Put(String),
    /// An append of this string.
    Append(String),
}

/// The string key/value model (see the module docs).
#[derive(Clone, Copy, Debug)]
pub struct KvModel;

impl Model for KvModel {
    type State = String;
    type Op = KvOp;
    type Metadata = OpOrigin;

    fn partition_operations(history: &[Operation<Self>]) -> Vec<Vec<Operation<Self>>> {
        let mut by_key: BTreeMap<&str, Vec<Operation<Self>>> = BTreeMap::new();
        for op in history {
            by_key.entry(&op.op.key).or_default().push(op.clone());
        }
        by_key.into_values().collect()
    }

    fn init() -> String {
        String::new()
    }

    fn step(state: &String, op: &KvOp) -> (bool, String) {
        match &op.action {
            KvAction::Get(value) => (value == state, state.clone()),
            KvAction::Put(value) => (true, value.clone()),
            KvAction::Append(value) => (true, format!("{state}{value}")),
        }
    }

    fn describe_operation(op: &KvOp) -> String {
        let described = match &op.action {
            KvAction::Get(value) => format!("get({:?}) → {value:?}", op.key),
            KvAction::Put(value) => format!("put({:?}, {value:?})", op.key),
            KvAction::Append(value) => format!("append({:?}, {value:?})", op.key),
        };
        if op.unknown {
            format!("{described} → unknown")
        } else {
            described
        }
    }

    fn describe_state(state: &String) -> String {
        format!("{state:?}")
    }

    fn describe_metadata(info: Option<&OpOrigin>) -> String {
        info.map_or_else(String::new, OpOrigin::to_string)
    }
}

impl Explain for KvModel {
    fn partition_key(op: &KvOp) -> String {
        op.key.clone()
    }

    fn rejection(state: &String, op: &KvOp) -> Option<String> {
        match &op.action {
            KvAction::Get(value) if value != state => Some(format!("it returned {value:?} but the key held {state:?}")),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum F {
    Get,
    Put,
    Append,
}

struct Pending {
    f: F,
    key: String,
    value: Option<String>,
    line: usize,
}

/// Reads a Porcupine kv log and returns its operations, in invoke order.
pub fn load<R: BufRead>(input: R) -> Result<Vec<Operation<KvModel>>, LogError> {
    let mut ops: Vec<(usize, Operation<KvModel>)> = Vec::new();
    let mut pending: BTreeMap<u64, Pending> = BTreeMap::new();
    let mut line = 0usize;

    for text in input.lines() {
        let text = text?;
        line += 1;
        if text.trim().is_empty() {
            continue;
        }
        if text.len() > LINE_BYTES_MAX {
            return Err(malformed(line, format!("longer than {LINE_BYTES_MAX} bytes")));
        }
        let map = edn::parse_map(&text).map_err(|m| malformed(line, m))?;
        let field = |name: &str| map.get(name).ok_or_else(|| malformed(line, format!("missing :{name}")));
        let process = match field("process")? {
            EdnValue::Int(p) => u64::try_from(*p).map_err(|_| malformed(line, format!("negative :process {p}")))?,
            other => return Err(malformed(line, format!(":process {other:?} is not an integer"))),
        };
        let kind = keyword(field("type")?).map_err(|m| malformed(line, m))?;
        let f = match keyword(field("f")?).map_err(|m| malformed(line, m))? {
            "get" => F::Get,
            "put" => F::Put,
            "append" => F::Append,
            other => return Err(malformed(line, format!("unknown :f :{other}"))),
        };
        let key = match field("key")? {
            EdnValue::Str(k) => k.clone(),
            other => return Err(malformed(line, format!(":key {other:?} is not a string"))),
        };
        let value = match field("value")? {
            EdnValue::Str(v) => Some(v.clone()),
            EdnValue::Nil => None,
            other => return Err(malformed(line, format!(":value {other:?} is not a string or nil"))),
        };

        match kind {
            "invoke" => {
                if f != F::Get && value.is_none() {
                    return Err(malformed(line, format!("invoke of {f:?} without a value")));
                }
                let call = Pending { f, key, value, line };
                if let Some(previous) = pending.insert(process, call) {
                    return Err(malformed(
                        line,
                        format!("process {process} invokes while its invoke on line {} is outstanding", previous.line),
                    ));
                }
            }
            "ok" | "fail" | "info" => {
                let Some(call) = pending.remove(&process) else {
                    return Err(malformed(
                        line,
                        format!("completion on process {process} without an outstanding invoke"),
                    ));
                };
                if call.f != f || call.key != key {
                    return Err(malformed(
                        line,
                        format!(
                            "{f:?} of key {key:?} completes the {:?} of key {:?} invoked on line {}",
                            call.f, call.key, call.line
                        ),
                    ));
                }
                match kind {
                    "ok" => {
                        let action = match f {
                            F::Get => KvAction::Get(value.unwrap_or_default()),
                            F::Put => KvAction::Put(call.value.clone().unwrap_or_default()),
                            F::Append => KvAction::Append(call.value.clone().unwrap_or_default()),
                        };
                        ops.push((call.line, operation(process, &call, action, false, time(line)?)?));
                    }
                    "info" => {
                        if let Some(op) = unknown_operation(process, &call)? {
                            ops.push((call.line, op));
                        }
                    }
                    _ => {} // fail: did not happen
                }
            }
            other => return Err(malformed(line, format!("unknown :type :{other}"))),
        }
    }

    for (process, call) in &pending {
        if let Some(op) = unknown_operation(*process, call)? {
            ops.push((call.line, op));
        }
    }
    ops.sort_by_key(|(line, _)| *line);
    Ok(ops.into_iter().map(|(_, op)| op).collect())
}

/// Checks the operations of a kv log within `budget`.
pub fn check(history: &[Operation<KvModel>], budget: Duration) -> Verdict {
    super::check_operations(history, budget)
}

fn malformed(line: usize, message: String) -> LogError {
    LogError::Malformed { line, message }
}

fn keyword(value: &EdnValue) -> Result<&str, String> {
    match value {
        EdnValue::Keyword(k) => Ok(k),
        other => Err(format!("{other:?} is not a keyword")),
    }
}

fn time(line: usize) -> Result<i64, LogError> {
    i64::try_from(line).map_err(|_| malformed(line, "too many lines".into()))
}

fn unknown_operation(process: u64, call: &Pending) -> Result<Option<Operation<KvModel>>, LogError> {
    let value = call.value.clone().unwrap_or_default();
    let action = match call.f {
        F::Get => return Ok(None), // constrains nothing
        F::Put => KvAction::Put(value),
        F::Append => KvAction::Append(value),
    };
    operation(process, call, action, true, RETURN_NEVER).map(Some)
}

fn operation(
    process: u64,
    call: &Pending,
    action: KvAction,
    unknown: bool,
    return_time: i64,
) -> Result<Operation<KvModel>, LogError> {
    Ok(Operation {
        client_id: u32::try_from(process).ok(),
        call_time: time(call.line)?,
        return_time,
        op: KvOp { key: call.key.clone(), action, unknown },
        metadata: Some(OpOrigin { process, line: call.line }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves: invokes pair with the next :ok of their process, a get's nil
    // reads as "", and an invoke without :ok is an unknown-outcome put/append
    // (a get without :ok is dropped).
    #[test]
    fn loads_and_pairs() {
        let text = r#"{:process 0, :type :invoke, :f :put, :key "a", :value "x"}
{:process 1, :type :invoke, :f :get, :key "a", :value nil}
{:process 0, :type :ok, :f :put, :key "a", :value "x"}
{:process 1, :type :ok, :f :get, :key "a", :value nil}
{:process 2, :type :invoke, :f :append, :key "b", :value "y"}
{:process 3, :type :invoke, :f :get, :key "b", :value nil}
"#;
        let ops = load(text.as_bytes()).unwrap();
        let got: Vec<(KvAction, bool, i64, i64)> =
            ops.iter().map(|o| (o.op.action.clone(), o.op.unknown, o.call_time, o.return_time)).collect();
        assert_eq!(
            got,
            vec![
                (KvAction::Put("x".into()), false, 1, 3),
                (KvAction::Get(String::new()), false, 2, 4),
                (KvAction::Append("y".into()), true, 5, RETURN_NEVER),
            ]
        );
    }

    // Proves: a concurrent get may see a put; a get after an append must see
    // the concatenation; a stale get after the append returned is a violation.
    #[test]
    fn model_verdicts() {
        let budget = Duration::from_secs(10);
        let ok = r#"{:process 0, :type :invoke, :f :append, :key "k", :value "a"}
{:process 0, :type :ok, :f :append, :key "k", :value "a"}
{:process 0, :type :invoke, :f :append, :key "k", :value "b"}
{:process 1, :type :invoke, :f :get, :key "k", :value nil}
{:process 1, :type :ok, :f :get, :key "k", :value "ab"}
{:process 0, :type :ok, :f :append, :key "k", :value "b"}
"#;
        let verdict = check(&load(ok.as_bytes()).unwrap(), budget);
        assert_eq!(verdict.result, super::super::Outcome::Linearizable);

        let bad = r#"{:process 0, :type :invoke, :f :append, :key "k", :value "a"}
{:process 0, :type :ok, :f :append, :key "k", :value "a"}
{:process 1, :type :invoke, :f :get, :key "k", :value nil}
{:process 1, :type :ok, :f :get, :key "k", :value ""}
"#;
        let verdict = check(&load(bad.as_bytes()).unwrap(), budget);
        assert_eq!(verdict.result, super::super::Outcome::NotLinearizable);
        let explanation = verdict.explanation.unwrap();
        assert_eq!(explanation.keys.len(), 1);
        assert_eq!(explanation.keys[0].key, "k");
        assert_eq!(explanation.keys[0].prefix.len(), 1);
        assert_eq!(explanation.keys[0].stuck.len(), 1);
    }

    // Proves: malformed lines are errors naming their line.
    #[test]
    fn malformed_lines_are_errors() {
        let good = r#"{:process 0, :type :invoke, :f :get, :key "a", :value nil}"#;
        for bad in [
            r#"{:process 1, :type :invoke, :f :scan, :key "a", :value nil}"#,
            r#"{:process 1, :type :invoke, :f :put, :key "a", :value nil}"#,
            r#"{:process 1, :type :ok, :f :get, :key "a", :value "x"}"#,
            r#"{:process 0, :type :invoke, :f :get, :key "a", :value nil}"#,
            r#"{:process 1, :type :invoke, :f :get, :value nil}"#,
            r#"{:process 1 :type :invoke"#,
        ] {
            let text = format!("{good}\n{bad}\n");
            match load(text.as_bytes()) {
                Err(LogError::Malformed { line: 2, .. }) => {}
                other => panic!("{bad:?}: expected malformed line 2, got {other:?}"),
            }
        }
    }
}
