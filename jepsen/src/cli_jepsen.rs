//! The `jepsen` subcommand of `kv-jepsen` (also `kv jepsen …`): parses the
//! harness's command line, runs [`capkv_jepsen::run`] on a current-thread
//! runtime, prints progress on stderr and the verdict on stdout, and maps
//! the verdict to the exit status (0 valid, 1 invalid, 2 unknown or error).
//!
//! Ctrl-C or SIGTERM ends the run early: it heals, stops the nodes, deletes
//! the nftables table and still writes the report (verdict unknown). A
//! second signal stops at once; the nodes and the table are still removed
//! (their `Drop`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use capkv::Level;
use capkv_jepsen::nemesis::NemesisKind;
use capkv_jepsen::run::{self, CheckerKind, RunConfig};
use capkv_jepsen::validity::Validity;
use tokio_util::sync::CancellationToken;

#[derive(Debug, clap::Args)]
pub struct JepsenArgs {
    /// Consistency level of every operation: eventual, quorum or
    /// linearizable.
    #[arg(long, value_parser = parse_level)]
    level: Level,

    /// Faults: a comma-separated list of kill, pause, partition, clock, or
    /// none.
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
    /// convergence for eventual, linearizable for quorum and linearizable].
    #[arg(long, value_parser = CheckerKind::parse_list)]
    checker: Option<std::vec::Vec<CheckerKind>>,

    /// Run directory (created; must be empty).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,

    /// Extra argument for every `kv serve`, repeatable, e.g.
    /// --serve-arg=--unsafe-skip-read-impose.
    #[arg(long = "serve-arg", value_name = "ARG", allow_hyphen_values = true)]
    serve_args: Vec<String>,

    /// Deadline of one client operation.
    #[arg(long, default_value = "1s", value_parser = capkv::cli::parse_duration)]
    op_timeout: Duration,

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
}

fn parse_level(text: &str) -> Result<Level, String> {
    text.parse::<Level>().map_err(|e| e.to_string())
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
    let kv = match args.kv {
        Some(kv) => kv,
        None => std::env::current_exe()
            .context("cannot locate kv-jepsen itself to find kv next to it; pass --kv PATH")?
            .with_file_name("kv"),
    };
    let seed = args.seed.unwrap_or_else(rand::random);
    let config = RunConfig {
        level: args.level,
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
        op_timeout: args.op_timeout,
        fault_interval: args.fault_interval,
        heal_interval: args.heal_interval,
        converge_timeout: args.converge_timeout,
        check_timeout: args.check_timeout,
        anti_entropy_interval: args.anti_entropy_interval,
        keep_data: args.keep_data,
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
        let run = run::run(&config, &progress, &cancel);
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
            _ = interrupted() => Err(run::RunError::Config("interrupted twice: stopped at once, no report".into())),
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
    println!(
        "{}: level {}, nemesis {}, seed {}, {} ops ({} ok, {} fail, {} info), {} stale reads",
        outcome.valid, r.level, nemesis, r.config.seed, r.ops, r.ok, r.fail, r.info, r.stale_reads.stale
    );
    Ok(outcome.valid)
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
