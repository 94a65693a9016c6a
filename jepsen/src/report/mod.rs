//! What a run leaves in its directory:
//!
//! - `history.jsonl` — every client operation (written while running by
//!   [`crate::record`], or [`crate::topic::recorder`] for the topic
//!   workload; the formats are in `docs/jepsen.md`);
//! - `results.json` — the verdict and the numbers ([`Results`]);
//! - `index.html` — a self-contained page (inline SVG, no script, no
//!   network): latency over time per operation kind coloured by outcome,
//!   throughput over time, nemesis windows shaded, the verdict and, for a
//!   violation, the explanation and a link to the checker's own page
//!   (`linearizability.html`, porcupine-rs's visualization);
//! - `nodes/nN/kv.log` — each node's log.
//!
//! This module only turns numbers into files; the run computes them.

mod html;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::checker::convergence::ConvergenceResult;
use crate::checker::stale_reads::StaleReadStats;
use crate::history::EventType;
use crate::record::{Counts, OpRecord, Phase};
use crate::stats::Percentiles;
use crate::topic::checker::TopicCheckResult;
use crate::topic::consume::SettleOutcome;
use crate::validity::Validity;

/// The history's file name in the run directory.
pub const HISTORY_FILE: &str = "history.jsonl";
/// The results' file name.
pub const RESULTS_FILE: &str = "results.json";
/// The page's file name.
pub const INDEX_FILE: &str = "index.html";
/// The linearizability checker's visualization, written for a violation.
pub const CHECKER_HTML_FILE: &str = "linearizability.html";

/// Everything `results.json` says. Field names are an interface (tests and
/// scripts read them): add, do not rename.
#[derive(Clone, Debug, Serialize)]
pub struct Results {
    /// The verdict: `true`, `false` or `"unknown"`.
    pub valid: Validity,
    /// `register` or `topic`.
    pub workload: String,
    /// The consistency level of the operations (register workload only):
    /// one level, `mixed` or `mixed-eventual`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    /// The nemeses used (empty: none).
    pub nemesis: Vec<String>,
    /// The checkers that decided the verdict.
    pub checkers: Vec<String>,
    /// Operations in the history (workload and final reads).
    pub ops: u64,
    /// Of those, `ok`.
    pub ok: u64,
    /// `fail`.
    pub fail: u64,
    /// `info` (or never completed).
    pub info: u64,
    /// Workload operations by kind (`read`, `write`, `cas`; topic: `send`).
    pub by_f: BTreeMap<String, Counts>,
    /// Workload operations by consistency level (register workload; one
    /// entry unless the level is `mixed` or `mixed-eventual`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub by_level: BTreeMap<String, Counts>,
    /// The reads after the heal (topic: the polls of the final consume).
    pub final_reads: Counts,
    /// Latency of workload operations that ended `ok`, by kind, in ms.
    pub latency_ms: BTreeMap<String, Percentiles>,
    /// Per checker, its result.
    pub checker: CheckerResults,
    /// Stale-read statistics (register workload, every level; see the
    /// checker's docs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stale_reads: Option<StaleReadStats>,
    /// The topic and its state before the final consume (topic workload).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<TopicReport>,
    /// The faults as they happened.
    pub nemesis_windows: Vec<WindowReport>,
    /// Nodes that exited without being killed.
    pub node_crashes: Vec<CrashReport>,
    /// Reads that returned bytes no client wrote.
    pub unexpected_values: u64,
    /// Why the verdict is what it is, beyond the checkers (e.g. "no
    /// operation succeeded", "interrupted").
    pub reasons: Vec<String>,
    /// Errors that kept the run from doing what it should.
    pub errors: Vec<String>,
    /// How the run was set up.
    pub config: RunInfo,
    /// How long each phase took, in s.
    pub timing_s: BTreeMap<String, f64>,
    /// The files of the run, relative to its directory.
    pub files: BTreeMap<String, String>,
}

/// The checkers' results.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckerResults {
    /// The linearizability checker, when it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub linearizable: Option<LinearizableResult>,
    /// The convergence checker, when it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub convergence: Option<ConvergenceResult>,
    /// The topic checker (topic workload).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<TopicCheckResult>,
}

/// The topic of a topic-workload run.
#[derive(Clone, Debug, Serialize)]
pub struct TopicReport {
    /// Its name.
    pub name: String,
    /// Partitions.
    pub partitions: u32,
    /// Replicas per partition.
    pub replication_factor: u32,
    /// `min.insync.replicas`.
    pub min_insync_replicas: u32,
    /// Whether a replica outside the ISR may be elected.
    pub unclean_leader_election: bool,
    /// `replica.lag.time.max.ms` of the topic.
    pub replica_lag_time_max_ms: u64,
    /// The producers' acks: `0`, `1` or `all`.
    pub acks: String,
    /// The wait for the partitions to settle after the heal: how long it
    /// took and each partition as last seen.
    pub settle: SettleOutcome,
}

/// The linearizability checker's answer.
#[derive(Clone, Debug, Serialize)]
pub struct LinearizableResult {
    /// Its verdict.
    pub valid: Validity,
    /// `linearizable`, `not-linearizable` or `unknown`, or `error`.
    pub result: String,
    /// Operations it checked.
    pub ops: usize,
    /// How long it took, in ms.
    pub elapsed_ms: u64,
    /// For a violation: why, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explanation: Option<String>,
    /// For a violation: the visualization, relative to the run directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    /// Why it could not check, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A fault as it happened.
#[derive(Clone, Debug, Serialize)]
pub struct WindowReport {
    /// Which kind.
    pub kind: String,
    /// What exactly.
    pub description: String,
    /// Start, s since the run started.
    pub start_s: f64,
    /// End of its heal, s since the run started.
    pub end_s: Option<f64>,
    /// For a partition: the two sides that could not talk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sides: Option<[Vec<u32>; 2]>,
    /// For a bridge partition: the node that talked to both sides.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bridge: Option<u32>,
}

/// A node that exited without being killed.
#[derive(Clone, Debug, Serialize)]
pub struct CrashReport {
    /// The node.
    pub node: u32,
    /// Its exit status.
    pub status: String,
    /// When the harness noticed, s since the run started.
    pub noticed_s: f64,
}

/// How the run was set up.
#[derive(Clone, Debug, Serialize)]
pub struct RunInfo {
    /// The seed of every random choice.
    pub seed: u64,
    /// Nodes.
    pub nodes: usize,
    /// Workers.
    pub concurrency: usize,
    /// Keys active at a time.
    pub keys: usize,
    /// Operations per key before it is retired.
    pub ops_per_key: u64,
    /// Target rate, operations per second.
    pub rate_hz: f64,
    /// Length of the workload, s.
    pub time_s: f64,
    /// Deadline of one operation, ms.
    pub op_timeout_ms: u64,
    /// Length of a fault window, ms.
    pub fault_interval_ms: u64,
    /// Length of a quiet window, ms.
    pub heal_interval_ms: u64,
    /// Extra `kv serve` arguments.
    pub serve_args: Vec<String>,
    /// The kv binary.
    pub kv: String,
    /// The cluster (`1=127.0.0.11:P,…`).
    pub cluster: String,
    /// The nftables table of this run, if partitions were used.
    pub firewall_table: Option<String>,
}

/// Writes `DIR/results.json`.
pub fn write_results(dir: &Path, results: &Results) -> io::Result<PathBuf> {
    let path = dir.join(RESULTS_FILE);
    let mut text = serde_json::to_string_pretty(results).map_err(io::Error::other)?;
    text.push('\n');
    std::fs::write(&path, text)?;
    Ok(path)
}

/// One operation as the charts see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChartOp {
    /// Invoke time, ns on the run clock.
    pub invoke_ns: u64,
    /// Completion time, ns.
    pub complete_ns: u64,
    /// `ok`, `fail` or `info`.
    pub outcome: EventType,
}

impl ChartOp {
    /// Completion minus invoke, in ms.
    pub fn latency_ms(&self) -> f64 {
        (self.complete_ns - self.invoke_ns) as f64 / 1e6
    }
}

/// What the page charts: latency over time per series, and throughput of
/// every operation.
#[derive(Clone, Debug, Default)]
pub struct Charts {
    /// (title, operations), one latency chart each.
    pub latency: Vec<(String, Vec<ChartOp>)>,
    /// Every operation, for the throughput chart.
    pub throughput: Vec<ChartOp>,
}

impl Charts {
    /// The register workload's charts: latency of workload reads, writes
    /// and cas; throughput of everything (final reads included).
    pub fn register(ops: &[OpRecord]) -> Charts {
        let chart_op =
            |op: &OpRecord| ChartOp { invoke_ns: op.invoke_ns, complete_ns: op.complete_ns, outcome: op.outcome };
        let latency = [crate::history::OpKind::Read, crate::history::OpKind::Write, crate::history::OpKind::Cas]
            .into_iter()
            .map(|f| {
                let of_f: Vec<ChartOp> =
                    ops.iter().filter(|op| op.f == f && op.phase == Phase::Workload).map(chart_op).collect();
                (format!("{f} ({} operations)", of_f.len()), of_f)
            })
            .filter(|(_, of_f)| !of_f.is_empty())
            .collect();
        Charts { latency, throughput: ops.iter().map(chart_op).collect() }
    }
}

/// Writes `DIR/index.html` from the results and what to chart.
pub fn write_index(dir: &Path, results: &Results, charts: &Charts) -> io::Result<PathBuf> {
    let path = dir.join(INDEX_FILE);
    std::fs::write(&path, html::render(results, charts))?;
    Ok(path)
}
