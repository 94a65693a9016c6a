//! A brute-force linearizability checker for ONE register (one key), for the
//! quorum tests and the joined quorum + consensus simulation
//! (`levels::join_sim`), whose histories also hold compare-and-set.
//!
//! Why it exists: the quorum level promises linearizability per key, and
//! the simulated schedules must be checked against that promise, not
//! against what the implementation happens to do.
//!
//! What it decides: whether some total order of the operations (1) respects
//! real time — an operation that returned before another was invoked comes
//! first — and (2) is a legal register history: each read returns the value
//! of the latest write before it, or the initial value (absent); a CAS that
//! swapped found its expected value and left its new one; a CAS that did
//! not swap found a value other than its expected one, and that value is
//! what it answered.
//!
//! Outcomes: an `Ok` operation took effect once between its invocation and
//! its return. An `Unknown` write (indeterminate or crashed) took effect at
//! some point after its invocation, or never; an `Unknown` CAS likewise
//! (taking effect at a point where the expected value is not there changes
//! nothing, as never taking effect would). Failed operations and reads
//! without an answer never took effect; the caller leaves them out.
//!
//! Method: depth-first search in the style of Wing & Gong (1993) with the
//! state cache of Lowe (2017) ("WGL"): repeatedly pick the next operation to
//! linearize among those invoked before the earliest pending return, and
//! memoize (set of linearized operations, register value) pairs that were
//! already explored. Fine for a few dozen operations per key.

use std::collections::HashSet;

/// A register value: `None` is absent (never written, or deleted).
pub type Value = Option<u64>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegOp {
    /// A read that returned this value.
    Read(Value),
    /// A write of this value (`None` = delete).
    Write(Value),
    /// A compare-and-set that swapped: found `expected`, left `Some(new)`.
    CasSwapped { expected: Value, new: u64 },
    /// A compare-and-set that did not swap: found `found`, which differs
    /// from `expected`, and left it.
    CasFailed { expected: Value, found: Value },
    /// A compare-and-set whose outcome is unknown (only with `ret: None`):
    /// if it took effect where `expected` was the value, it left `Some(new)`.
    CasUnknown { expected: Value, new: u64 },
}

impl RegOp {
    /// Whether an operation of this kind can be left unanswered and still
    /// have taken effect (an indeterminate write or CAS).
    fn may_be_unknown(&self) -> bool {
        matches!(self, RegOp::Write(_) | RegOp::CasUnknown { .. })
    }

    /// The register's value after this operation applied to `value`, or
    /// `None` if it cannot take effect there (its answer contradicts it).
    fn apply(&self, value: Value) -> Option<Value> {
        match *self {
            RegOp::Read(v) => (v == value).then_some(value),
            RegOp::Write(v) => Some(v),
            RegOp::CasSwapped { expected, new } => (value == expected).then_some(Some(new)),
            RegOp::CasFailed { expected, found } => (value == found && value != expected).then_some(value),
            RegOp::CasUnknown { expected, new } => Some(if value == expected { Some(new) } else { value }),
        }
    }
}

/// One operation of a history. Times are totally ordered event stamps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub op: RegOp,
    pub invoke: u64,
    /// `None`: the outcome is unknown (only for writes): it may take effect
    /// at any time after `invoke`, or never.
    pub ret: Option<u64>,
}

impl Entry {
    pub fn ok(op: RegOp, invoke: u64, ret: u64) -> Entry {
        assert!(invoke < ret, "an operation returns after its invocation");
        Entry { op, invoke, ret: Some(ret) }
    }

    pub fn unknown_write(value: Value, invoke: u64) -> Entry {
        Entry { op: RegOp::Write(value), invoke, ret: None }
    }

    pub fn unknown_cas(expected: Value, new: u64, invoke: u64) -> Entry {
        Entry { op: RegOp::CasUnknown { expected, new }, invoke, ret: None }
    }
}

/// The largest history this checker accepts (its set of linearized
/// operations is a bit mask).
pub const MAX_OPS: usize = 64;

/// `Ok(())` if the history of one register, starting absent, is
/// linearizable; otherwise a description of why not.
pub fn check(entries: &[Entry]) -> Result<(), String> {
    assert!(entries.len() <= MAX_OPS, "{} operations: the checker handles at most {MAX_OPS}", entries.len());
    for e in entries {
        assert!(
            e.ret.is_some() || e.op.may_be_unknown(),
            "a read or decided CAS without an answer has no effect; leave it out"
        );
        assert!(
            e.ret.is_none() || !matches!(e.op, RegOp::CasUnknown { .. }),
            "a CAS that returned has a known outcome"
        );
    }
    let required: u64 = entries.iter().enumerate().filter(|(_, e)| e.ret.is_some()).fold(0, |m, (i, _)| m | (1 << i));
    let mut search = Search { entries, required, explored: HashSet::new() };
    if search.extend(0, None) {
        Ok(())
    } else {
        Err(format!(
            "not linearizable ({} operations, {} states explored): {}",
            entries.len(),
            search.explored.len(),
            describe(entries)
        ))
    }
}

struct Search<'a> {
    entries: &'a [Entry],
    /// Operations that must be linearized (those that returned).
    required: u64,
    /// (linearized set, value) pairs from which no linearization exists.
    explored: HashSet<(u64, Value)>,
}

impl Search<'_> {
    /// Whether the operations not in `done` can be linearized after the
    /// ones in `done`, which left the register at `value`.
    fn extend(&mut self, done: u64, value: Value) -> bool {
        if done & self.required == self.required {
            // Unknown writes not linearized yet may never take effect.
            return true;
        }
        if !self.explored.insert((done, value)) {
            return false;
        }
        let pending = |i: usize| done & (1 << i) == 0;
        // The earliest return among pending operations: whatever comes next
        // must have been invoked before it.
        let horizon = (0..self.entries.len()).filter(|&i| pending(i)).filter_map(|i| self.entries[i].ret).min();
        for i in 0..self.entries.len() {
            let e = self.entries[i];
            if !pending(i) || horizon.is_some_and(|h| e.invoke > h) {
                continue;
            }
            let Some(next) = e.op.apply(value) else { continue };
            if self.extend(done | (1 << i), next) {
                return true;
            }
        }
        false
    }
}

fn describe(entries: &[Entry]) -> String {
    let mut sorted: Vec<&Entry> = entries.iter().collect();
    sorted.sort_by_key(|e| e.invoke);
    sorted
        .iter()
        .map(|e| {
            let op = match e.op {
                RegOp::Read(v) => format!("read->{}", show(v)),
                RegOp::Write(v) => format!("write({})", show(v)),
                RegOp::CasSwapped { expected, new } => format!("cas({}->{new})->swapped", show(expected)),
                RegOp::CasFailed { expected, found } => format!("cas({}->_)->found {}", show(expected), show(found)),
                RegOp::CasUnknown { expected, new } => format!("cas({}->{new})", show(expected)),
            };
            match e.ret {
                Some(r) => format!("{op}@[{},{r}]", e.invoke),
                None => format!("{op}@[{},?]", e.invoke),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn show(v: Value) -> String {
    v.map_or_else(|| "absent".to_string(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    //! Sanity of the checker itself (Herlihy & Wing 1990, definition of
    //! linearizability): it must reject known non-linearizable histories and
    //! accept linearizable ones, or the schedule tests prove nothing.
    use super::*;
    use RegOp::{CasFailed, CasSwapped, Read, Write};

    #[test]
    fn accepts_a_sequential_history() {
        let h = [Entry::ok(Read(None), 1, 2), Entry::ok(Write(Some(1)), 3, 4), Entry::ok(Read(Some(1)), 5, 6)];
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn rejects_a_stale_read_after_a_completed_write() {
        let h = [Entry::ok(Write(Some(1)), 1, 2), Entry::ok(Read(None), 3, 4)];
        assert!(check(&h).is_err());
    }

    #[test]
    fn rejects_the_new_old_inversion() {
        // A write concurrent with two reads: the first read sees the new
        // value, a later read (invoked after the first returned) the old
        // one. Each read alone is fine; together they are not.
        let h = [Entry::ok(Write(Some(1)), 1, 100), Entry::ok(Read(Some(1)), 10, 20), Entry::ok(Read(None), 30, 40)];
        let err = check(&h).unwrap_err();
        assert!(err.contains("not linearizable"), "{err}");
        // The same with the write's outcome unknown.
        let h = [Entry::unknown_write(Some(1), 1), Entry::ok(Read(Some(1)), 10, 20), Entry::ok(Read(None), 30, 40)];
        assert!(check(&h).is_err());
    }

    #[test]
    fn accepts_reads_concurrent_with_a_write_in_either_order_if_old_first() {
        let h = [Entry::ok(Write(Some(1)), 1, 100), Entry::ok(Read(None), 10, 20), Entry::ok(Read(Some(1)), 30, 40)];
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn an_unknown_write_may_take_effect_late_or_never() {
        let late =
            [Entry::unknown_write(Some(7), 1), Entry::ok(Read(None), 10, 20), Entry::ok(Read(Some(7)), 500, 600)];
        assert_eq!(check(&late), Ok(()));
        let never = [Entry::unknown_write(Some(7), 1), Entry::ok(Read(None), 500, 600)];
        assert_eq!(check(&never), Ok(()));
        let before_invocation = [Entry::ok(Read(Some(7)), 1, 2), Entry::unknown_write(Some(7), 5)];
        assert!(check(&before_invocation).is_err(), "a write cannot be read before it was invoked");
    }

    #[test]
    fn rejects_a_lost_acknowledged_write() {
        // Two acknowledged writes in real-time order; a later read must
        // return the second one.
        let h = [Entry::ok(Write(Some(1)), 1, 2), Entry::ok(Write(Some(2)), 3, 4), Entry::ok(Read(Some(1)), 5, 6)];
        assert!(check(&h).is_err());
    }

    #[test]
    fn accepts_concurrent_writes_in_either_order() {
        let h = [
            Entry::ok(Write(Some(1)), 1, 10),
            Entry::ok(Write(Some(2)), 2, 11),
            Entry::ok(Read(Some(1)), 12, 13),
            Entry::ok(Read(Some(1)), 14, 15),
        ];
        assert_eq!(check(&h), Ok(()));
        let flip = [
            Entry::ok(Write(Some(1)), 1, 10),
            Entry::ok(Write(Some(2)), 2, 11),
            Entry::ok(Read(Some(1)), 12, 13),
            Entry::ok(Read(Some(2)), 14, 15),
        ];
        assert!(check(&flip).is_err(), "after both writes returned the value cannot change without a write");
    }

    #[test]
    fn a_cas_swaps_only_from_its_expected_value() {
        let ok = [
            Entry::ok(Write(Some(1)), 1, 2),
            Entry::ok(CasSwapped { expected: Some(1), new: 2 }, 3, 4),
            Entry::ok(Read(Some(2)), 5, 6),
        ];
        assert_eq!(check(&ok), Ok(()));
        let wrong_base = [Entry::ok(Write(Some(1)), 1, 2), Entry::ok(CasSwapped { expected: Some(3), new: 2 }, 3, 4)];
        assert!(check(&wrong_base).is_err(), "a swap from a value that was never there");
        let from_absent = [Entry::ok(CasSwapped { expected: None, new: 2 }, 1, 2), Entry::ok(Read(Some(2)), 3, 4)];
        assert_eq!(check(&from_absent), Ok(()));
    }

    #[test]
    fn two_cas_from_the_same_value_cannot_both_swap() {
        // The defining property of CAS over a plain register (Herlihy 1991):
        // concurrent swaps from one value, at most one wins.
        let h = [
            Entry::ok(Write(Some(1)), 1, 2),
            Entry::ok(CasSwapped { expected: Some(1), new: 2 }, 3, 10),
            Entry::ok(CasSwapped { expected: Some(1), new: 3 }, 4, 11),
        ];
        assert!(check(&h).is_err());
        let one_fails = [
            Entry::ok(Write(Some(1)), 1, 2),
            Entry::ok(CasSwapped { expected: Some(1), new: 2 }, 3, 10),
            Entry::ok(CasFailed { expected: Some(1), found: Some(2) }, 4, 11),
        ];
        assert_eq!(check(&one_fails), Ok(()));
    }

    #[test]
    fn a_failed_cas_is_a_read_of_what_it_found() {
        let h = [Entry::ok(Write(Some(1)), 1, 2), Entry::ok(CasFailed { expected: Some(5), found: Some(1) }, 3, 4)];
        assert_eq!(check(&h), Ok(()));
        let stale = [Entry::ok(Write(Some(1)), 1, 2), Entry::ok(CasFailed { expected: Some(5), found: None }, 3, 4)];
        assert!(check(&stale).is_err(), "it found a value overwritten before it began");
        let found_expected =
            [Entry::ok(Write(Some(1)), 1, 2), Entry::ok(CasFailed { expected: Some(1), found: Some(1) }, 3, 4)];
        assert!(check(&found_expected).is_err(), "finding the expected value means swapping");
    }

    #[test]
    fn an_unknown_cas_may_take_effect_or_not() {
        let took =
            [Entry::ok(Write(Some(1)), 1, 2), Entry::unknown_cas(Some(1), 9, 3), Entry::ok(Read(Some(9)), 10, 11)];
        assert_eq!(check(&took), Ok(()));
        let did_not =
            [Entry::ok(Write(Some(1)), 1, 2), Entry::unknown_cas(Some(1), 9, 3), Entry::ok(Read(Some(1)), 10, 11)];
        assert_eq!(check(&did_not), Ok(()));
        let from_elsewhere =
            [Entry::ok(Write(Some(1)), 1, 2), Entry::unknown_cas(Some(5), 9, 3), Entry::ok(Read(Some(9)), 10, 11)];
        assert!(check(&from_elsewhere).is_err(), "it cannot swap from a value that was not there");
    }

    #[test]
    fn deletes_are_writes_of_absent() {
        let h = [Entry::ok(Write(Some(1)), 1, 2), Entry::ok(Write(None), 3, 4), Entry::ok(Read(None), 5, 6)];
        assert_eq!(check(&h), Ok(()));
        let resurrected =
            [Entry::ok(Write(Some(1)), 1, 2), Entry::ok(Write(None), 3, 4), Entry::ok(Read(Some(1)), 5, 6)];
        assert!(check(&resurrected).is_err());
    }
}
