//! The `jepsen` subcommand of `kv-jepsen` (also `kv jepsen …`): parses the
//! harness's command line, runs the workload it names on a current-thread
//! runtime, prints progress on stderr and the verdict on stdout, and maps
//! the verdict to the exit status (0 valid, 1 invalid, 2 unknown or error).
//! It is the one place that knows both runs: the register run
//! ([`capkv_jepsen::run::register`]) and the topic run
//! ([`capkv_jepsen::topic::run`]).
//!
//! Ctrl-C or SIGTERM ends the run early: it heals, stops the nodes, deletes
//! the nftables table and still writes the report (verdict unknown). A
//! second signal stops at once; the nodes and the table are still removed
//! (their `Drop`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use capkv::client::topics::Acks;
use capkv::Level;
use capkv_jepsen::nemesis::NemesisKind;
use capkv_jepsen::run::{self, CheckerKind, RegisterLevel, RunConfig, RunError, RunOutcome, Workload};
use capkv_jepsen::topic::TopicOptions;
use capkv_jepsen::validity::Validity;

/// `--op-timeout` of the register workload unless given.
const REGISTER_OP_TIMEOUT_DEFAULT: Duration = Duration::from_secs(1);
/// `--op-timeout` of the topic workload unless given: a send waits for
/// every in-sync replica and may span a leader election (3 s to notice a
/// dead leader), so it gets longer before its outcome is called unknown.
const TOPIC_OP_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);
use tokio_util::sync::CancellationToken;

#[derive(Debug, clap::Args)]
pub struct JepsenArgs {
    /// What the clients do: register (reads, writes, cas on keys at
    /// --level) or topic (producers send unique messages to a topic; every
    /// partition is read back after the heal).
    #[arg(long, default_value = "register", value_parser = Workload::parse)]
    workload: Workload,

    /// Consistency level of the operations (register workload; required
    /// there): eventual, quorum or linearizable for every operation; mixed
    /// (each read, write and cas at quorum or linearizable, drawn per
    /// operation, on the same keys) or mixed-eventual (eventual, quorum or
    /// linearizable).
    #[arg(long, value_parser = RegisterLevel::parse)]
    level: Option<RegisterLevel>,

    /// Faults: a comma-separated list of kill, pause, partition, clock,
    /// membership (replace a member: remove it, add a new node; register
    /// workload, 3+ nodes), kill-isr (topic workload), or none.
    #[arg(long, value_parser = NemesisKind::parse_list)]
    nemesis: std::vec::Vec<NemesisKind>,

    /// How long clients run, e.g. 60s, 2m.
    #[arg(long, value_parser = capkv::cli::parse_duration)]
    time: Duration,

    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,

    /// Number of concurrent client processes.
    #[arg(long, default_value_t = 10)]
    concurrency: usize,

    /// Number of keys in use at a time.
    #[arg(long, default_value_t = 20)]
    keys: usize,

    /// Operations on a key before it is replaced by a fresh one (bounds the
    /// linearizability search per key).
    #[arg(long, default_value_t = 200)]
    ops_per_key: u64,

    /// Target rate of all clients together, in operations per second.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,

    /// Seed of every random choice (workload, faults); random if not given
    /// (printed either way).
    #[arg(long)]
    seed: Option<u64>,

    /// The kv binary [default: kv next to kv-jepsen].
    #[arg(long, value_name = "PATH")]
    kv: Option<PathBuf>,

    /// Checkers, comma-separated: linearizable, convergence [default:
    /// convergence for eventual and mixed-eventual, linearizable for
    /// quorum, linearizable and mixed].
    #[arg(long, value_parser = CheckerKind::parse_list)]
    checker: Option<std::vec::Vec<CheckerKind>>,

    /// Run directory (created; must be empty).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,

    /// Extra argument for every `kv serve`, repeatable, e.g.
    /// --serve-arg=--unsafe-skip-read-impose.
    #[arg(long = "serve-arg", value_name = "ARG", allow_hyphen_values = true)]
    serve_args: Vec<String>,

    /// TLS on every node port (client and peer), with a throwaway CA the
    /// harness generates; the clients and nemeses use it too.
    #[arg(long)]
    tls: bool,

    /// Deadline of one client operation [default: 1s; topic workload: 5s].
    #[arg(long, value_parser = capkv::cli::parse_duration)]
    op_timeout: Option<Duration>,

    /// Length of each fault window.
    #[arg(long, default_value = "5s", value_parser = capkv::cli::parse_duration)]
    fault_interval: Duration,

    /// Length of the quiet window before each fault (and at the start).
    #[arg(long, default_value = "5s", value_parser = capkv::cli::parse_duration)]
    heal_interval: Duration,

    /// How long to wait after the heal for replicas to agree (convergence
    /// checker).
    #[arg(long, default_value = "30s", value_parser = capkv::cli::parse_duration)]
    converge_timeout: Duration,

    /// Budget of the linearizability search; beyond it the answer is
    /// unknown.
    #[arg(long, default_value = "120s", value_parser = capkv::cli::parse_duration)]
    check_timeout: Duration,

    /// The nodes' anti-entropy period (`kv serve --anti-entropy-interval-ms`)
    /// unless --serve-arg sets it.
    #[arg(long, default_value = "1s", value_parser = capkv::cli::parse_duration)]
    anti_entropy_interval: Duration,

    /// Keep the nodes' data directories (DIR/nodes/nN/data) after the run.
    #[arg(long)]
    keep_data: bool,

    /// Register workload: pad every written value to this many bytes
    /// (large values exercise the byte bounds of replication batches,
    /// hints and anti-entropy); 0 writes plain decimal numbers.
    #[arg(long, default_value_t = 0)]
    value_bytes: usize,

    /// Topic workload: partitions of the topic [default: 3].
    #[arg(long, help_heading = "Topic workload")]
    topic_partitions: Option<u32>,

    /// Topic workload: replicas per partition [default: min(3, nodes)].
    #[arg(long, help_heading = "Topic workload")]
    replication_factor: Option<u32>,

    /// Topic workload: min.insync.replicas [default: min(2, replication
    /// factor)].
    #[arg(long, help_heading = "Topic workload")]
    min_insync: Option<u32>,

    /// Topic workload: let the controller elect a replica outside the ISR
    /// when every ISR member is down (acknowledged records may be lost).
    #[arg(long, help_heading = "Topic workload")]
    unclean_leader_election: bool,

    /// Topic workload: the producers' acks, 0, 1 or all [default: all].
    #[arg(long, help_heading = "Topic workload")]
    acks: Option<Acks>,

    /// Topic workload: the topic's replica.lag.time.max.ms, how long a
    /// follower may lag before it leaves the ISR [default: 2s].
    #[arg(long, value_parser = capkv::cli::parse_duration, help_heading = "Topic workload")]
    replica_lag_time_max: Option<Duration>,
}

impl JepsenArgs {
    /// The topic options, or why they cannot be given (register workload).
    fn topic_options(&self) -> anyhow::Result<TopicOptions> {
        let given: Vec<&str> = [
            ("--topic-partitions", self.topic_partitions.is_some()),
            ("--replication-factor", self.replication_factor.is_some()),
            ("--min-insync", self.min_insync.is_some()),
            ("--unclean-leader-election", self.unclean_leader_election),
            ("--acks", self.acks.is_some()),
            ("--replica-lag-time-max", self.replica_lag_time_max.is_some()),
        ]
        .into_iter()
        .filter_map(|(flag, set)| set.then_some(flag))
        .collect();
        if self.workload != Workload::Topic && !given.is_empty() {
            anyhow::bail!("{} only apply to --workload topic", given.join(", "));
        }
        let defaults = TopicOptions::defaults(self.nodes);
        let replication_factor = self.replication_factor.unwrap_or(defaults.replication_factor);
        Ok(TopicOptions {
            partitions: self.topic_partitions.unwrap_or(defaults.partitions),
            replication_factor,
            min_insync_replicas: self.min_insync.unwrap_or(replication_factor.min(2)),
            unclean_leader_election: self.unclean_leader_election,
            acks: self.acks.unwrap_or(defaults.acks),
            replica_lag_time_max: self.replica_lag_time_max.unwrap_or(defaults.replica_lag_time_max),
        })
    }
}

/// Runs the harness; see the module docs.
pub fn run(args: JepsenArgs) -> ExitCode {
    match run_jepsen_inner(args) {
        Ok(validity) => ExitCode::from(validity.exit_code()),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn run_jepsen_inner(args: JepsenArgs) -> anyhow::Result<Validity> {
    let topic = args.topic_options()?;
    let kv = match args.kv {
        Some(kv) => kv,
        None => std::env::current_exe()
            .context("cannot locate kv-jepsen itself to find kv next to it; pass --kv PATH")?
            .with_file_name("kv"),
    };
    let seed = args.seed.unwrap_or_else(rand::random);
    let level = match (args.workload, args.level) {
        (Workload::Register, Some(level)) => level,
        (Workload::Register, None) => anyhow::bail!("--level is required for the register workload"),
        (Workload::Topic, None) => RegisterLevel::One(Level::Linearizable),
        (Workload::Topic, Some(_)) => anyhow::bail!("--level only applies to --workload register"),
    };
    let op_timeout = args.op_timeout.unwrap_or(match args.workload {
        Workload::Register => REGISTER_OP_TIMEOUT_DEFAULT,
        Workload::Topic => TOPIC_OP_TIMEOUT_DEFAULT,
    });
    let config = RunConfig {
        workload: args.workload,
        topic,
        level,
        nemeses: args.nemesis,
        time: args.time,
        nodes: args.nodes,
        concurrency: args.concurrency,
        keys: args.keys,
        ops_per_key: args.ops_per_key,
        rate_hz: args.rate,
        seed,
        kv,
        checkers: args.checker,
        out: args.out,
        serve_args: args.serve_args,
        tls: args.tls,
        op_timeout,
        fault_interval: args.fault_interval,
        heal_interval: args.heal_interval,
        converge_timeout: args.converge_timeout,
        check_timeout: args.check_timeout,
        anti_entropy_interval: args.anti_entropy_interval,
        keep_data: args.keep_data,
        value_bytes: args.value_bytes,
    };
    // One thread: node processes get PR_SET_PDEATHSIG, which fires when the
    // thread that spawned them exits, so every spawn must happen on this
    // (main) thread. See capkv_jepsen::cluster.
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the async runtime")?;
    let started = std::time::Instant::now();
    let progress = move |line: String| eprintln!("[{:>7.1}s] {line}", started.elapsed().as_secs_f64());
    let outcome = runtime.block_on(async {
        let cancel = CancellationToken::new();
        let run = run_workload(&config, &progress, &cancel);
        tokio::pin!(run);
        tokio::select! {
            outcome = &mut run => return outcome,
            _ = interrupted() => {
                progress("interrupted: healing, stopping the nodes and writing the report (again to stop at once)".into());
                cancel.cancel();
            }
        }
        tokio::select! {
            outcome = &mut run => outcome,
            // Dropping the run kills the nodes and deletes the nftables
            // table (their Drop implementations).
            _ = interrupted() => Err(RunError::Config("interrupted twice: stopped at once, no report".into())),
        }
    })?;
    let r = &outcome.results;
    let nemesis = if r.nemesis.is_empty() { "none".to_string() } else { r.nemesis.join(",") };
    for reason in r.reasons.iter().chain(&r.errors) {
        eprintln!("note: {reason}");
    }
    if let Some(lin) = r.checker.linearizable.as_ref() {
        if let Some(explanation) = &lin.explanation {
            eprint!("not linearizable:\n{explanation}");
        }
    }
    println!("report: {}", outcome.dir.join(capkv_jepsen::report::INDEX_FILE).display());
    match (&r.level, &r.checker.topic) {
        (_, Some(t)) => println!(
            "{}: workload topic, acks {}, nemesis {nemesis}, seed {}, {} sends ({} ok, {} fail, {} info), {} records read; \
             lost {}, duplicated {}, reordered {}, wrong offset {}, unexpected {}; unknown-outcome read {}, failed read {}",
            outcome.valid,
            r.topic.as_ref().map_or("?", |t| t.acks.as_str()),
            r.config.seed,
            t.sends,
            t.acked,
            t.failed,
            t.unknown,
            t.records_read,
            t.lost.count,
            t.duplicated.count,
            t.reordered.count,
            t.wrong_offset.count,
            t.unexpected.count,
            t.unknown_read,
            t.failed_read
        ),
        (Some(level), None) => println!(
            "{}: level {level}, nemesis {nemesis}, seed {}, {} ops ({} ok, {} fail, {} info), {} stale reads",
            outcome.valid,
            r.config.seed,
            r.ops,
            r.ok,
            r.fail,
            r.info,
            r.stale_reads.as_ref().map_or(0, |s| s.stale)
        ),
        (None, None) => println!(
            "{}: workload {}, nemesis {nemesis}, seed {}, {} ops ({} ok, {} fail, {} info)",
            outcome.valid, r.workload, r.config.seed, r.ops, r.ok, r.fail, r.info
        ),
    }
    Ok(outcome.valid)
}

/// Runs the workload `config` names: [`run::run_register`] or
/// [`capkv_jepsen::topic::run::run_topic`] (each validates `config` first).
async fn run_workload(
    config: &RunConfig,
    progress: &(dyn Fn(String) + Sync),
    cancel: &CancellationToken,
) -> Result<RunOutcome, RunError> {
    match config.workload {
        Workload::Register => run::run_register(config, progress, cancel).await,
        Workload::Topic => capkv_jepsen::topic::run::run_topic(config, progress, cancel).await,
    }
}

/// Completes on Ctrl-C or SIGTERM.
async fn interrupted() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
