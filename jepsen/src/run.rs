//! One harness run, start to finish:
//!
//! 1. start a fresh cluster of `kv serve` processes in the run directory
//!    (and this run's nftables table, if partitions are asked for);
//! 2. probe that the nodes serve the level (an UNIMPLEMENTED level is an
//!    error, not a vacuously valid run);
//! 3. run the workload for `--time` while the nemesis follows its schedule
//!    (quiet, fault, heal, fault, …);
//! 4. heal everything; for the convergence checker, poll every node's copy
//!    of every key until they agree (or the patience runs out);
//! 5. final reads: one read per key at the run's level, recorded;
//! 6. stop the cluster, check the history, write `results.json` and
//!    `index.html`.
//!
//! The verdict combines the checkers (see [`crate::validity`]) and is
//! *unknown* rather than valid when the run could not test what it meant to:
//! no operation succeeded, a fault could not be applied or healed, a node
//! crashed by itself, or the run was interrupted.
//!
//! That is the register workload. `--workload topic` follows the same
//! steps with a topic instead of keys (see [`crate::topic::run`]); the
//! shared steps — cluster and firewall, fault plan, teardown, the verdict's
//! common reasons — are the `pub(crate)` functions here.
//!
//! Everything runs on the caller's runtime, which must be a current-thread
//! runtime on a thread that outlives the run (see [`crate::cluster`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use capkv::client::{CallOptions, ClientError};
use capkv::Level;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tokio_util::sync::CancellationToken;

use crate::checker::convergence::{self, KeyObservation, NodeCell, NodeRead};
use crate::checker::{self, stale_reads, Format, Outcome};
use crate::client::{self, WorkloadConfig, CONCURRENCY_MAX};
use crate::cluster::{Cluster, ClusterError, ClusterSpec, NODES_MAX};
use crate::generator::{Generator, GeneratorConfig, OpMix, OpSpec, KEYS_MAX};
use crate::history::{EventType, OpKind, Value};
use crate::nemesis::driver::Driver;
use crate::nemesis::driver::{AppliedWindow, Crash};
use crate::nemesis::nft::{Firewall, FirewallError};
use crate::nemesis::schedule::Step;
use crate::nemesis::schedule::{self, ScheduleSpec};
use crate::nemesis::NemesisKind;
use crate::record::{Counts, OpRecord, Phase, RecordError, Recorder, RunClock};
use crate::report::{
    self, Charts, CheckerResults, CrashReport, LinearizableResult, Results, RunInfo, WindowReport, CHECKER_HTML_FILE,
    HISTORY_FILE, INDEX_FILE, RESULTS_FILE,
};
use crate::stats::Percentiles;
use crate::topic::TopicOptions;
use crate::validity::Validity;

/// How often progress lines report counts while the workload runs.
pub const PROGRESS_INTERVAL_MS: u64 = 5_000;
/// How long the probe waits for the level to answer.
pub const PROBE_TIMEOUT_MS: u64 = 30_000;
/// Pause between convergence polls.
pub const CONVERGE_POLL_MS: u64 = 250;
/// Deadline of one convergence read.
pub const CONVERGE_READ_TIMEOUT_MS: u64 = 2_000;
/// Attempts per key for a final read that fails.
pub const FINAL_READ_ATTEMPTS: u32 = 3;
/// Least deadline of a final read.
pub const FINAL_READ_TIMEOUT_MIN_MS: u64 = 5_000;
/// Longest run.
pub const TIME_MAX: Duration = Duration::from_secs(24 * 3600);
/// Highest rate, operations per second.
pub const RATE_MAX_HZ: f64 = 100_000.0;
/// The key the level probe writes (not a workload key).
pub const PROBE_KEY: &str = "jepsen-probe";
/// Largest `--value-bytes`: the nodes' default `--max-value-bytes` (1 MiB).
pub const VALUE_BYTES_MAX: usize = 1024 * 1024;

/// `kv serve` flag the harness sets unless given in `serve_args`.
const ANTI_ENTROPY_FLAG: &str = "--anti-entropy-interval-ms";
/// Mixed into the seed for the nemesis plan, so the workload and the
/// faults draw from independent streams.
const NEMESIS_SEED_SALT: u64 = 0x6e65_6d65_7369_7321;

/// What the clients do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Reads, writes and cas on independent registers at one level.
    Register,
    /// Producers send unique messages to a topic; the partitions are read
    /// back after the heal (see [`crate::topic`]).
    Topic,
}

impl Workload {
    /// Name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Register => "register",
            Workload::Topic => "topic",
        }
    }

    /// Parses `register` or `topic`.
    pub fn parse(text: &str) -> Result<Workload, String> {
        match text.trim() {
            "register" => Ok(Workload::Register),
            "topic" => Ok(Workload::Topic),
            other => Err(format!("unknown workload {other:?}: expected register or topic")),
        }
    }
}

/// Which checker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum CheckerKind {
    /// The linearizability checker on the history.
    Linearizable,
    /// Replica convergence after the heal.
    Convergence,
}

impl CheckerKind {
    /// Name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            CheckerKind::Linearizable => "linearizable",
            CheckerKind::Convergence => "convergence",
        }
    }

    /// The checkers a level is judged by unless told otherwise.
    pub fn defaults(level: Level) -> Vec<CheckerKind> {
        match level {
            Level::Eventual => vec![CheckerKind::Convergence],
            Level::Quorum | Level::Linearizable => vec![CheckerKind::Linearizable],
        }
    }

    /// Parses `linearizable,convergence` (any non-empty subset).
    pub fn parse_list(text: &str) -> Result<Vec<CheckerKind>, String> {
        let mut kinds = Vec::new();
        for part in text.split(',').map(str::trim) {
            let kind = match part {
                "linearizable" => CheckerKind::Linearizable,
                "convergence" => CheckerKind::Convergence,
                _ => return Err(format!("unknown checker {part:?}: expected linearizable, convergence or both")),
            };
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        kinds.sort();
        Ok(kinds)
    }
}

/// Everything a run needs.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// What the clients do.
    pub workload: Workload,
    /// The topic workload's topic and producers (ignored by the register
    /// workload).
    pub topic: TopicOptions,
    /// The level of every operation (register workload).
    pub level: Level,
    /// Fault kinds (empty: none).
    pub nemeses: Vec<NemesisKind>,
    /// Length of the workload.
    pub time: Duration,
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
    /// Seed of every random choice.
    pub seed: u64,
    /// The `kv` binary.
    pub kv: PathBuf,
    /// Checkers (`None`: the level's defaults).
    pub checkers: Option<Vec<CheckerKind>>,
    /// The run directory (created; must be empty if it exists).
    pub out: PathBuf,
    /// Extra `kv serve` arguments.
    pub serve_args: Vec<String>,
    /// Deadline of one operation.
    pub op_timeout: Duration,
    /// Length of a fault window.
    pub fault_interval: Duration,
    /// Length of a quiet window.
    pub heal_interval: Duration,
    /// How long to wait for replicas to agree after the heal.
    pub converge_timeout: Duration,
    /// Budget of the linearizability search.
    pub check_timeout: Duration,
    /// The nodes' anti-entropy period, unless `serve_args` sets it.
    pub anti_entropy_interval: Duration,
    /// Keep the nodes' data directories after the run.
    pub keep_data: bool,
    /// Pad written values to this many bytes (0: plain decimal).
    pub value_bytes: usize,
}

impl RunConfig {
    /// The checkers this run uses.
    pub fn checkers(&self) -> Vec<CheckerKind> {
        self.checkers.clone().unwrap_or_else(|| CheckerKind::defaults(self.level))
    }

    /// Checks the bounds of every setting.
    pub fn validate(&self) -> Result<(), RunError> {
        let bad = |m: String| Err(RunError::Config(m));
        if !(1..=NODES_MAX).contains(&self.nodes) {
            return bad(format!("--nodes {} is out of range: 1 to {NODES_MAX}", self.nodes));
        }
        if self.nemeses.contains(&NemesisKind::Partition) && self.nodes < 2 {
            return bad("the partition nemesis needs at least 2 nodes".into());
        }
        if !(1..=CONCURRENCY_MAX).contains(&self.concurrency) {
            return bad(format!("--concurrency {} is out of range: 1 to {CONCURRENCY_MAX}", self.concurrency));
        }
        if !(1..=KEYS_MAX).contains(&self.keys) {
            return bad(format!("--keys {} is out of range: 1 to {KEYS_MAX}", self.keys));
        }
        if self.ops_per_key == 0 {
            return bad("--ops-per-key must be at least 1".into());
        }
        if self.value_bytes > VALUE_BYTES_MAX {
            return bad(format!(
                "--value-bytes {} is out of range: at most {VALUE_BYTES_MAX} (the nodes' default --max-value-bytes)",
                self.value_bytes
            ));
        }
        if !(self.rate_hz > 0.0 && self.rate_hz <= RATE_MAX_HZ) {
            return bad(format!("--rate {} is out of range: above 0, at most {RATE_MAX_HZ}", self.rate_hz));
        }
        if self.time.is_zero() || self.time > TIME_MAX {
            return bad(format!("--time {:?} is out of range: above 0, at most 24 h", self.time));
        }
        for (name, d) in [
            ("--op-timeout", self.op_timeout),
            ("--fault-interval", self.fault_interval),
            ("--heal-interval", self.heal_interval),
            ("--converge-timeout", self.converge_timeout),
            ("--check-timeout", self.check_timeout),
            ("--anti-entropy-interval", self.anti_entropy_interval),
        ] {
            if d.is_zero() || d > TIME_MAX {
                return bad(format!("{name} {d:?} is out of range: above 0, at most 24 h"));
            }
        }
        if self.checkers.as_ref().is_some_and(Vec::is_empty) {
            return bad("--checker needs at least one checker".into());
        }
        match self.workload {
            Workload::Register => {
                if let Some(kind) = self.nemeses.iter().find(|k| k.needs_topic()) {
                    return bad(format!("the {kind} nemesis needs --workload topic"));
                }
            }
            Workload::Topic => {
                if self.checkers.is_some() {
                    return bad(
                        "--checker chooses the register workload's checkers; the topic workload has its own".into()
                    );
                }
                self.topic.validate(self.nodes).map_err(RunError::Config)?;
            }
        }
        Ok(())
    }

    /// Whether the run cuts links (and so needs its nftables table).
    pub fn needs_firewall(&self) -> bool {
        self.nemeses.iter().any(|k| k.needs_firewall())
    }

    fn mix(&self) -> OpMix {
        match self.level {
            // The quorum level refuses cas by design (DESIGN §4).
            Level::Quorum => OpMix::READ_WRITE,
            Level::Eventual | Level::Linearizable => OpMix::WITH_CAS,
        }
    }

    fn effective_serve_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if !self.serve_args.iter().any(|a| a.starts_with(ANTI_ENTROPY_FLAG)) {
            args.push(format!("{ANTI_ENTROPY_FLAG}={}", self.anti_entropy_interval.as_millis()));
        }
        args.extend(self.serve_args.iter().cloned());
        args
    }
}

/// Why a run could not produce a verdict at all.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A setting is out of range.
    #[error("{0}")]
    Config(String),
    /// The run directory could not be prepared or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// nftables could not be set up.
    #[error(transparent)]
    Firewall(#[from] FirewallError),
    /// The cluster could not be started.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The history could not be recorded.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// The topic of a topic-workload run could not be created or did not
    /// get leaders.
    #[error("{0}")]
    TopicSetup(String),
    /// The nodes do not serve the level.
    #[error("the nodes do not serve the {level} level: {message}")]
    LevelNotServed {
        /// The level.
        level: Level,
        /// What they answered.
        message: String,
    },
}

/// A finished run.
#[derive(Debug)]
pub struct RunOutcome {
    /// The verdict.
    pub valid: Validity,
    /// Everything `results.json` says.
    pub results: Results,
    /// The run directory.
    pub dir: PathBuf,
}

/// Runs the harness; see the module docs. `progress` hears one line per
/// notable event; `cancel` ends the run early (healed, stopped, reported as
/// unknown).
pub async fn run(
    config: &RunConfig,
    progress: &(dyn Fn(String) + Sync),
    cancel: &CancellationToken,
) -> Result<RunOutcome, RunError> {
    config.validate()?;
    match config.workload {
        Workload::Register => run_register(config, progress, cancel).await,
        Workload::Topic => crate::topic::run::run_topic(config, progress, cancel).await,
    }
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

/// The register workload's run (module docs, steps 1–6).
async fn run_register(
    config: &RunConfig,
    progress: &(dyn Fn(String) + Sync),
    cancel: &CancellationToken,
) -> Result<RunOutcome, RunError> {
    let began = Instant::now();
    let mut timing_s: BTreeMap<String, f64> = BTreeMap::new();
    let dir = prepare_dir(&config.out)?;
    let checkers = config.checkers();

    let (firewall, mut cluster) = start_cluster(config, &dir, progress).await?;
    probe_level(&cluster, config.level, cancel).await?;
    timing_s.insert("setup".into(), began.elapsed().as_secs_f64());

    // The workload, under the nemesis.
    let clock = RunClock::start_now();
    let recorder = Recorder::create(&dir.join(HISTORY_FILE), clock)?;
    let steps = plan_faults(config, &cluster);
    let generator = Mutex::new(Generator::new(GeneratorConfig {
        keys: config.keys,
        ops_per_key: config.ops_per_key,
        mix: config.mix(),
        seed: config.seed,
    }));
    let workload = WorkloadConfig {
        level: config.level,
        concurrency: config.concurrency,
        op_timeout: config.op_timeout,
        rate_hz: config.rate_hz,
        endpoints: cluster.endpoints(),
        seed: config.seed,
        value_bytes: config.value_bytes,
    };
    progress(format!(
        "running {} s at level {}, nemesis {}, {} workers, seed {}",
        config.time.as_secs_f64(),
        config.level,
        nemesis_names(&config.nemeses),
        config.concurrency,
        config.seed
    ));
    let until = clock.start() + config.time;
    let stop = cancel.child_token();
    let mut errors: Vec<String> = Vec::new();
    let mut reasons: Vec<String> = Vec::new();

    let driver = Driver::new(&mut cluster, firewall.as_ref(), clock);
    let clients = client::run_workload(&workload, &generator, &recorder, until, &stop);
    let FaultPhase { summary, windows, crashes, healed_at: heal_done } =
        under_faults(driver, &steps, clock, &stop, clients, || recorder.counts(), progress, &mut timing_s, &mut errors)
            .await;

    // Let the replicas converge.

    let keys = generator.lock().expect("generator lock").keys_used();
    // For the convergence checker: the last observations, and how long
    // after the heal the replicas agreed (None: they did not).
    let mut converged: Option<(Vec<KeyObservation>, Option<u64>)> = None;
    if !cancel.is_cancelled() && checkers.contains(&CheckerKind::Convergence) {
        progress(format!(
            "waiting up to {} s for {} keys to converge",
            config.converge_timeout.as_secs_f64(),
            keys.len()
        ));
        let (observed, agreed_after) = await_convergence(&cluster, &keys, config.converge_timeout, cancel).await;
        match agreed_after {
            Some(after) => progress(format!("replicas agree on every key {} ms after the heal", after.as_millis())),
            None => progress("replicas still disagree; giving up waiting".into()),
        }
        converged = Some((observed, agreed_after.map(|d| d.as_millis() as u64)));
    }
    timing_s.insert("convergence".into(), heal_done.elapsed().as_secs_f64());

    // Final reads, recorded.
    let final_started = Instant::now();
    if !cancel.is_cancelled() {
        progress(format!("final reads of {} keys at level {}", keys.len(), config.level));
        final_reads(&cluster, config, &recorder, summary.processes, &keys).await?;
    }
    timing_s.insert("final_reads".into(), final_started.elapsed().as_secs_f64());
    let (cluster_members, firewall_table) = teardown(config, cluster, firewall, &mut errors).await;
    let ops = recorder.finish()?;

    // Check.
    let check_started = Instant::now();
    let mut checker_results = CheckerResults::default();
    if checkers.contains(&CheckerKind::Linearizable) && !cancel.is_cancelled() {
        progress(format!("checking linearizability (budget {} s)", config.check_timeout.as_secs_f64()));
        // CPU-bound: on a blocking thread, so an interrupt is still heard.
        let (check_dir, budget) = (dir.clone(), config.check_timeout);
        let check = tokio::task::spawn_blocking(move || check_linearizable(&check_dir, budget));
        checker_results.linearizable = Some(tokio::select! {
            joined = check => joined.unwrap_or_else(|e| unchecked(format!("the checker panicked: {e}"))),
            _ = cancel.cancelled() => unchecked("interrupted".to_string()),
        });
    }
    if let Some((observations, converged_after_ms)) = converged {
        let mut result = convergence::check(&ops, &observations);
        result.converged_after_ms = converged_after_ms;
        checker_results.convergence = Some(result);
    }
    let stale = stale_reads::analyze(&ops);
    timing_s.insert("check".into(), check_started.elapsed().as_secs_f64());

    // Verdict.
    let workload_ops: Vec<&OpRecord> = ops.iter().filter(|op| op.phase == Phase::Workload).collect();
    // A read ends in `info` only when it returned bytes no client wrote (see
    // `client::execute`).
    let unexpected_values =
        ops.iter().filter(|op| op.f == OpKind::Read && op.outcome == EventType::Info && op.note.is_some()).count()
            as u64;
    let mut verdicts: Vec<Validity> = Vec::new();
    if let Some(lin) = &checker_results.linearizable {
        verdicts.push(lin.valid);
    }
    if let Some(conv) = &checker_results.convergence {
        verdicts.push(conv.valid);
    }
    if unexpected_values > 0 {
        reasons.push(format!("{unexpected_values} reads returned values no client wrote"));
        verdicts.push(Validity::Invalid);
    }
    let any_ok = workload_ops.iter().any(|op| op.outcome == EventType::Ok);
    common_verdicts(cancel.is_cancelled(), any_ok, &errors, &crashes, &mut reasons, &mut verdicts);
    if checkers.is_empty() {
        verdicts.push(Validity::Unknown);
    }
    let valid = Validity::all(verdicts);
    timing_s.insert("total".into(), began.elapsed().as_secs_f64());

    let mut files = BTreeMap::new();
    files.insert("history".to_string(), HISTORY_FILE.to_string());
    files.insert("results".to_string(), RESULTS_FILE.to_string());
    files.insert("index".to_string(), INDEX_FILE.to_string());
    if let Some(html) = checker_results.linearizable.as_ref().and_then(|l| l.html.clone()) {
        files.insert("checker_html".to_string(), html);
    }
    let results = Results {
        valid,
        workload: Workload::Register.name().to_string(),
        level: Some(config.level.to_string()),
        nemesis: config.nemeses.iter().map(|k| k.name().to_string()).collect(),
        checkers: checkers.iter().map(|c| c.name().to_string()).collect(),
        ops: ops.len() as u64,
        ok: count(&ops, EventType::Ok),
        fail: count(&ops, EventType::Fail),
        info: count(&ops, EventType::Info),
        by_f: counts_by_f(&workload_ops),
        final_reads: counts_of(ops.iter().filter(|op| op.phase == Phase::FinalRead)),
        latency_ms: latency_by_f(&workload_ops),
        checker: checker_results,
        stale_reads: Some(stale),
        topic: None,
        nemesis_windows: window_reports(&windows),
        node_crashes: crash_reports(&crashes),
        unexpected_values,
        reasons,
        errors,
        config: run_info(config, cluster_members, firewall_table),
        timing_s,
        files,
    };
    let io = |path: PathBuf| move |source| RunError::Io { path, source };
    report::write_results(&dir, &results).map_err(io(dir.join(RESULTS_FILE)))?;
    report::write_index(&dir, &results, &Charts::register(&ops)).map_err(io(dir.join(INDEX_FILE)))?;
    Ok(RunOutcome { valid, results, dir })
}

pub(crate) fn nemesis_names(kinds: &[NemesisKind]) -> String {
    if kinds.is_empty() {
        "none".into()
    } else {
        kinds.iter().map(|k| k.name()).collect::<Vec<_>>().join(",")
    }
}

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

/// Writes once at `level` until a node accepts it: UNIMPLEMENTED and other
/// refusals are errors, "unavailable" is retried (a Raft cluster may still
/// be electing its first leader) until [`PROBE_TIMEOUT_MS`].
async fn probe_level(cluster: &Cluster, level: Level, cancel: &CancellationToken) -> Result<(), RunError> {
    let client = client::client_for(0, &cluster.endpoints())
        .map_err(|e| RunError::LevelNotServed { level, message: e.to_string() })?;
    let deadline = Instant::now() + Duration::from_millis(PROBE_TIMEOUT_MS);
    loop {
        let opts = CallOptions::new(level).timeout(Duration::from_secs(2));
        let last = match client.set(PROBE_KEY.as_bytes(), b"0", opts).await {
            Ok(_) => return Ok(()),
            Err(e @ (ClientError::Unavailable(_) | ClientError::Indeterminate(_))) => e.to_string(),
            Err(e) => return Err(RunError::LevelNotServed { level, message: e.to_string() }),
        };
        if Instant::now() >= deadline || cancel.is_cancelled() {
            return Err(RunError::LevelNotServed {
                level,
                message: format!("still unavailable after {PROBE_TIMEOUT_MS} ms: {last}"),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Emits a count line every [`PROGRESS_INTERVAL_MS`] until `done`.
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

/// Reads every key on every node (its own cell, at the eventual level).
async fn observe(cluster: &Cluster, keys: &[String]) -> Vec<KeyObservation> {
    let per_node = futures::future::join_all(cluster.ids().into_iter().map(|id| async move {
        let reads: Vec<NodeRead> = match cluster.client(id) {
            Err(e) => keys.iter().map(|_| NodeRead::Unreadable(e.to_string())).collect(),
            Ok(client) => {
                let opts = CallOptions::new(Level::Eventual).timeout(Duration::from_millis(CONVERGE_READ_TIMEOUT_MS));
                let mut reads = Vec::with_capacity(keys.len());
                for key in keys {
                    reads.push(match client.get(key.as_bytes(), opts).await {
                        Ok(None) => NodeRead::Cell(NodeCell { value: None, version: None }),
                        Ok(Some(found)) => match client::parse_value(&found.value) {
                            Some(v) => NodeRead::Cell(NodeCell { value: Some(v), version: Some(found.version.into()) }),
                            None => NodeRead::Garbage(format!("{:?}", String::from_utf8_lossy(&found.value))),
                        },
                        Err(e) => NodeRead::Unreadable(e.to_string()),
                    });
                }
                reads
            }
        };
        (id, reads)
    }))
    .await;
    let mut observations: Vec<KeyObservation> =
        keys.iter().map(|key| KeyObservation { key: key.clone(), nodes: BTreeMap::new() }).collect();
    for (id, reads) in per_node {
        for (obs, read) in observations.iter_mut().zip(reads) {
            obs.nodes.insert(id, read);
        }
    }
    observations
}

/// Polls every node until all agree on every key or `patience` runs out;
/// returns the last observations and, if they agreed, how long it took.
async fn await_convergence(
    cluster: &Cluster,
    keys: &[String],
    patience: Duration,
    cancel: &CancellationToken,
) -> (Vec<KeyObservation>, Option<Duration>) {
    let started = Instant::now();
    loop {
        let observations = observe(cluster, keys).await;
        if observations.iter().all(KeyObservation::agrees) {
            return (observations, Some(started.elapsed()));
        }
        if started.elapsed() >= patience || cancel.is_cancelled() {
            return (observations, None);
        }
        tokio::time::sleep(Duration::from_millis(CONVERGE_POLL_MS)).await;
    }
}

/// One read per key at the run's level, each by a fresh process (numbered
/// from `first_process`), retried up to [`FINAL_READ_ATTEMPTS`] times.
async fn final_reads(
    cluster: &Cluster,
    config: &RunConfig,
    recorder: &Recorder,
    first_process: u64,
    keys: &[String],
) -> Result<(), RunError> {
    let timeout = config.op_timeout.max(Duration::from_millis(FINAL_READ_TIMEOUT_MIN_MS));
    let endpoints = cluster.endpoints();
    let mut process = first_process;
    for key in keys {
        for _ in 0..FINAL_READ_ATTEMPTS {
            let client = client::client_for(process, &endpoints)
                .map_err(|e| RunError::LevelNotServed { level: config.level, message: e.to_string() })?;
            let op = OpSpec { f: OpKind::Read, key: key.clone(), value: Value::Null };
            recorder.invoke(process, OpKind::Read, key, Value::Null, Phase::FinalRead)?;
            let completion = client::execute(&client, config.level, &op, timeout, config.value_bytes).await;
            let done = completion.kind == EventType::Ok;
            recorder.complete(process, completion)?;
            process += 1;
            if done {
                break;
            }
        }
    }
    Ok(())
}

/// A linearizability result for a check that did not finish.
fn unchecked(error: String) -> LinearizableResult {
    LinearizableResult {
        valid: Validity::Unknown,
        result: "error".into(),
        ops: 0,
        elapsed_ms: 0,
        explanation: None,
        html: None,
        error: Some(error),
    }
}

/// Runs the linearizability checker on the history file; for a violation
/// writes the checker's page next to it.
fn check_linearizable(dir: &Path, budget: Duration) -> LinearizableResult {
    match checker::check_file(Format::Jsonl, &dir.join(HISTORY_FILE), budget) {
        Err(e) => unchecked(e.to_string()),
        Ok(verdict) => {
            let valid = match verdict.result {
                Outcome::Linearizable => Validity::Valid,
                Outcome::NotLinearizable => Validity::Invalid,
                Outcome::Unknown => Validity::Unknown,
            };
            let mut error = None;
            let html = if verdict.result == Outcome::NotLinearizable {
                match verdict.write_html(&dir.join(CHECKER_HTML_FILE)) {
                    Ok(()) => Some(CHECKER_HTML_FILE.to_string()),
                    Err(e) => {
                        error = Some(e.to_string());
                        None
                    }
                }
            } else {
                None
            };
            LinearizableResult {
                valid,
                result: verdict.result.to_string(),
                ops: verdict.ops,
                elapsed_ms: verdict.elapsed.as_millis() as u64,
                explanation: verdict.explanation.as_ref().map(ToString::to_string),
                html,
                error,
            }
        }
    }
}

fn count(ops: &[OpRecord], outcome: EventType) -> u64 {
    ops.iter().filter(|op| op.outcome == outcome).count() as u64
}

fn counts_of<'a>(ops: impl Iterator<Item = &'a OpRecord>) -> Counts {
    let mut counts = Counts::default();
    for op in ops {
        counts.ops += 1;
        counts.add(op.outcome);
    }
    counts
}

fn counts_by_f(ops: &[&OpRecord]) -> BTreeMap<String, Counts> {
    let mut out: BTreeMap<String, Counts> = BTreeMap::new();
    for op in ops {
        let c = out.entry(op.f.to_string()).or_default();
        c.ops += 1;
        c.add(op.outcome);
    }
    out
}

fn latency_by_f(ops: &[&OpRecord]) -> BTreeMap<String, Percentiles> {
    let mut samples: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for op in ops.iter().filter(|op| op.outcome == EventType::Ok) {
        samples.entry(op.f.to_string()).or_default().push(op.latency_ms());
    }
    samples.into_iter().map(|(f, s)| (f, Percentiles::of(s))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves: checker lists parse (deduplicated, sorted), unknown names are
    // refused, and each level has its documented default.
    #[test]
    fn checkers() {
        assert_eq!(
            CheckerKind::parse_list("convergence,linearizable,convergence").unwrap(),
            vec![CheckerKind::Linearizable, CheckerKind::Convergence]
        );
        assert!(CheckerKind::parse_list("serializable").is_err());
        assert_eq!(CheckerKind::defaults(Level::Eventual), vec![CheckerKind::Convergence]);
        assert_eq!(CheckerKind::defaults(Level::Quorum), vec![CheckerKind::Linearizable]);
        assert_eq!(CheckerKind::defaults(Level::Linearizable), vec![CheckerKind::Linearizable]);
    }

    // Proves: a run directory with files in it is refused; an empty or new
    // one is accepted.
    #[test]
    fn run_directory_must_be_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert!(prepare_dir(&dir.path().join("new")).is_ok());
        std::fs::write(dir.path().join("new/history.jsonl"), "").unwrap();
        assert!(matches!(prepare_dir(&dir.path().join("new")), Err(RunError::Config(_))));
    }

    // Proves: the harness sets the anti-entropy period unless the user's
    // serve args do, so `kv serve` never sees the flag twice.
    #[test]
    fn anti_entropy_flag_only_once() {
        let mut config = RunConfig {
            workload: Workload::Register,
            topic: TopicOptions::defaults(3),
            level: Level::Eventual,
            nemeses: vec![],
            time: Duration::from_secs(1),
            nodes: 3,
            concurrency: 1,
            keys: 1,
            ops_per_key: 1,
            rate_hz: 1.0,
            seed: 0,
            kv: "kv".into(),
            checkers: None,
            out: "out".into(),
            serve_args: vec!["--no-hinted-handoff".into()],
            op_timeout: Duration::from_secs(1),
            fault_interval: Duration::from_secs(1),
            heal_interval: Duration::from_secs(1),
            converge_timeout: Duration::from_secs(1),
            check_timeout: Duration::from_secs(1),
            anti_entropy_interval: Duration::from_millis(700),
            keep_data: false,
            value_bytes: 0,
        };
        assert_eq!(config.effective_serve_args(), ["--anti-entropy-interval-ms=700", "--no-hinted-handoff"]);
        config.serve_args = vec!["--anti-entropy-interval-ms=50".into()];
        assert_eq!(config.effective_serve_args(), ["--anti-entropy-interval-ms=50"]);
        assert!(config.validate().is_ok());
        config.nodes = 0;
        assert!(config.validate().is_err());
    }
}
