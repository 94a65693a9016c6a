//! `kv bench`: the load generator's command line. Parses flags into a
//! [`BenchConfig`], shows a progress bar on stderr while
//! [`crate::bench::run`] works, prints the report. Exit 0 when something
//! was measured; 2 when set-up failed or every request failed (with the
//! first error on stderr).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio_util::sync::CancellationToken;

use super::{fail, parse_duration, Cli, Output, EXIT_ERROR};
use crate::bench::{self, BenchConfig, Operation, Phase, Progress, StopAfter, Target};

/// Measured time when neither --duration nor --requests is given.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(30);
/// How often the progress bar refreshes.
const PROGRESS_TICK: Duration = Duration::from_millis(200);

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OpArg {
    Get,
    Set,
    Cas,
    Mixed,
    /// capkv's bare gRPC round trip (no storage): the transport's floor.
    Ping,
    /// Append + fdatasync in --data-dir: the disk's floor (no server).
    Fsync,
    /// Records to a topic (capkv) or JetStream streams (nats), --batch per request.
    Produce,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TargetArg {
    Capkv,
    /// etcd 3.x (--endpoints are etcd client addresses, HOST:PORT); always linearizable.
    Etcd,
    /// NATS JetStream (--endpoints are NATS client addresses); --op produce only.
    Nats,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// What each client does in a loop.
    #[arg(long, value_enum, default_value_t = OpArg::Set)]
    pub op: OpArg,
    /// System under test; --consistency applies to capkv only.
    #[arg(long, value_enum, default_value_t = TargetArg::Capkv)]
    pub target: TargetArg,
    /// Concurrent clients, each with its own connection and one request in flight.
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// How long to measure, e.g. 30s, 2m [default: 30s].
    #[arg(long, value_parser = parse_duration, conflicts_with = "requests")]
    pub duration: Option<Duration>,
    /// Stop after this many measured requests (all clients together).
    #[arg(long)]
    pub requests: Option<u64>,
    /// Distinct keys; get, cas and mixed write each one before measuring.
    #[arg(long, default_value_t = 1_000)]
    pub keys: u64,
    /// Bytes per value (also the ping payload and the fsync write).
    #[arg(long, default_value_t = 128)]
    pub value_size: usize,
    /// Share of gets in --op mixed.
    #[arg(long, default_value_t = 0.9)]
    pub read_ratio: f64,
    /// Unmeasured time before measuring, e.g. 2s, or 0.
    #[arg(long, default_value = "2s", value_parser = parse_warmup)]
    pub warmup: Duration,
    /// Seed of the clients' generators (client i uses seed + i).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Prefix of the benchmark's keys.
    #[arg(long, default_value = "bench/")]
    pub key_prefix: String,
    /// Directory for --op fsync (put it on the disk the nodes use).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Never show the progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// --op produce: the topic (NATS: streams TOPIC-0.., subjects TOPIC.0..), created if missing.
    #[arg(long, default_value = "bench", help_heading = "Produce")]
    pub topic: String,
    /// --op produce: records per request, sent together; the request ends when all are acknowledged.
    #[arg(long = "batch", default_value_t = 1, help_heading = "Produce")]
    pub batch_records: usize,
    /// --op produce: 0, 1 or all (capkv; JetStream acks once its replicas have the record).
    #[arg(long, default_value = "all", help_heading = "Produce")]
    pub acks: crate::client::topics::Acks,
    /// --op produce: the clients share this many producers (capkv) or
    /// connections (NATS), client i using the (i mod N)-th; a shared capkv
    /// producer batches its clients' concurrent sends into one request per
    /// partition, like one Kafka producer shared by an application's
    /// threads. Default: one per client.
    #[arg(long, help_heading = "Produce")]
    pub producers: Option<usize>,
    /// --op produce: partitions of a topic it creates (NATS: streams).
    #[arg(long, default_value_t = 3, help_heading = "Produce")]
    pub partitions: u32,
    /// --op produce: replicas of a topic (stream) it creates.
    #[arg(long, default_value_t = 3, help_heading = "Produce")]
    pub replication_factor: u32,
    /// capkv: send requests over one session stream per connection (as the
    /// capkv client does), as one unary gRPC call each, or as `plain` unary
    /// calls from the bare gRPC stub without a client id (as a client in
    /// another language that fills in only what the proto requires).
    #[arg(long, value_enum, default_value_t = TransportArg::Session)]
    pub transport: TransportArg,
    /// Count successes and errors per interval of this many milliseconds
    /// and report the longest stretch in which no request succeeded (JSON
    /// output carries the per-interval counts); e.g. 10 while killing a node.
    #[arg(long, value_name = "MS")]
    pub timeline_ms: Option<u64>,
    /// At most this many requests per second in total, spread evenly over
    /// the clients (each still has one request in flight; a slow answer
    /// delays its next request, no catch-up bursts), e.g. half of a flat-out
    /// run's ops/s for a soak. Default: as fast as answers come.
    #[arg(long = "rate", value_name = "OPS")]
    pub rate_per_sec: Option<f64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TransportArg {
    Session,
    Unary,
    Plain,
}

/// A duration like `--duration`'s, but 0 (no warm-up) is allowed.
fn parse_warmup(s: &str) -> Result<Duration, String> {
    let number = s.trim().trim_end_matches(|c: char| c.is_ascii_alphabetic());
    if number.parse::<f64>().is_ok_and(|v| v == 0.0) {
        return Ok(Duration::ZERO);
    }
    parse_duration(s)
}

fn config(cli: &Cli, args: &BenchArgs) -> Result<BenchConfig, String> {
    let operation = match args.op {
        OpArg::Get => Operation::Get,
        OpArg::Set => Operation::Set,
        OpArg::Cas => Operation::Cas,
        OpArg::Mixed => Operation::Mixed,
        OpArg::Ping => Operation::Ping,
        OpArg::Fsync => Operation::Fsync,
        OpArg::Produce => Operation::Produce,
    };
    let target = match args.target {
        TargetArg::Capkv => Target::Capkv,
        TargetArg::Etcd => Target::Etcd,
        TargetArg::Nats => Target::Nats,
    };
    let mut cfg = BenchConfig::new(operation, target, cli.endpoints.clone());
    cfg.level = cli.consistency;
    cfg.connect = cli.connect_options()?;
    cfg.clients = args.clients;
    cfg.transport = match args.transport {
        TransportArg::Session => crate::client::Transport::Session,
        TransportArg::Unary | TransportArg::Plain => crate::client::Transport::Unary,
    };
    cfg.plain_client = args.transport == TransportArg::Plain;
    cfg.stop = match (args.duration, args.requests) {
        (_, Some(n)) => StopAfter::Requests(n),
        (Some(d), None) => StopAfter::Duration(d),
        (None, None) => StopAfter::Duration(DEFAULT_DURATION),
    };
    cfg.warmup = args.warmup;
    cfg.keys = args.keys;
    cfg.value_bytes = args.value_size;
    cfg.read_ratio = args.read_ratio;
    cfg.timeout = cli.timeout;
    cfg.seed = args.seed;
    cfg.key_prefix = args.key_prefix.clone();
    cfg.data_dir = args.data_dir.clone();
    cfg.topic = args.topic.clone();
    cfg.batch_records = args.batch_records;
    cfg.acks = args.acks;
    cfg.producers = args.producers;
    cfg.partitions = args.partitions;
    cfg.replication_factor = args.replication_factor;
    cfg.timeline = args.timeline_ms.map(Duration::from_millis);
    cfg.rate_per_sec = args.rate_per_sec;
    Ok(cfg)
}

pub fn run(cli: &Cli, args: &BenchArgs) -> ExitCode {
    let cfg = match config(cli, args) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    if let Err(e) = cfg.validate() {
        return fail(e);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    let show_progress = !args.no_progress && cli.output == Output::Text && std::io::stderr().is_terminal();
    let progress = Progress::new();
    let result = rt.block_on(async {
        let interrupt = {
            let p = progress.clone();
            tokio::spawn(async move {
                if tokio::signal::ctrl_c().await.is_ok() {
                    p.interrupt();
                }
            })
        };
        let finished = CancellationToken::new();
        let bar = show_progress.then(|| tokio::spawn(progress_bar(cfg.clone(), progress.clone(), finished.clone())));
        let result = bench::run(&cfg, progress.clone()).await;
        interrupt.abort();
        finished.cancel();
        if let Some(bar) = bar {
            let _ = bar.await;
        }
        result
    });
    match result {
        Ok(report) => {
            match cli.output {
                Output::Text => print!("{}", report.to_text()),
                Output::Json => println!("{}", report.to_json()),
            }
            if report.all_failed() {
                let first = report.first_error.as_deref().unwrap_or("no message");
                let kind = report.first_error_kind.unwrap_or("other");
                eprintln!("error: every request failed; the first with {kind}: {first}");
                return ExitCode::from(EXIT_ERROR);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            if cli.output == Output::Json {
                println!("{}", bench::report::failure_json(&cfg, &e));
            }
            fail(e)
        }
    }
}

/// Draws the progress bar until `finished`, then clears it.
async fn progress_bar(cfg: BenchConfig, progress: Arc<Progress>, finished: CancellationToken) {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {percent:>3}%")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    let mut tick = tokio::time::interval(PROGRESS_TICK);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = finished.cancelled() => break,
        }
        let phase = progress.phase();
        let (pos, len, msg) = match phase {
            Phase::Connecting => (0, 1, "connecting".to_string()),
            Phase::Probing => (0, 1, "probing".to_string()),
            Phase::Populating => (progress.populated_keys(), cfg.keys, format!("populating {} keys", cfg.keys)),
            Phase::WarmingUp => (0, 1, format!("warming up ({:?})", cfg.warmup)),
            Phase::Measuring | Phase::Done => {
                let since = progress.measuring_since().map(|t| t.elapsed()).unwrap_or_default();
                let rate = progress.ops() as f64 / since.as_secs_f64().max(1e-3);
                let msg = format!("{} ok, {} errors, {:.0} ops/s", progress.ops(), progress.errors(), rate);
                let msg = if cfg.operation == Operation::Produce {
                    format!("{msg} ({:.0} records/s)", rate * cfg.batch_records as f64)
                } else {
                    msg
                };
                match cfg.stop {
                    StopAfter::Duration(d) => (since.as_millis().min(d.as_millis()) as u64, d.as_millis() as u64, msg),
                    StopAfter::Requests(n) => ((progress.ops() + progress.errors()).min(n), n, msg),
                }
            }
        };
        // Message first: a redraw between these calls then shows the new
        // phase with the old bar, never the old phase with a reset bar.
        bar.set_message(msg);
        bar.set_length(len.max(1));
        bar.set_position(pos);
    }
    bar.finish_and_clear();
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn warmup_accepts_zero() {
        assert_eq!(parse_warmup("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_warmup("0s").unwrap(), Duration::ZERO);
        assert_eq!(parse_warmup("500ms").unwrap(), Duration::from_millis(500));
        assert!(parse_warmup("x").is_err());
    }

    /// Flags land in the config; global flags (--consistency, --endpoints,
    /// --timeout) apply to the benchmark too.
    #[test]
    fn flags_map_onto_the_config() {
        let cli = Cli::try_parse_from([
            "kv",
            "bench",
            "--op",
            "mixed",
            "--clients",
            "32",
            "--requests",
            "1000",
            "--read-ratio",
            "0.5",
            "-c",
            "quorum",
            "--endpoints",
            "a:1,b:2",
            "--timeout",
            "1s",
        ])
        .unwrap();
        let super::super::Command::Bench(args) = &cli.command else { panic!("not bench") };
        let cfg = config(&cli, args).unwrap();
        assert_eq!(cfg.operation, Operation::Mixed);
        assert_eq!(cfg.clients, 32);
        assert_eq!(cfg.stop, StopAfter::Requests(1000));
        assert_eq!(cfg.read_ratio, 0.5);
        assert_eq!(cfg.level, crate::Level::Quorum);
        assert_eq!(cfg.endpoints, ["a:1", "b:2"]);
        assert_eq!(cfg.timeout, Duration::from_secs(1));
        assert!(Cli::try_parse_from(["kv", "bench", "--duration", "1s", "--requests", "5"]).is_err());
    }
}
