//! Hand-written capkv histories (`history.jsonl`) with known answers, checked
//! end to end: events are written with `HistoryWriter`, read back, paired and
//! checked against the per-key register model. Each test states the
//! behaviour it pins down; each "not linearizable" case has a sibling that
//! differs in one detail and is linearizable, so a checker that answers the
//! same for everything fails.

use std::time::Duration;

use capkv_jepsen::checker::{kv, Outcome, Verdict};
use capkv_jepsen::history::{Event, EventType, HistoryWriter, OpKind, Value};

const BUDGET: Duration = Duration::from_secs(10);

/// One event: (process, type, f, key, value, time_ns), error none.
fn ev(process: u64, kind: EventType, f: OpKind, key: &str, value: Value, time_ns: u64) -> Event {
    Event { process, kind, f, key: key.to_string(), value, time_ns, error: None }
}

/// A whole operation as two events: the invoke with value `invoke` at
/// `span.0`, the completion `done.0` with value `done.1` at `span.1`.
fn op(process: u64, f: OpKind, key: &str, invoke: Value, done: (EventType, Value), span: (u64, u64)) -> [Event; 2] {
    [ev(process, EventType::Invoke, f, key, invoke, span.0), ev(process, done.0, f, key, done.1, span.1)]
}

fn write_ok(p: u64, key: &str, v: i64, start: u64, end: u64) -> [Event; 2] {
    op(p, OpKind::Write, key, Value::Int(v), (EventType::Ok, Value::Int(v)), (start, end))
}

fn read_ok(p: u64, key: &str, v: Option<i64>, start: u64, end: u64) -> [Event; 2] {
    let result = v.map_or(Value::Null, Value::Int);
    op(p, OpKind::Read, key, Value::Null, (EventType::Ok, result), (start, end))
}

fn cas(p: u64, key: &str, expected: i64, new: i64, done: EventType, start: u64, end: u64) -> [Event; 2] {
    let v = Value::Cas { expected, new };
    op(p, OpKind::Cas, key, v, (done, v), (start, end))
}

/// Writes the events as a history.jsonl, reads it back and checks it.
fn check(events: &[Event]) -> Verdict {
    let mut writer = HistoryWriter::new(Vec::new());
    for e in events {
        writer.append(e).expect("valid event");
    }
    let bytes = writer.into_inner();
    let ops = kv::load(&bytes[..]).expect("well-formed history");
    kv::check(&ops, BUDGET)
}

fn sorted(mut events: Vec<Event>) -> Vec<Event> {
    events.sort_by_key(|e| e.time_ns);
    events
}

// Proves: sequential write-then-read of the written value is linearizable,
// and an empty history is too.
#[test]
fn write_then_read_is_linearizable() {
    let h = [write_ok(0, "k", 1, 0, 10), read_ok(1, "k", Some(1), 20, 30)].concat();
    let v = check(&h);
    assert_eq!(v.result, Outcome::Linearizable);
    assert_eq!(v.ops, 2);
    assert!(v.explanation.is_none());
    assert_eq!(check(&[]).result, Outcome::Linearizable);
}

// Proves: a stale read — a read after a newer acknowledged write returned,
// seeing the older value — is a violation, explained on its key with the
// read as the stuck operation. A read concurrent with the newer write may
// see the old value.
#[test]
fn stale_read_is_a_violation() {
    let h = [write_ok(0, "k", 1, 0, 10), write_ok(0, "k", 2, 20, 30), read_ok(1, "k", Some(1), 40, 50)].concat();
    let v = check(&h);
    assert_eq!(v.result, Outcome::NotLinearizable);
    let e = v.explanation.expect("explained");
    assert_eq!(e.keys.len(), 1);
    let key = &e.keys[0];
    assert_eq!(key.key, "k");
    assert_eq!(key.ops, 3);
    assert_eq!(key.prefix.len(), 2);
    assert_eq!(key.prefix[1].state_after, "2");
    assert_eq!(key.stuck.len(), 1);
    assert_eq!(key.stuck[0].op, "read() → 1");
    assert_eq!(key.stuck[0].origin, "process 1, line 5");
    assert!(key.stuck[0].reason.contains("held 2"), "{}", key.stuck[0].reason);
    let text = e.to_string();
    assert!(text.contains("key \"k\""), "{text}");

    let concurrent =
        sorted([write_ok(0, "k", 1, 0, 10), write_ok(0, "k", 2, 20, 50), read_ok(1, "k", Some(1), 40, 60)].concat());
    assert_eq!(check(&concurrent).result, Outcome::Linearizable);
}

// Proves: a lost write — an acknowledged write that a later read does not
// see (the key reads as absent) — is a violation.
#[test]
fn lost_write_is_a_violation() {
    let lost = [write_ok(0, "k", 1, 0, 10), read_ok(1, "k", None, 20, 30)].concat();
    assert_eq!(check(&lost).result, Outcome::NotLinearizable);

    let before = [read_ok(1, "k", None, 0, 10), write_ok(0, "k", 1, 20, 30)].concat();
    assert_eq!(check(&before).result, Outcome::Linearizable);
}

// Proves: a cas that reports success although the key held another value
// than `expected` is a violation; with the right value it is linearizable.
#[test]
fn cas_ok_on_a_different_value_is_a_violation() {
    let bad = [write_ok(0, "k", 1, 0, 10), cas(1, "k", 2, 3, EventType::Ok, 20, 30)].concat();
    let v = check(&bad);
    assert_eq!(v.result, Outcome::NotLinearizable);
    let stuck = &v.explanation.unwrap().keys[0].stuck;
    assert!(stuck[0].reason.contains("swapped from 2"), "{}", stuck[0].reason);

    let good = [write_ok(0, "k", 1, 0, 10), cas(1, "k", 1, 3, EventType::Ok, 20, 30), read_ok(2, "k", Some(3), 40, 50)]
        .concat();
    assert_eq!(check(&good).result, Outcome::Linearizable);
}

// Proves: a write with unknown outcome (`info`) may take effect after its
// `info` was recorded — here after a later write and a read of it — so its
// return time is +infinity, not the time of the `info`. Without the unknown
// write, the final read is a violation.
#[test]
fn unknown_write_may_take_effect_late() {
    let late = [
        op(0, OpKind::Write, "k", Value::Int(1), (EventType::Info, Value::Int(1)), (0, 10)).to_vec(),
        write_ok(1, "k", 2, 20, 30).to_vec(),
        read_ok(2, "k", Some(2), 40, 50).to_vec(),
        read_ok(2, "k", Some(1), 60, 70).to_vec(),
    ]
    .concat();
    assert_eq!(check(&late).result, Outcome::Linearizable);

    let without =
        [write_ok(1, "k", 2, 20, 30), read_ok(2, "k", Some(2), 40, 50), read_ok(2, "k", Some(1), 60, 70)].concat();
    assert_eq!(check(&without).result, Outcome::NotLinearizable);

    // Had the write been acknowledged at 10, it could not follow the write
    // of 2 (which started at 20): a violation.
    let acknowledged = [
        write_ok(0, "k", 1, 0, 10),
        write_ok(1, "k", 2, 20, 30),
        read_ok(2, "k", Some(2), 40, 50),
        read_ok(2, "k", Some(1), 60, 70),
    ]
    .concat();
    assert_eq!(check(&acknowledged).result, Outcome::NotLinearizable);
}

// Proves: a write with unknown outcome may never take effect, whether it
// ended with `info` or has no completion at all; an acknowledged one may not.
#[test]
fn unknown_write_may_never_take_effect() {
    let info = [
        op(0, OpKind::Write, "k", Value::Int(1), (EventType::Info, Value::Int(1)), (0, 10)).to_vec(),
        read_ok(1, "k", None, 100, 110).to_vec(),
        read_ok(1, "k", None, 200, 210).to_vec(),
    ]
    .concat();
    assert_eq!(check(&info).result, Outcome::Linearizable);

    let no_completion = vec![
        ev(0, EventType::Invoke, OpKind::Write, "k", Value::Int(1), 0),
        read_ok(1, "k", None, 100, 110)[0].clone(),
        read_ok(1, "k", None, 100, 110)[1].clone(),
    ];
    let v = check(&no_completion);
    assert_eq!(v.result, Outcome::Linearizable);
    assert_eq!(v.ops, 2);

    let acknowledged = [write_ok(0, "k", 1, 0, 10), read_ok(1, "k", None, 100, 110)].concat();
    assert_eq!(check(&acknowledged).result, Outcome::NotLinearizable);
}

// Proves: a cas `fail` without `error` means "the compare failed", which
// constrains the search: it is a violation when the key certainly held
// `expected`, and linearizable when it held something else.
#[test]
fn cas_compare_failure_constrains() {
    let held_expected = [write_ok(0, "k", 1, 0, 10), cas(1, "k", 1, 2, EventType::Fail, 20, 30)].concat();
    let v = check(&held_expected);
    assert_eq!(v.result, Outcome::NotLinearizable);
    let stuck = &v.explanation.unwrap().keys[0].stuck;
    assert!(stuck[0].reason.contains("failed compare"), "{}", stuck[0].reason);

    let held_other = [write_ok(0, "k", 1, 0, 10), cas(1, "k", 5, 2, EventType::Fail, 20, 30)].concat();
    assert_eq!(check(&held_other).result, Outcome::Linearizable);
}

// Proves: a cas with unknown outcome may swap once (if the key held
// `expected`), but cannot make the value go back.
#[test]
fn unknown_cas_may_swap_once() {
    let swapped =
        [write_ok(0, "k", 1, 0, 10), cas(1, "k", 1, 2, EventType::Info, 20, 30), read_ok(2, "k", Some(2), 40, 50)]
            .concat();
    assert_eq!(check(&swapped).result, Outcome::Linearizable);

    let not_held =
        [write_ok(0, "k", 3, 0, 10), cas(1, "k", 1, 2, EventType::Info, 20, 30), read_ok(2, "k", Some(2), 40, 50)]
            .concat();
    assert_eq!(check(&not_held).result, Outcome::NotLinearizable);

    let back = [swapped.clone(), read_ok(2, "k", Some(1), 60, 70).to_vec()].concat();
    assert_eq!(check(&back).result, Outcome::NotLinearizable);
}

// Proves: a `fail` carrying an `error` is dropped (it definitely did not
// happen and constrains nothing): for a write, and for a cas, where the same
// `fail` without `error` is a violation.
#[test]
fn fail_with_error_is_dropped() {
    let mut failed_write = op(1, OpKind::Write, "k", Value::Int(2), (EventType::Fail, Value::Int(2)), (20, 30));
    failed_write[1].error = Some("UNAVAILABLE: no quorum".into());
    let h = [write_ok(0, "k", 1, 0, 10).to_vec(), failed_write.to_vec(), read_ok(2, "k", Some(1), 40, 50).to_vec()]
        .concat();
    let v = check(&h);
    assert_eq!(v.result, Outcome::Linearizable);
    assert_eq!(v.ops, 2, "the failed write is not checked");

    let mut failed_cas = cas(1, "k", 1, 2, EventType::Fail, 20, 30);
    failed_cas[1].error = Some("UNAVAILABLE: not sent".into());
    let with_error = [write_ok(0, "k", 1, 0, 10).to_vec(), failed_cas.to_vec()].concat();
    assert_eq!(check(&with_error).result, Outcome::Linearizable);
}

// Proves: keys are checked independently and only the offending key is
// explained.
#[test]
fn only_the_offending_key_is_explained() {
    let h = sorted(
        [
            write_ok(0, "a", 1, 0, 10),
            read_ok(1, "a", Some(1), 20, 30),
            write_ok(2, "b", 1, 0, 10),
            read_ok(3, "b", Some(7), 20, 30),
        ]
        .concat(),
    );
    let v = check(&h);
    assert_eq!(v.result, Outcome::NotLinearizable);
    let keys: Vec<&str> = v.explanation.as_ref().unwrap().keys.iter().map(|k| k.key.as_str()).collect();
    assert_eq!(keys, ["b"]);
}

// Proves: a search that cannot finish within its budget answers Unknown
// (never a guess) and stops near the budget. 40 concurrent writes with
// unknown outcome and reads 1, 2, …, 40 afterwards is linearizable but needs
// ~2^40 search steps.
#[test]
fn exceeded_budget_is_unknown() {
    let n = 40u64;
    let mut h = Vec::new();
    for i in 0..n {
        h.push(ev(i, EventType::Invoke, OpKind::Write, "k", Value::Int(i as i64 + 1), i));
    }
    for i in 0..n {
        h.extend(read_ok(1_000, "k", Some(i as i64 + 1), 1_000 + 2 * i, 1_001 + 2 * i));
    }
    let ops = kv::from_events(&h).unwrap();
    let budget = Duration::from_millis(300);
    let v = kv::check(&ops, budget);
    assert_eq!(v.result, Outcome::Unknown);
    assert!(v.explanation.is_none());
    assert!(v.elapsed >= budget);
    assert!(v.elapsed < budget + Duration::from_secs(5), "{:?}", v.elapsed);
}

// Proves: the HTML visualization of a violation is written and names the
// operations.
#[test]
fn writes_the_html_visualization() {
    let h = [write_ok(0, "k", 1, 0, 10), read_ok(1, "k", None, 20, 30)].concat();
    let v = check(&h);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stale.html");
    v.write_html(&path).unwrap();
    let html = std::fs::read_to_string(&path).unwrap();
    assert!(html.contains("<html"), "not an HTML page");
    assert!(html.contains("write(1)"), "operation missing from the page");
    assert!(v.write_html(&dir.path().join("missing/dir/x.html")).is_err());
}
