//! The register workload's run (`--workload register`), start to finish:
//!
//! 1. start a fresh cluster of `kv serve` processes in the run directory
//!    (and this run's nftables table, if partitions are asked for);
//! 2. probe that the nodes serve the level, or each level of a mixed run
//!    (an UNIMPLEMENTED level is an error, not a vacuously valid run);
//! 3. run the workload for `--time` while the nemesis follows its schedule
//!    (quiet, fault, heal, fault, …);
//! 4. heal everything; for the convergence checker, poll every node's copy
//!    of every key until they agree (or the patience runs out);
//! 5. final reads: one read per key at the run's level (a mixed run's:
//!    [`super::RegisterLevel::final_read_level`]), recorded;
//! 6. stop the cluster, check the history, write `results.json` and
//!    `index.html`.
//!
//! Steps 1, 3 (the nemesis and its heal), 6 (teardown, the verdict's common
//! reasons, the report's files) are the shared [`super::phases`]; the level
//! probe, convergence, final reads and the register checkers are here.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use capkv::client::{CallOptions, ClientError};
use capkv::Level;
use tokio_util::sync::CancellationToken;

use super::config::{CheckerKind, RunConfig, RunError, RunOutcome, Workload};
use super::phases::{
    common_verdicts, crash_reports, nemesis_names, plan_faults, prepare_dir, report_files, run_info, start_cluster,
    teardown, under_faults, window_reports, write_report, FaultPhase, PROBE_TIMEOUT_MS,
};
use crate::checker::convergence::{self, KeyObservation, NodeCell, NodeRead};
use crate::checker::{self, stale_reads, Format, Outcome};
use crate::client::{self, WorkloadConfig};
use crate::cluster::Cluster;
use crate::generator::{Generator, GeneratorConfig, OpSpec};
use crate::history::{EventType, OpKind, Value};
use crate::nemesis::driver::Driver;
use crate::record::{Counts, OpRecord, Phase, Recorder, RunClock};
use crate::report::{Charts, CheckerResults, LinearizableResult, Results, CHECKER_HTML_FILE, HISTORY_FILE};
use crate::stats::Percentiles;
use crate::validity::Validity;

/// Pause between convergence polls.
pub const CONVERGE_POLL_MS: u64 = 250;
/// Deadline of one convergence read.
pub const CONVERGE_READ_TIMEOUT_MS: u64 = 2_000;
/// Attempts per key for a final read that fails.
pub const FINAL_READ_ATTEMPTS: u32 = 3;
/// Least deadline of a final read.
pub const FINAL_READ_TIMEOUT_MIN_MS: u64 = 5_000;
/// The key the level probe writes (not a workload key).
pub const PROBE_KEY: &str = "jepsen-probe";

/// Runs the register workload; see the module docs. `progress` hears one
/// line per notable event; `cancel` ends the run early (healed, stopped,
/// reported as unknown). Refuses a config that does not validate or asks
/// for another workload.
pub async fn run_register(
    config: &RunConfig,
    progress: &(dyn Fn(String) + Sync),
    cancel: &CancellationToken,
) -> Result<RunOutcome, RunError> {
    config.validate_for(Workload::Register)?;
    let began = Instant::now();
    let mut timing_s: BTreeMap<String, f64> = BTreeMap::new();
    let dir = prepare_dir(&config.out)?;
    let checkers = config.checkers();

    let (firewall, mut cluster) = start_cluster(config, &dir, progress).await?;
    for &level in config.level.levels() {
        probe_level(&cluster, level, cancel).await?;
    }
    timing_s.insert("setup".into(), began.elapsed().as_secs_f64());

    // The workload, under the nemesis.
    let clock = RunClock::start_now();
    let recorder = Recorder::create(&dir.join(HISTORY_FILE), clock)?;
    let steps = plan_faults(config, &cluster);
    let generator = Mutex::new(Generator::new(GeneratorConfig {
        keys: config.keys,
        ops_per_key: config.ops_per_key,
        mix: config.level.op_mix(),
        levels: config.level.levels(),
        seed: config.seed,
    }));
    let workload = WorkloadConfig {
        concurrency: config.concurrency,
        op_timeout: config.op_timeout,
        rate_hz: config.rate_hz,
        endpoints: cluster.endpoints(),
        connect: cluster.connect_options().clone(),
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
        progress(format!("final reads of {} keys at level {}", keys.len(), config.level.final_read_level()));
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

    let mut files = report_files();
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
        by_level: counts_by_level(&workload_ops),
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
    write_report(&dir, &results, &Charts::register(&ops))?;
    Ok(RunOutcome { valid, results, dir })
}

/// Writes once at `level` until a node accepts it: UNIMPLEMENTED and other
/// refusals are errors, "unavailable" is retried (a Raft cluster may still
/// be electing its first leader) until [`PROBE_TIMEOUT_MS`].
async fn probe_level(cluster: &Cluster, level: Level, cancel: &CancellationToken) -> Result<(), RunError> {
    let client = client::client_for(0, &cluster.endpoints(), cluster.connect_options())
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
    let level = config.level.final_read_level();
    let endpoints = cluster.endpoints();
    let mut process = first_process;
    for key in keys {
        for _ in 0..FINAL_READ_ATTEMPTS {
            let client = client::client_for(process, &endpoints, cluster.connect_options())
                .map_err(|e| RunError::LevelNotServed { level, message: e.to_string() })?;
            let op = OpSpec { f: OpKind::Read, key: key.clone(), value: Value::Null, level };
            recorder.invoke(process, OpKind::Read, key, Value::Null, level, Phase::FinalRead)?;
            let completion = client::execute(&client, &op, timeout, config.value_bytes).await;
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

/// Workload operations by level (one entry unless the run mixes levels).
fn counts_by_level(ops: &[&OpRecord]) -> BTreeMap<String, Counts> {
    let mut out: BTreeMap<String, Counts> = BTreeMap::new();
    for op in ops {
        let c = out.entry(op.level.to_string()).or_default();
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
    use crate::run::config::tests::sample;

    // Proves: the register run refuses a config that does not validate or
    // names the topic workload, before it creates the run directory or
    // starts a node.
    #[test]
    fn refuses_invalid_or_topic_config() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let refused = |config: RunConfig| {
            let outcome = runtime.block_on(run_register(&config, &|_| {}, &CancellationToken::new()));
            assert!(matches!(outcome, Err(RunError::Config(_))), "{outcome:?}");
            assert!(!config.out.exists(), "{} was created", config.out.display());
        };
        refused(RunConfig { out: dir.path().join("topic"), ..sample(Workload::Topic) });
        refused(RunConfig { out: dir.path().join("no-nodes"), nodes: 0, ..sample(Workload::Register) });
    }
}
