//! The sequential specification of a capkv key: an integer register with
//! read, write and compare-and-set, one independent register per key.
//!
//! It promises a porcupine-rs [`Model`] whose state is the key's value
//! (`None` = absent, the initial state) and whose operations carry what the
//! client *observed*, including outcomes the client does not know:
//!
//! | op | accepted when | next state |
//! |----|---------------|------------|
//! | read → v (ok)                     | state == v            | unchanged |
//! | write v (ok, or unknown outcome)  | always                | v |
//! | cas e→n ok (swapped)              | state == e            | n |
//! | cas e→n failed (compare failed)   | state != e            | unchanged |
//! | cas e→n unknown outcome           | always                | n if state == e, else unchanged |
//!
//! An operation with unknown outcome is given return time +infinity by its
//! loader (Porcupine's trick): it may be linearized anywhere after its call,
//! including after every other operation, where its effect no longer matters
//! — which is how "it never happened" is allowed.
//!
//! Reads with unknown outcome and operations that definitely did not happen
//! constrain nothing; loaders drop them instead of modelling them.
//!
//! History is split per key ([`Model::partition_operations`]), because keys
//! are independent registers (linearizability is compositional), which keeps
//! each search small. It is shared by the capkv `history.jsonl` checker and
//! the Jepsen etcd log loader, whose single register is one key.

use std::collections::BTreeMap;

use porcupine_rs::{Model, Operation};

use super::explanation::Explain;
use super::OpOrigin;

/// What happened to one register operation, as far as the client knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RegisterAction {
    /// A read that returned this value (`None` = key absent).
    Read(Option<i64>),
    /// A write that took effect.
    Write(i64),
    /// A write whose outcome is unknown: it may take effect, or never.
    WriteUnknown(i64),
    /// A compare-and-set that swapped `expected` for `new`.
    CasOk {
        /// The value the register held.
        expected: i64,
        /// The value it holds afterwards.
        new: i64,
    },
    /// A compare-and-set that reported "the compare failed": no effect, and
    /// the register did not hold `expected` at its linearization point.
    CasFailed {
        /// The value the register did not hold.
        expected: i64,
        /// The value that was not written.
        new: i64,
    },
    /// A compare-and-set whose outcome is unknown.
    CasUnknown {
        /// The value the register must hold for it to swap.
        expected: i64,
        /// The value written if it swaps.
        new: i64,
    },
}

/// One operation on one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisterOp {
    /// The key (partition) it acts on.
    pub key: String,
    /// What happened.
    pub action: RegisterAction,
}

/// The per-key register model (see the module docs).
#[derive(Clone, Copy, Debug)]
pub struct RegisterModel;

fn describe_value(value: Option<i64>) -> String {
    value.map_or_else(|| "absent".to_string(), |v| v.to_string())
}

impl Model for RegisterModel {
    type State = Option<i64>;
    type Op = RegisterOp;
    type Metadata = OpOrigin;

    fn partition_operations(history: &[Operation<Self>]) -> Vec<Vec<Operation<Self>>> {
        let mut by_key: BTreeMap<&str, Vec<Operation<Self>>> = BTreeMap::new();
        for op in history {
            by_key.entry(&op.op.key).or_default().push(op.clone());
        }
        by_key.into_values().collect()
    }

    fn init() -> Option<i64> {
        None
    }

    fn step(state: &Option<i64>, op: &RegisterOp) -> (bool, Option<i64>) {
        match op.action {
            RegisterAction::Read(value) => (*state == value, *state),
            RegisterAction::Write(value) | RegisterAction::WriteUnknown(value) => (true, Some(value)),
            RegisterAction::CasOk { expected, new } => (*state == Some(expected), Some(new)),
            RegisterAction::CasFailed { expected, .. } => (*state != Some(expected), *state),
            RegisterAction::CasUnknown { expected, new } => {
                if *state == Some(expected) {
                    (true, Some(new))
                } else {
                    (true, *state)
                }
            }
        }
    }

    fn describe_operation(op: &RegisterOp) -> String {
        match op.action {
            RegisterAction::Read(value) => format!("read() → {}", describe_value(value)),
            RegisterAction::Write(value) => format!("write({value})"),
            RegisterAction::WriteUnknown(value) => format!("write({value}) → unknown"),
            RegisterAction::CasOk { expected, new } => format!("cas({expected}→{new}) → ok"),
            RegisterAction::CasFailed { expected, new } => {
                format!("cas({expected}→{new}) → compare failed")
            }
            RegisterAction::CasUnknown { expected, new } => {
                format!("cas({expected}→{new}) → unknown")
            }
        }
    }

    fn describe_state(state: &Option<i64>) -> String {
        describe_value(*state)
    }

    fn describe_metadata(info: Option<&OpOrigin>) -> String {
        info.map_or_else(String::new, OpOrigin::to_string)
    }
}

impl Explain for RegisterModel {
    fn partition_key(op: &RegisterOp) -> String {
        op.key.clone()
    }

    fn rejection(state: &Option<i64>, op: &RegisterOp) -> Option<String> {
        let held = describe_value(*state);
        match op.action {
            RegisterAction::Read(value) if *state != value => {
                Some(format!("it returned {} but the register held {held}", describe_value(value)))
            }
            RegisterAction::CasOk { expected, .. } if *state != Some(expected) => {
                Some(format!("it swapped from {expected} but the register held {held}"))
            }
            RegisterAction::CasFailed { expected, .. } if *state == Some(expected) => {
                Some(format!("it reported a failed compare but the register held {expected}, the expected value"))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(action: RegisterAction) -> RegisterOp {
        RegisterOp { key: "k".into(), action }
    }

    // Proves: each action's step follows the table in the module docs, and
    // `rejection` explains exactly the steps the model refuses.
    #[test]
    fn step_follows_the_table() {
        use RegisterAction::*;
        let cases: [(Option<i64>, RegisterAction, bool, Option<i64>); 12] = [
            (None, Read(None), true, None),
            (None, Read(Some(1)), false, None),
            (Some(1), Read(Some(1)), true, Some(1)),
            (Some(1), Write(2), true, Some(2)),
            (None, WriteUnknown(2), true, Some(2)),
            (Some(1), CasOk { expected: 1, new: 2 }, true, Some(2)),
            (Some(3), CasOk { expected: 1, new: 2 }, false, Some(2)),
            (None, CasOk { expected: 1, new: 2 }, false, Some(2)),
            (Some(3), CasFailed { expected: 1, new: 2 }, true, Some(3)),
            (Some(1), CasFailed { expected: 1, new: 2 }, false, Some(1)),
            (Some(1), CasUnknown { expected: 1, new: 2 }, true, Some(2)),
            (Some(3), CasUnknown { expected: 1, new: 2 }, true, Some(3)),
        ];
        for (state, action, accepted, next) in cases {
            let (ok, got) = RegisterModel::step(&state, &op(action));
            assert_eq!(ok, accepted, "{state:?} {action:?}");
            if ok {
                assert_eq!(got, next, "{state:?} {action:?}");
            }
            assert_eq!(RegisterModel::rejection(&state, &op(action)).is_some(), !ok, "{state:?} {action:?}");
        }
    }

    // Proves: partitioning splits by key, in key order, keeping each key's
    // operations in history order.
    #[test]
    fn partitions_per_key() {
        let mk = |key: &str, t: i64| Operation::<RegisterModel> {
            client_id: Some(0),
            call_time: t,
            return_time: t + 1,
            op: RegisterOp { key: key.into(), action: RegisterAction::Write(t) },
            metadata: None,
        };
        let history = [mk("b", 0), mk("a", 2), mk("b", 4), mk("c", 6), mk("a", 8)];
        let parts = RegisterModel::partition_operations(&history);
        let keys_times: Vec<Vec<(String, i64)>> =
            parts.iter().map(|p| p.iter().map(|o| (o.op.key.clone(), o.call_time)).collect()).collect();
        assert_eq!(
            keys_times,
            vec![
                vec![("a".to_string(), 2), ("a".to_string(), 8)],
                vec![("b".to_string(), 0), ("b".to_string(), 4)],
                vec![("c".to_string(), 6)],
            ]
        );
    }
}
