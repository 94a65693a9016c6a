//! Why a history is not linearizable, in words a person can check by hand.
//!
//! For every offending key (partition) it gives the longest linearizable
//! prefix the search found — the operations in order with the state after
//! each — and the operations that could come next but cannot be placed after
//! it, each with the model's reason.
//!
//! Why the "stuck" operations are the right ones: the search records a
//! prefix only when it reached a point where an operation's return must come
//! before anything else, so every operation still unplaced whose call is not
//! after that earliest return is a candidate for the next place. For a
//! *longest* prefix, each such candidate must be refused by the model (an
//! accepted one would have made a longer prefix). So this is computed, not
//! guessed: candidates are derived from the times, and each reason comes from
//! [`Explain::rejection`]. Should a candidate be accepted anyway, it is listed
//! with that fact rather than hidden.

use std::fmt;

use porcupine_rs::{CheckResult, LinearizationInfo, Model, Operation};

/// What a model must say, beyond [`Model`], to explain a violation.
pub trait Explain: Model {
    /// The name of the partition (the key) an operation belongs to.
    fn partition_key(op: &Self::Op) -> String;

    /// Why `op` cannot take effect in `state`, or `None` if it can.
    fn rejection(state: &Self::State, op: &Self::Op) -> Option<String>;
}

/// At most this many offending keys are shown by `Display`; all are kept.
pub const DISPLAY_KEYS_MAX: usize = 10;
/// At most this many prefix steps (the last ones) are shown per key by
/// `Display`; all are kept.
pub const DISPLAY_PREFIX_STEPS_MAX: usize = 20;

/// Why a history is not linearizable: one entry per offending key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    /// The offending keys, in key order.
    pub keys: Vec<KeyViolation>,
}

/// The violation on one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyViolation {
    /// The key.
    pub key: String,
    /// How many operations the key has in the checked history.
    pub ops: usize,
    /// The longest linearizable prefix found, in linearization order.
    pub prefix: Vec<PrefixStep>,
    /// The operations that could come next and cannot be placed after it.
    pub stuck: Vec<StuckOp>,
}

/// One operation of a linearizable prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrefixStep {
    /// The operation, as the model describes it.
    pub op: String,
    /// Where it came from (process, line), as the model describes it.
    pub origin: String,
    /// The key's state after it.
    pub state_after: String,
}

/// An operation that cannot be placed after the prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StuckOp {
    /// The operation, as the model describes it.
    pub op: String,
    /// Where it came from (process, line), as the model describes it.
    pub origin: String,
    /// Why it cannot take effect in the state after the prefix.
    pub reason: String,
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for key in self.keys.iter().take(DISPLAY_KEYS_MAX) {
            write!(f, "{key}")?;
        }
        if self.keys.len() > DISPLAY_KEYS_MAX {
            writeln!(f, "… and {} more offending keys", self.keys.len() - DISPLAY_KEYS_MAX)?;
        }
        Ok(())
    }
}

impl fmt::Display for KeyViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "key {:?}: its {} operations have no linearization; the longest linearizable prefix found has {}:",
            self.key,
            self.ops,
            self.prefix.len()
        )?;
        let skipped = self.prefix.len().saturating_sub(DISPLAY_PREFIX_STEPS_MAX);
        if skipped > 0 {
            writeln!(f, "  … {skipped} earlier operations")?;
        }
        for (i, step) in self.prefix.iter().enumerate().skip(skipped) {
            writeln!(f, "  {:>4}. {} [{}]  ⇒ {}", i + 1, step.op, step.origin, step.state_after)?;
        }
        if self.prefix.is_empty() {
            writeln!(f, "  (empty: no operation can go first)")?;
        }
        writeln!(f, "  none of the operations that could come next can be placed after it:")?;
        for stuck in &self.stuck {
            writeln!(f, "    - {} [{}]: {}", stuck.op, stuck.origin, stuck.reason)?;
        }
        Ok(())
    }
}

/// Builds the explanation from porcupine-rs's partial linearizations: one
/// [`KeyViolation`] per partition whose result is `Illegal`. Returns `None`
/// when no partition is illegal.
pub fn explain<M: Explain>(info: &LinearizationInfo<M>) -> Option<Explanation> {
    let keys: Vec<KeyViolation> = info
        .partition_results
        .iter()
        .enumerate()
        .filter(|(_, result)| **result == CheckResult::Illegal)
        .map(|(p, _)| {
            let ops = &info.partition_ops[p];
            let longest: &[usize] =
                info.partial_linearizations[p].iter().max_by_key(|seq| seq.len()).map_or(&[], Vec::as_slice);
            explain_partition(ops, longest)
        })
        .collect();
    (!keys.is_empty()).then_some(Explanation { keys })
}

fn explain_partition<M: Explain>(ops: &[Operation<M>], longest: &[usize]) -> KeyViolation {
    let key = ops.first().map_or_else(String::new, |op| M::partition_key(&op.op));

    let mut state = M::init();
    let mut placed = vec![false; ops.len()];
    let mut prefix = Vec::with_capacity(longest.len());
    for &i in longest {
        let op = &ops[i];
        let (accepted, next) = M::step(&state, &op.op);
        assert!(accepted, "porcupine-rs returned a partial linearization the model refuses");
        state = next;
        placed[i] = true;
        prefix.push(PrefixStep {
            op: M::describe_operation(&op.op),
            origin: M::describe_metadata(op.metadata.as_ref()),
            state_after: M::describe_state(&state),
        });
    }

    // Candidates for the next place: unplaced ops called no later than the
    // earliest return among the unplaced ones (calls sort before returns at
    // equal times, as in porcupine-rs).
    let earliest_return =
        ops.iter().zip(&placed).filter(|(_, placed)| !**placed).map(|(op, _)| op.return_time).min().unwrap_or(i64::MAX);
    let stuck = ops
        .iter()
        .zip(&placed)
        .filter(|(op, placed)| !**placed && op.call_time <= earliest_return)
        .map(|(op, _)| StuckOp {
            op: M::describe_operation(&op.op),
            origin: M::describe_metadata(op.metadata.as_ref()),
            reason: M::rejection(&state, &op.op).unwrap_or_else(|| {
                format!(
                    "the model accepts it in state {}, but no linearization continues from there",
                    M::describe_state(&state)
                )
            }),
        })
        .collect();

    KeyViolation { key, ops: ops.len(), prefix, stuck }
}
