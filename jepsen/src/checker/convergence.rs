//! The eventual level's checker: after every fault is healed and the
//! cluster has had time to be quiet, do all replicas hold the right value?
//!
//! For each key the harness reads every node's own cell (value and
//! version). The key **converged correctly** when
//! 1. every node holds the same cell (value and version, or nothing), and
//! 2. that cell is what last-writer-wins must keep:
//!    - the value of the highest-versioned *acknowledged* write (an `ok`
//!      write, or a swapped cas), with that write's version; or
//!    - a value whose write had an *unknown* outcome (`info`), with a
//!      version above every acknowledged one (it may have been applied,
//!      with a version the client never saw);
//!    - nothing, if no write was acknowledged (and none of unknown outcome
//!      landed).
//!
//! What a violation means: **divergent** — replicas disagree (anti-entropy
//! or repair did not finish, or LWW is not deterministic); **lost write** —
//! an acknowledged write's version is above what the replicas kept (the ack
//! was a lie, or a write was dropped); **unexpected value** — the replicas
//! agree on a value no acknowledged or unknown-outcome write produced (a
//! failed write applied, or corruption).
//!
//! Writes are matched to values through their uniqueness per key (see
//! [`crate::generator`]). If the level returned no versions for acknowledged
//! writes, the check falls back to "the value is one that an acknowledged
//! or unknown-outcome write wrote" and says so (`unversioned_acks`).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::cluster::NodeId;
use crate::history::EventType;
use crate::record::{OpRecord, Phase, RecordedVersion};
use crate::validity::Validity;

/// Problems listed in full in a result; the rest are only counted.
pub const PROBLEMS_LISTED_MAX: usize = 50;

/// A node's cell for a key, as read after the heal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct NodeCell {
    /// The value (`None`: the node has no value).
    pub value: Option<i64>,
    /// Its version, when it has one.
    pub version: Option<RecordedVersion>,
}

impl std::fmt::Display for NodeCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.value, self.version) {
            (None, _) => f.write_str("absent"),
            (Some(v), Some(version)) => write!(f, "{v} (version {version})"),
            (Some(v), None) => write!(f, "{v} (no version)"),
        }
    }
}

/// What reading a key on one node gave.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeRead {
    /// The node's cell.
    Cell(NodeCell),
    /// A value that is not an integer any client wrote.
    Garbage(String),
    /// The node did not answer.
    Unreadable(String),
}

/// Every node's read of one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyObservation {
    /// The key.
    pub key: String,
    /// Per node.
    pub nodes: BTreeMap<NodeId, NodeRead>,
}

impl KeyObservation {
    /// Whether every node returned the same cell.
    pub fn agrees(&self) -> bool {
        let cells: BTreeSet<Option<&NodeCell>> = self
            .nodes
            .values()
            .map(|r| match r {
                NodeRead::Cell(c) => Some(c),
                _ => None,
            })
            .collect();
        cells.len() == 1 && !cells.contains(&None)
    }
}

/// What went wrong with a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// Replicas disagree.
    Divergent,
    /// An acknowledged write is newer than what the replicas kept.
    LostWrite,
    /// The replicas agree on a value no acknowledged or unknown-outcome
    /// write produced, or with the wrong version.
    UnexpectedValue,
    /// A node returned bytes that are not a value.
    Garbage,
    /// A node could not be read (makes the answer unknown, not invalid).
    Unreadable,
}

/// One key's problem.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyProblem {
    /// The key.
    pub key: String,
    /// What kind.
    pub kind: ProblemKind,
    /// In words, with the values and versions involved.
    pub detail: String,
}

/// The convergence verdict.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ConvergenceResult {
    /// Valid, invalid, or unknown (some node unreadable).
    pub valid: Validity,
    /// Keys checked.
    pub keys: usize,
    /// Keys on which every node agrees.
    pub agreeing_keys: usize,
    /// Problems by kind.
    pub problem_counts: BTreeMap<ProblemKind, usize>,
    /// The first [`PROBLEMS_LISTED_MAX`] problems.
    pub problems: Vec<KeyProblem>,
    /// Acknowledged writes without a version (the check was weaker).
    pub unversioned_acks: usize,
    /// How long after the heal every node agreed on every key, in ms (set
    /// by the harness; `None` if they never did within its patience).
    pub converged_after_ms: Option<u64>,
}

/// What the writes to one key allow the replicas to hold.
#[derive(Debug, Default)]
struct Expectation {
    /// Acknowledged writes with their versions: value → version.
    acked: BTreeMap<i64, RecordedVersion>,
    /// Acknowledged writes without a version.
    acked_unversioned: BTreeSet<i64>,
    /// Writes with unknown outcome.
    unknown: BTreeSet<i64>,
}

impl Expectation {
    fn newest_acked(&self) -> Option<(i64, RecordedVersion)> {
        self.acked.iter().max_by_key(|(_, version)| **version).map(|(&v, &version)| (v, version))
    }

    /// Why `cell` is not an allowed final cell, or `None` if it is.
    fn judge(&self, cell: NodeCell) -> Option<(ProblemKind, String)> {
        if !self.acked_unversioned.is_empty() {
            // Weaker check: the value must come from some write that may have
            // happened.
            return match cell.value {
                None if self.acked.is_empty() && self.acked_unversioned.is_empty() => None,
                Some(v) if self.acked.contains_key(&v) || self.acked_unversioned.contains(&v) => None,
                Some(v) if self.unknown.contains(&v) => None,
                _ => Some((
                    ProblemKind::UnexpectedValue,
                    format!("final {cell} was not written by any acknowledged or unknown-outcome write"),
                )),
            };
        }
        let newest = self.newest_acked();
        match (cell.value, cell.version, newest) {
            (None, _, None) => None,
            (None, _, Some((v, version))) => Some((
                ProblemKind::LostWrite,
                format!("acknowledged write of {v} (version {version}) is lost: every node has no value"),
            )),
            (Some(v), None, _) => Some((ProblemKind::UnexpectedValue, format!("final value {v} has no version"))),
            (Some(v), Some(version), newest) => {
                if let Some(&acked_version) = self.acked.get(&v) {
                    if acked_version != version {
                        return Some((
                            ProblemKind::UnexpectedValue,
                            format!("final value {v} has version {version}, but its write was acknowledged with version {acked_version}"),
                        ));
                    }
                }
                match newest {
                    Some((nv, nversion)) if version < nversion => Some((
                        ProblemKind::LostWrite,
                        format!("acknowledged write of {nv} (version {nversion}) is lost: every node kept {v} (version {version})"),
                    )),
                    Some((nv, nversion)) if version == nversion => {
                        (v != nv).then(|| (ProblemKind::UnexpectedValue, format!("final value {v} has the version of the acknowledged write of {nv}")))
                    }
                    _ if self.unknown.contains(&v) => None,
                    _ => Some((
                        ProblemKind::UnexpectedValue,
                        format!("final value {v} (version {version}) was written by no acknowledged or unknown-outcome write"),
                    )),
                }
            }
        }
    }
}

/// Judges `observations` (every key the workload used) against the writes
/// in `ops`; see the module docs. `converged_after_ms` is left `None`.
pub fn check(ops: &[OpRecord], observations: &[KeyObservation]) -> ConvergenceResult {
    let mut expectations: BTreeMap<&str, Expectation> = BTreeMap::new();
    let mut unversioned_acks = 0;
    for op in ops.iter().filter(|op| op.phase == Phase::Workload) {
        let Some(value) = op.written_value() else { continue };
        let e = expectations.entry(&op.key).or_default();
        match (op.outcome, op.version) {
            (EventType::Ok, Some(version)) => {
                e.acked.insert(value, version);
            }
            (EventType::Ok, None) => {
                unversioned_acks += 1;
                e.acked_unversioned.insert(value);
            }
            (EventType::Info, _) => {
                e.unknown.insert(value);
            }
            _ => {}
        }
    }

    let none = Expectation::default();
    let mut problems = Vec::new();
    let mut agreeing_keys = 0;
    for obs in observations {
        let garbage: Vec<String> = obs
            .nodes
            .iter()
            .filter_map(|(id, r)| match r {
                NodeRead::Garbage(what) => Some(format!("n{id}: {what}")),
                _ => None,
            })
            .collect();
        let unreadable: Vec<String> = obs
            .nodes
            .iter()
            .filter_map(|(id, r)| match r {
                NodeRead::Unreadable(why) => Some(format!("n{id}: {why}")),
                _ => None,
            })
            .collect();
        let problem = if !garbage.is_empty() {
            Some((ProblemKind::Garbage, garbage.join("; ")))
        } else if !unreadable.is_empty() {
            Some((ProblemKind::Unreadable, unreadable.join("; ")))
        } else if !obs.agrees() {
            let cells: Vec<String> = obs
                .nodes
                .iter()
                .filter_map(|(id, r)| match r {
                    NodeRead::Cell(c) => Some(format!("n{id}: {c}")),
                    _ => None,
                })
                .collect();
            Some((ProblemKind::Divergent, format!("replicas disagree: {}", cells.join(", "))))
        } else {
            agreeing_keys += 1;
            let NodeRead::Cell(cell) = obs.nodes.values().next().expect("a node") else {
                unreachable!("agreeing cells")
            };
            expectations.get(obs.key.as_str()).unwrap_or(&none).judge(*cell)
        };
        if let Some((kind, detail)) = problem {
            problems.push(KeyProblem { key: obs.key.clone(), kind, detail });
        }
    }

    let mut problem_counts = BTreeMap::new();
    for p in &problems {
        *problem_counts.entry(p.kind).or_insert(0) += 1;
    }
    let valid = if problems.iter().any(|p| p.kind != ProblemKind::Unreadable) {
        Validity::Invalid
    } else if !problems.is_empty() || observations.is_empty() {
        Validity::Unknown
    } else {
        Validity::Valid
    };
    problems.truncate(PROBLEMS_LISTED_MAX);
    ConvergenceResult {
        valid,
        keys: observations.len(),
        agreeing_keys,
        problem_counts,
        problems,
        unversioned_acks,
        converged_after_ms: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{OpKind, Value};

    fn ver(hlc: u64, node: u32) -> RecordedVersion {
        RecordedVersion { hlc, node }
    }

    fn write(value: i64, outcome: EventType, version: Option<RecordedVersion>) -> OpRecord {
        OpRecord {
            process: 0,
            f: OpKind::Write,
            key: "k".into(),
            invoke_value: Value::Int(value),
            outcome,
            read: None,
            version,
            error: None,
            note: None,
            invoke_ns: 0,
            complete_ns: 1,
            phase: Phase::Workload,
            level: capkv::Level::Eventual,
        }
    }

    fn cell(value: Option<i64>, version: Option<RecordedVersion>) -> NodeRead {
        NodeRead::Cell(NodeCell { value, version })
    }

    fn all_nodes(read: NodeRead) -> Vec<KeyObservation> {
        vec![KeyObservation { key: "k".into(), nodes: (1..=3).map(|id| (id, read.clone())).collect() }]
    }

    fn verdict(ops: &[OpRecord], obs: &[KeyObservation]) -> (Validity, Vec<ProblemKind>) {
        let r = check(ops, obs);
        (r.valid, r.problems.iter().map(|p| p.kind).collect())
    }

    // Proves: replicas agreeing on the highest-versioned acknowledged write
    // are valid, whatever order the acks came in.
    #[test]
    fn newest_acknowledged_write_wins() {
        let ops = [
            write(2, EventType::Ok, Some(ver(20, 1))),
            write(1, EventType::Ok, Some(ver(10, 2))),
            write(3, EventType::Fail, None),
        ];
        assert_eq!(verdict(&ops, &all_nodes(cell(Some(2), Some(ver(20, 1))))), (Validity::Valid, vec![]));
        // Same hlc, higher node id wins.
        let tie = [write(1, EventType::Ok, Some(ver(10, 1))), write(2, EventType::Ok, Some(ver(10, 2)))];
        assert_eq!(verdict(&tie, &all_nodes(cell(Some(2), Some(ver(10, 2))))).0, Validity::Valid);
    }

    // Proves: an unknown-outcome write may win with a version above every
    // acknowledged one, but not below; a failed write's value never may.
    #[test]
    fn unknown_outcome_writes_may_win() {
        let ops = [
            write(1, EventType::Ok, Some(ver(10, 1))),
            write(2, EventType::Info, None),
            write(3, EventType::Fail, None),
        ];
        assert_eq!(verdict(&ops, &all_nodes(cell(Some(2), Some(ver(30, 2))))).0, Validity::Valid);
        assert_eq!(
            verdict(&ops, &all_nodes(cell(Some(2), Some(ver(5, 2))))),
            (Validity::Invalid, vec![ProblemKind::LostWrite])
        );
        assert_eq!(
            verdict(&ops, &all_nodes(cell(Some(3), Some(ver(30, 2))))),
            (Validity::Invalid, vec![ProblemKind::UnexpectedValue])
        );
    }

    // Proves: an acknowledged write missing from every replica, or shadowed
    // by an older one, is a lost write; a key never acknowledged may be
    // absent.
    #[test]
    fn lost_writes() {
        let ops = [write(1, EventType::Ok, Some(ver(10, 1))), write(2, EventType::Ok, Some(ver(20, 1)))];
        assert_eq!(
            verdict(&ops, &all_nodes(cell(Some(1), Some(ver(10, 1))))),
            (Validity::Invalid, vec![ProblemKind::LostWrite])
        );
        assert_eq!(verdict(&ops, &all_nodes(cell(None, None))), (Validity::Invalid, vec![ProblemKind::LostWrite]));
        let unknown_only = [write(1, EventType::Info, None)];
        assert_eq!(verdict(&unknown_only, &all_nodes(cell(None, None))).0, Validity::Valid);
        // The right value with another version is not the acknowledged write.
        assert_eq!(verdict(&ops, &all_nodes(cell(Some(2), Some(ver(21, 1))))).0, Validity::Invalid);
    }

    // Proves: replicas that disagree are divergent (invalid); a node that
    // cannot be read makes the answer unknown, not invalid; garbage is
    // invalid.
    #[test]
    fn divergence_unreadable_and_garbage() {
        let ops = [write(1, EventType::Ok, Some(ver(10, 1))), write(2, EventType::Ok, Some(ver(20, 1)))];
        let mut obs = all_nodes(cell(Some(2), Some(ver(20, 1))));
        obs[0].nodes.insert(3, cell(Some(1), Some(ver(10, 1))));
        assert_eq!(verdict(&ops, &obs), (Validity::Invalid, vec![ProblemKind::Divergent]));
        assert!(!obs[0].agrees());
        obs[0].nodes.insert(3, NodeRead::Unreadable("timeout".into()));
        assert_eq!(verdict(&ops, &obs), (Validity::Unknown, vec![ProblemKind::Unreadable]));
        obs[0].nodes.insert(3, NodeRead::Garbage("\"x\"".into()));
        assert_eq!(verdict(&ops, &obs), (Validity::Invalid, vec![ProblemKind::Garbage]));
        assert_eq!(check(&ops, &[]).valid, Validity::Unknown, "nothing checked");
    }

    // Proves: without versions from the level, the check falls back to "some
    // write that may have happened wrote it", and says so.
    #[test]
    fn unversioned_fallback() {
        let ops = [write(1, EventType::Ok, None), write(2, EventType::Fail, None)];
        let r = check(&ops, &all_nodes(cell(Some(1), None)));
        assert_eq!((r.valid, r.unversioned_acks), (Validity::Valid, 1));
        assert_eq!(check(&ops, &all_nodes(cell(Some(2), None))).valid, Validity::Invalid);
    }
}
