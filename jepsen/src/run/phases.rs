//! The steps of a run that do not depend on the workload, used by the
//! register run ([`super::register`]) and the topic run
//! (`crate::topic::run`):
//!
//! - `prepare_dir`: a new or empty run directory;
//! - `start_cluster`: this run's nftables table (if its faults cut links)
//!   and a fresh cluster of `kv serve` processes;
//! - `plan_faults` and `under_faults`: the fault plan, a function of
//!   the seed, played by the nemesis while the workload runs, with progress
//!   lines and the `workload` and `heal` timings; then every fault healed;
//! - `teardown`: nodes stopped, data removed unless kept, table deleted;
//! - `common_verdicts`: the verdict's reasons every workload shares;
//! - `window_reports`, `crash_reports`, `run_info`, `report_files`,
//!   `write_report`: the report's workload-independent parts and files.
//!
//! They are `pub(crate)`: the runs are this crate's. Problems that do not
//! stop the run (a fault that could not be healed, a node that would not
//! stop) go to the caller's `errors`, which make the verdict unknown;
//! problems that leave no run at all are [`RunError`]s.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tokio_util::sync::CancellationToken;

use super::config::{RunConfig, RunError};
use crate::client;
use crate::cluster::{Cluster, ClusterSpec};
use crate::nemesis::driver::{AppliedWindow, Crash, Driver};
use crate::nemesis::nft::Firewall;
use crate::nemesis::schedule::{self, ScheduleSpec, Step};
use crate::nemesis::NemesisKind;
use crate::record::{Counts, RunClock};
use crate::report::{
    self, Charts, CrashReport, Results, RunInfo, WindowReport, HISTORY_FILE, INDEX_FILE, RESULTS_FILE,
};
use crate::validity::Validity;

/// How often progress lines report counts while the workload runs.
pub const PROGRESS_INTERVAL_MS: u64 = 5_000;
/// How long a run waits for a fresh cluster to serve: the register run's
/// level probe, the topic run's topic creation and first leaders.
pub const PROBE_TIMEOUT_MS: u64 = 30_000;

/// Mixed into the seed for the nemesis plan, so the workload and the
/// faults draw from independent streams.
const NEMESIS_SEED_SALT: u64 = 0x6e65_6d65_7369_7321;

/// Creates the run directory; refuses one that has files in it (a previous
/// run's history must not be mixed with this one).
pub(crate) fn prepare_dir(out: &Path) -> Result<PathBuf, RunError> {
    let io = |source| RunError::Io { path: out.to_path_buf(), source };
    std::fs::create_dir_all(out).map_err(io)?;
    if std::fs::read_dir(out).map_err(io)?.next().is_some() {
        return Err(RunError::Config(format!("{} is not empty: give --out a new or empty directory", out.display())));
    }
    out.canonicalize().map_err(io)
}

/// Installs this run's nftables table if its faults cut links, and starts
/// the cluster.
pub(crate) async fn start_cluster(
    config: &RunConfig,
    dir: &Path,
    progress: &(dyn Fn(String) + Sync),
) -> Result<(Option<Firewall>, Cluster), RunError> {
    let firewall = if config.needs_firewall() {
        let firewall = Firewall::install()?;
        progress(format!("nftables table inet {} installed", firewall.table()));
        Some(firewall)
    } else {
        None
    };
    progress(format!("starting {} nodes from {}", config.nodes, config.kv.display()));
    let spec = ClusterSpec {
        kv: config.kv.clone(),
        dir: dir.to_path_buf(),
        nodes: config.nodes,
        serve_args: config.effective_serve_args(),
        tls: config.tls,
    };
    let cluster = Cluster::start(spec).await?;
    progress(format!("cluster up: {}", cluster.members()));
    Ok((firewall, cluster))
}

/// The run's fault plan, a function of the seed.
pub(crate) fn plan_faults(config: &RunConfig, cluster: &Cluster) -> Vec<Step> {
    schedule::plan(
        &ScheduleSpec {
            run_ms: config.time.as_millis() as u64,
            fault_ms: config.fault_interval.as_millis() as u64,
            heal_ms: config.heal_interval.as_millis() as u64,
            kinds: config.nemeses.clone(),
            nodes: cluster.ids(),
        },
        &mut ChaCha8Rng::seed_from_u64(config.seed ^ NEMESIS_SEED_SALT),
    )
}

/// Stops the nodes, removes their data unless kept, and deletes the
/// nftables table; problems go to `errors`. Returns the cluster's members
/// and the table's name, for the report.
pub(crate) async fn teardown(
    config: &RunConfig,
    mut cluster: Cluster,
    firewall: Option<Firewall>,
    errors: &mut Vec<String>,
) -> (String, Option<String>) {
    let killed = cluster.stop().await;
    if !killed.is_empty() {
        errors.push(format!("nodes {killed:?} did not stop on SIGTERM within the grace period and were killed"));
    }
    if !config.keep_data {
        if let Err(e) = cluster.remove_data() {
            errors.push(format!("cannot remove the nodes' data: {e}"));
        }
    }
    let cluster_members = cluster.members().to_string();
    drop(cluster);
    let firewall_table = firewall.as_ref().map(|f| f.table().to_string());
    if let Some(mut firewall) = firewall {
        if let Err(e) = firewall.remove() {
            errors.push(format!("cannot delete nftables table: {e}"));
        }
    }
    (cluster_members, firewall_table)
}

/// The verdict's reasons shared by every workload: an interrupted run, no
/// successful operation, errors, nodes that crashed by themselves.
pub(crate) fn common_verdicts(
    cancelled: bool,
    any_ok: bool,
    errors: &[String],
    crashes: &[Crash],
    reasons: &mut Vec<String>,
    verdicts: &mut Vec<Validity>,
) {
    if cancelled {
        reasons.push("the run was interrupted".into());
        verdicts.push(Validity::Unknown);
    }
    if !any_ok {
        reasons.push("no workload operation succeeded: nothing was tested".into());
        verdicts.push(Validity::Unknown);
    }
    if !errors.is_empty() {
        reasons.push("the run did not go as planned (see errors)".into());
        verdicts.push(Validity::Unknown);
    }
    for c in crashes {
        reasons.push(format!("node {} exited by itself ({}); see nodes/n{}/kv.log", c.node, c.status, c.node));
        verdicts.push(Validity::Unknown);
    }
}

/// The faults as they happened, for the report.
pub(crate) fn window_reports(windows: &[AppliedWindow]) -> Vec<WindowReport> {
    windows
        .iter()
        .map(|w| WindowReport {
            kind: w.kind.name().to_string(),
            description: w.description.clone(),
            start_s: w.start_ns as f64 / 1e9,
            end_s: w.end_ns.map(|e| e as f64 / 1e9),
            sides: w.partition.as_ref().map(|p| p.sides.clone().map(|side| side.into_iter().collect())),
            bridge: w.partition.as_ref().and_then(|p| p.bridge),
        })
        .collect()
}

/// Crashed nodes, for the report.
pub(crate) fn crash_reports(crashes: &[Crash]) -> Vec<CrashReport> {
    crashes
        .iter()
        .map(|c| CrashReport { node: c.node, status: c.status.clone(), noticed_s: c.noticed_ns as f64 / 1e9 })
        .collect()
}

/// How the run was set up, for the report.
pub(crate) fn run_info(config: &RunConfig, cluster: String, firewall_table: Option<String>) -> RunInfo {
    RunInfo {
        seed: config.seed,
        nodes: config.nodes,
        concurrency: config.concurrency,
        keys: config.keys,
        ops_per_key: config.ops_per_key,
        rate_hz: config.rate_hz,
        time_s: config.time.as_secs_f64(),
        op_timeout_ms: config.op_timeout.as_millis() as u64,
        fault_interval_ms: config.fault_interval.as_millis() as u64,
        heal_interval_ms: config.heal_interval.as_millis() as u64,
        serve_args: config.effective_serve_args(),
        kv: config.kv.display().to_string(),
        cluster,
        firewall_table,
    }
}

pub(crate) fn nemesis_names(kinds: &[NemesisKind]) -> String {
    if kinds.is_empty() {
        "none".into()
    } else {
        kinds.iter().map(|k| k.name()).collect::<Vec<_>>().join(",")
    }
}

/// The files every run writes, by role, for the report's file list.
pub(crate) fn report_files() -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    files.insert("history".to_string(), HISTORY_FILE.to_string());
    files.insert("results".to_string(), RESULTS_FILE.to_string());
    files.insert("index".to_string(), INDEX_FILE.to_string());
    files
}

/// Writes `results.json` and `index.html` (with `charts`) into `dir`.
pub(crate) fn write_report(dir: &Path, results: &Results, charts: &Charts) -> Result<(), RunError> {
    let io = |path: PathBuf| move |source| RunError::Io { path, source };
    report::write_results(dir, results).map_err(io(dir.join(RESULTS_FILE)))?;
    report::write_index(dir, results, charts).map_err(io(dir.join(INDEX_FILE)))?;
    Ok(())
}

/// What [`under_faults`] leaves behind.
pub(crate) struct FaultPhase {
    pub summary: client::WorkloadSummary,
    /// The fault windows the driver applied, and the crashes it saw.
    pub windows: Vec<AppliedWindow>,
    pub crashes: Vec<Crash>,
    /// When every fault was healed.
    pub healed_at: Instant,
}

/// The part every workload shares: `workload` runs while `driver` plays
/// `steps`, either one failing stops the other (through `stop`), progress
/// is reported from `counts`; then every fault is healed. Records the
/// `workload` and `heal` timings and what went wrong in `errors`.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn under_faults(
    mut driver: Driver<'_>,
    steps: &[Step],
    clock: RunClock,
    stop: &CancellationToken,
    workload: impl std::future::Future<Output = client::WorkloadSummary>,
    counts: impl Fn() -> Counts,
    progress: &(dyn Fn(String) + Sync),
    timing_s: &mut BTreeMap<String, f64>,
    errors: &mut Vec<String>,
) -> FaultPhase {
    let workload_done = CancellationToken::new();
    let (summary, nemesis_result, ()) = tokio::join!(
        async {
            let summary = workload.await;
            if summary.stopped_early.is_some() {
                stop.cancel();
            }
            workload_done.cancel();
            summary
        },
        async {
            let result = driver.run(steps, clock.start(), stop, progress).await;
            if result.is_err() {
                stop.cancel();
            }
            result
        },
        report_progress(counts, &workload_done, progress),
    );
    timing_s.insert("workload".into(), clock.now_ns() as f64 / 1e9);
    if let Some(why) = &summary.stopped_early {
        errors.push(format!("the workload stopped early: {why}"));
    }
    if let Err(e) = nemesis_result {
        errors.push(format!("nemesis: {e}"));
    }
    let heal_started = Instant::now();
    if let Err(e) = driver.heal_all().await {
        errors.push(format!("heal: {e}"));
    }
    let healed_at = Instant::now();
    timing_s.insert("heal".into(), (healed_at - heal_started).as_secs_f64());
    progress("healed everything".into());
    FaultPhase { summary, windows: driver.windows().to_vec(), crashes: driver.crashes().to_vec(), healed_at }
}

/// Emits a count line every [`PROGRESS_INTERVAL_MS`] until `done`.
async fn report_progress(counts: impl Fn() -> Counts, done: &CancellationToken, progress: &(dyn Fn(String) + Sync)) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(PROGRESS_INTERVAL_MS)) => {}
            _ = done.cancelled() => return,
        }
        let c = counts();
        progress(format!("{} ops: {} ok, {} fail, {} info", c.ops, c.ok, c.fail, c.info));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves: a run directory with files in it is refused; an empty or new
    // one is accepted.
    #[test]
    fn run_directory_must_be_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert!(prepare_dir(&dir.path().join("new")).is_ok());
        std::fs::write(dir.path().join("new/history.jsonl"), "").unwrap();
        assert!(matches!(prepare_dir(&dir.path().join("new")), Err(RunError::Config(_))));
    }
}
