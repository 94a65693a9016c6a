//! One topic-workload run, start to finish — the register run's steps
//! (`crate::run::register`) with a topic instead of keys, on the shared
//! [`crate::run::phases`]:
//!
//! 1. start a fresh cluster (and the nftables table if faults cut links);
//! 2. create the topic and wait until every partition has a leader and a
//!    full ISR (a topic that cannot be created is an error, never a
//!    vacuously valid run);
//! 3. run the producers for `--time` while the nemesis follows its
//!    schedule (`kill-isr` acts on the topic);
//! 4. heal everything; wait up to `--converge-timeout` for the partitions
//!    to settle (see [`super::consume`]);
//! 5. read every partition from offset 0 to its high watermark, recorded
//!    as polls;
//! 6. stop the cluster, check ([`super::checker`]), write `results.json`
//!    and `index.html`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use capkv::client::topics::{TopicClient, TopicClientError, TopicSpec};
use tokio_util::sync::CancellationToken;

use super::checker::{self, TopicCheckResult};
use super::consume::{await_settled, consume_all, SettleOutcome};
use super::history::{PollOp, SendOp};
use super::recorder::TopicRecorder;
use super::workload::{run_producers, ProduceConfig};
use super::TOPIC_NAME;
use crate::history::EventType;
use crate::nemesis::driver::Driver;
use crate::nemesis::kill_isr::TopicTarget;
use crate::record::{Counts, RunClock};
use crate::report::{ChartOp, Charts, CheckerResults, Results, TopicReport, HISTORY_FILE};
use crate::run::config::{RunConfig, RunError, RunOutcome, Workload};
use crate::run::phases::{
    common_verdicts, crash_reports, nemesis_names, plan_faults, prepare_dir, report_files, run_info, start_cluster,
    teardown, under_faults, window_reports, write_report, FaultPhase, PROBE_TIMEOUT_MS,
};
use crate::stats::Percentiles;
use crate::validity::Validity;

/// Pause between attempts to create the topic.
pub const CREATE_RETRY_MS: u64 = 200;

/// Runs the topic workload; see the module docs. `progress` hears one line
/// per notable event; `cancel` ends the run early (healed, stopped,
/// reported as unknown). Refuses a config that does not validate or asks
/// for another workload.
pub async fn run_topic(
    config: &RunConfig,
    progress: &(dyn Fn(String) + Sync),
    cancel: &CancellationToken,
) -> Result<RunOutcome, RunError> {
    config.validate_for(Workload::Topic)?;
    let began = Instant::now();
    let mut timing_s: BTreeMap<String, f64> = BTreeMap::new();
    let dir = prepare_dir(&config.out)?;
    let (firewall, mut cluster) = start_cluster(config, &dir, progress).await?;
    let endpoints = cluster.endpoints();
    let connect = cluster.connect_options().clone();
    let client = |what: &str| {
        TopicClient::connect(&endpoints, &connect).map_err(|e| RunError::TopicSetup(format!("{what}: {e}")))
    };
    let admin = client("topic client")?;
    create_topic(&admin, config, cancel).await?;
    let ready = await_settled(&admin, TOPIC_NAME, Duration::from_millis(PROBE_TIMEOUT_MS), cancel).await;
    if ready.settled_after_ms.is_none() {
        return Err(RunError::TopicSetup(format!(
            "the partitions of {TOPIC_NAME} did not all get a leader and a full ISR within {PROBE_TIMEOUT_MS} ms: {:?}{}",
            ready.partitions,
            ready.error.map(|e| format!(" ({e})")).unwrap_or_default()
        )));
    }
    let o = &config.topic;
    progress(format!(
        "topic {TOPIC_NAME}: {} partitions, replication factor {}, min.insync.replicas {}, unclean leader election {}",
        o.partitions,
        o.replication_factor,
        o.min_insync_replicas,
        if o.unclean_leader_election { "on" } else { "off" }
    ));
    timing_s.insert("setup".into(), began.elapsed().as_secs_f64());

    // The producers, under the nemesis.
    let clock = RunClock::start_now();
    let recorder = TopicRecorder::create(&dir.join(HISTORY_FILE), clock)?;
    let steps = plan_faults(config, &cluster);
    let produce = ProduceConfig {
        topic: TOPIC_NAME.to_string(),
        partitions: o.partitions,
        acks: o.acks,
        concurrency: config.concurrency,
        op_timeout: config.op_timeout,
        rate_hz: config.rate_hz,
        endpoints: endpoints.clone(),
        connect: connect.clone(),
        seed: config.seed,
    };
    progress(format!(
        "running {} s of acks={} producers, nemesis {}, {} workers, seed {}",
        config.time.as_secs_f64(),
        o.acks.name(),
        nemesis_names(&config.nemeses),
        config.concurrency,
        config.seed
    ));
    let until = clock.start() + config.time;
    let stop = cancel.child_token();
    let mut errors: Vec<String> = Vec::new();
    let mut reasons: Vec<String> = Vec::new();
    let target =
        TopicTarget { client: client("nemesis client")?, topic: TOPIC_NAME.into(), unclean: o.unclean_leader_election };
    let driver = Driver::new(&mut cluster, firewall.as_ref(), clock).with_topic(&target);
    let producers = run_producers(&produce, &recorder, until, &stop);
    let FaultPhase { summary, windows, crashes, .. } = under_faults(
        driver,
        &steps,
        clock,
        &stop,
        producers,
        || recorder.counts(),
        progress,
        &mut timing_s,
        &mut errors,
    )
    .await;

    // Settle, read back.
    let settle_started = Instant::now();
    let mut settle = SettleOutcome::default();
    let reader = client("consumer client")?;
    if !cancel.is_cancelled() {
        progress(format!("waiting up to {} s for every partition to settle", config.converge_timeout.as_secs_f64()));
        settle = await_settled(&reader, TOPIC_NAME, config.converge_timeout, cancel).await;
        match settle.settled_after_ms {
            Some(ms) => progress(format!("every partition settled {ms} ms after the heal")),
            None => progress("not every partition settled; reading anyway".into()),
        }
    }
    timing_s.insert("convergence".into(), settle_started.elapsed().as_secs_f64());
    let read_started = Instant::now();
    if !cancel.is_cancelled() {
        progress(format!("reading {} partitions from offset 0", o.partitions));
        consume_all(&reader, TOPIC_NAME, o.partitions, &recorder, summary.processes, cancel).await?;
    }
    timing_s.insert("final_reads".into(), read_started.elapsed().as_secs_f64());
    let (cluster_members, firewall_table) = teardown(config, cluster, firewall, &mut errors).await;
    let (sends, polls) = recorder.finish()?;

    // Check.
    let check_started = Instant::now();
    let checked = checker::check(&sends, &polls);
    timing_s.insert("check".into(), check_started.elapsed().as_secs_f64());
    let mut verdicts: Vec<Validity> = Vec::new();
    let topic_result: Option<TopicCheckResult> = match checked {
        Ok(result) => {
            verdicts.push(result.valid);
            if result.valid == Validity::Unknown && !result.incomplete_partitions.is_empty() {
                reasons.push(format!(
                    "partitions {:?} could not be read to their high watermark",
                    result.incomplete_partitions
                ));
            }
            if result.violations() > 0 {
                reasons.push(format!(
                    "{} acknowledged messages lost, {} duplicated, {} reordered, {} at a wrong offset, {} unexpected records",
                    result.lost.count,
                    result.duplicated.count,
                    result.reordered.count,
                    result.wrong_offset.count,
                    result.unexpected.count
                ));
            }
            Some(result)
        }
        Err(e) => {
            errors.push(format!("topic checker: {e}"));
            None
        }
    };
    let any_ok = sends.iter().any(|s| s.outcome == EventType::Ok);
    common_verdicts(cancel.is_cancelled(), any_ok, &errors, &crashes, &mut reasons, &mut verdicts);
    let valid = Validity::all(verdicts);
    timing_s.insert("total".into(), began.elapsed().as_secs_f64());

    let files = report_files();
    let all = counts(sends.iter().map(|s| s.outcome).chain(polls.iter().map(|p| p.outcome)));
    let results = Results {
        valid,
        workload: Workload::Topic.name().to_string(),
        level: None,
        nemesis: config.nemeses.iter().map(|k| k.name().to_string()).collect(),
        checkers: vec!["topic".to_string()],
        ops: all.ops,
        ok: all.ok,
        fail: all.fail,
        info: all.info,
        by_f: BTreeMap::from([("send".to_string(), counts(sends.iter().map(|s| s.outcome)))]),
        by_level: BTreeMap::new(),
        final_reads: counts(polls.iter().map(|p| p.outcome)),
        latency_ms: BTreeMap::from([(
            "send".to_string(),
            Percentiles::of(sends.iter().filter(|s| s.outcome == EventType::Ok).map(SendOp::latency_ms).collect()),
        )]),
        unexpected_values: topic_result.as_ref().map_or(0, |r| r.unexpected.count),
        checker: CheckerResults { topic: topic_result, ..CheckerResults::default() },
        stale_reads: None,
        topic: Some(TopicReport {
            name: TOPIC_NAME.to_string(),
            partitions: o.partitions,
            replication_factor: o.replication_factor,
            min_insync_replicas: o.min_insync_replicas,
            unclean_leader_election: o.unclean_leader_election,
            replica_lag_time_max_ms: o.replica_lag_time_max.as_millis() as u64,
            acks: o.acks.name().to_string(),
            settle,
        }),
        nemesis_windows: window_reports(&windows),
        node_crashes: crash_reports(&crashes),
        reasons,
        errors,
        config: run_info(config, cluster_members, firewall_table),
        timing_s,
        files,
    };
    write_report(&dir, &results, &charts(&sends, &polls))?;
    Ok(RunOutcome { valid, results, dir })
}

/// Creates the topic, retrying while no node can (a Raft cluster electing
/// its first leader) until [`PROBE_TIMEOUT_MS`]. "Exists" after a retry is
/// success: an earlier attempt of ours created it.
async fn create_topic(client: &TopicClient, config: &RunConfig, cancel: &CancellationToken) -> Result<(), RunError> {
    let o = &config.topic;
    let spec = TopicSpec {
        min_insync_replicas: o.min_insync_replicas,
        unclean_leader_election: o.unclean_leader_election,
        replica_lag_time_max_ms: o.replica_lag_time_max.as_millis() as u64,
        ..TopicSpec::new(o.partitions, o.replication_factor)
    };
    let deadline = Instant::now() + Duration::from_millis(PROBE_TIMEOUT_MS);
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let last = match client.create_topic(TOPIC_NAME, spec.clone()).await {
            Ok(_) => return Ok(()),
            Err(TopicClientError::TopicExists(_)) if attempts > 1 => return Ok(()),
            Err(e @ (TopicClientError::Unavailable(_) | TopicClientError::Indeterminate(_))) => e.to_string(),
            Err(e) => return Err(RunError::TopicSetup(format!("cannot create topic {TOPIC_NAME}: {e}"))),
        };
        if Instant::now() >= deadline || cancel.is_cancelled() {
            return Err(RunError::TopicSetup(format!(
                "cannot create topic {TOPIC_NAME} within {PROBE_TIMEOUT_MS} ms: {last}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(CREATE_RETRY_MS)).await;
    }
}

fn counts(outcomes: impl Iterator<Item = EventType>) -> Counts {
    let mut c = Counts::default();
    for outcome in outcomes {
        c.ops += 1;
        c.add(outcome);
    }
    c
}

/// The page's charts: send latency; throughput of sends and polls.
fn charts(sends: &[SendOp], polls: &[PollOp]) -> Charts {
    let of_sends: Vec<ChartOp> = sends
        .iter()
        .map(|s| ChartOp { invoke_ns: s.invoke_ns, complete_ns: s.complete_ns, outcome: s.outcome })
        .collect();
    let of_polls =
        polls.iter().map(|p| ChartOp { invoke_ns: p.invoke_ns, complete_ns: p.complete_ns, outcome: p.outcome });
    Charts {
        latency: vec![(format!("send ({} operations)", of_sends.len()), of_sends.clone())],
        throughput: of_sends.into_iter().chain(of_polls).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::config::tests::sample;

    // Proves: the topic run refuses a config that does not validate or names
    // the register workload, before it creates the run directory or starts
    // a node.
    #[test]
    fn refuses_invalid_or_register_config() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let refused = |config: RunConfig| {
            let outcome = runtime.block_on(run_topic(&config, &|_| {}, &CancellationToken::new()));
            assert!(matches!(outcome, Err(RunError::Config(_))), "{outcome:?}");
            assert!(!config.out.exists(), "{} was created", config.out.display());
        };
        refused(RunConfig { out: dir.path().join("register"), ..sample(Workload::Register) });
        let mut too_few_nodes = sample(Workload::Topic);
        too_few_nodes.topic.replication_factor = 4;
        refused(RunConfig { out: dir.path().join("rf"), ..too_few_nodes });
    }
}
