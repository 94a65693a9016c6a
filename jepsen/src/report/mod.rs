//! What a run leaves in its directory:
//!
//! - `history.jsonl` — every client operation (written while running by
//!   [`crate::record`]; the format is in `docs/jepsen.md`);
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
use crate::record::{Counts, OpRecord};
use crate::stats::Percentiles;
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
    /// The consistency level of every operation.
    pub level: String,
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
    /// Workload operations by kind (`read`, `write`, `cas`).
    pub by_f: BTreeMap<String, Counts>,
    /// The reads after the heal.
    pub final_reads: Counts,
    /// Latency of workload operations that ended `ok`, by kind, in ms.
    pub latency_ms: BTreeMap<String, Percentiles>,
    /// Per checker, its result.
    pub checker: CheckerResults,
    /// Stale-read statistics (every level; see the checker's docs).
    pub stale_reads: StaleReadStats,
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

/// Writes `DIR/index.html` from the results and the operations.
pub fn write_index(dir: &Path, results: &Results, ops: &[OpRecord]) -> io::Result<PathBuf> {
    let path = dir.join(INDEX_FILE);
    std::fs::write(&path, html::render(results, ops))?;
    Ok(path)
}
