//! The `kv` command line: argument parsing (clap) and dispatch. Each
//! subcommand lives in its own file; all of them turn errors into one line on
//! stderr and an exit status (0 ok, 1 "no" answers such as not found or a
//! failed compare, 2 errors).

pub mod bench;
pub mod cluster;
pub mod data;
pub mod dev;
pub mod external;
pub mod join;
pub mod members;
pub mod serve;
pub mod topic;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::level::Level;

/// Level used when neither --consistency nor KV_CONSISTENCY is given: the
/// safest, as etcd does.
pub const DEFAULT_LEVEL: &str = "linearizable";
pub const DEFAULT_ENDPOINTS: &str = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003";

#[derive(Parser, Debug)]
#[command(name = "kv", version, about = "capkv: a replicated key-value store with per-request consistency")]
pub struct Cli {
    /// Nodes to talk to, HOST:PORT,...
    #[arg(long, global = true, env = "KV_ENDPOINTS", default_value = DEFAULT_ENDPOINTS, value_delimiter = ',')]
    pub endpoints: Vec<String>,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Consistency level of get/set/del/cas.
    #[arg(long, short = 'c', global = true, env = "KV_CONSISTENCY", default_value = DEFAULT_LEVEL, value_parser = parse_level)]
    pub consistency: Level,
    /// Deadline of each request, e.g. 5s, 500ms.
    #[arg(long, global = true, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Token sent with every request, for nodes started with --token-file.
    #[arg(long, global = true, env = "KV_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// TLS: the CA certificate (PEM) that signed the nodes' certificates;
    /// given, connections use TLS.
    #[arg(long = "cacert", id = "tls_cacert", global = true, env = "KV_CACERT")]
    pub cacert: Option<std::path::PathBuf>,
    /// TLS: a client certificate (PEM), for nodes that ask for one; needs --key.
    #[arg(long = "cert", id = "tls_cert", global = true, env = "KV_CERT")]
    pub cert: Option<std::path::PathBuf>,
    /// TLS: the private key (PEM) of --cert.
    #[arg(long = "key", id = "tls_key", global = true, env = "KV_KEY")]
    pub key: Option<std::path::PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the value of KEY (exit 1 if it does not exist).
    Get { key: String },
    /// Set KEY to VALUE (read from stdin when VALUE is omitted).
    Set { key: String, value: Option<String> },
    /// Delete KEY.
    #[command(alias = "delete")]
    Del { key: String },
    /// Compare-and-set: set KEY to NEW if its value is OLD (exit 1 if not).
    Cas {
        key: String,
        /// The value KEY must have.
        #[arg(long, value_name = "OLD", conflicts_with = "expect_absent", required_unless_present = "expect_absent")]
        expect: Option<String>,
        /// KEY must not exist.
        #[arg(long)]
        expect_absent: bool,
        new: String,
    },
    /// Run a node.
    Serve(Box<serve::ServeArgs>),
    /// Start a local cluster of `kv serve` processes; Ctrl-C stops them.
    Dev(dev::DevArgs),
    /// Cluster-wide commands.
    Cluster {
        #[command(subcommand)]
        command: cluster::ClusterCommand,
    },
    /// Topics: a partitioned, replicated log.
    Topic {
        #[command(subcommand)]
        command: topic::TopicCommand,
    },
    /// Check histories for linearizability (runs kv-jepsen check).
    Check {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Load generator: throughput and latency percentiles against capkv or etcd.
    Bench(bench::BenchArgs),
    /// Run a Jepsen-style fault-injection test (runs kv-jepsen jepsen).
    Jepsen {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

pub fn parse_level(s: &str) -> Result<Level, String> {
    s.parse::<Level>().map_err(|e| e.to_string())
}

/// Parses `500ms`, `5s`, `2m`, `3h`, `1d` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}: expected e.g. 500ms, 5s, 2m"))?;
    let ms = match unit {
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        "h" => n * 3_600_000.0,
        "d" => n * 86_400_000.0,
        _ => return Err(format!("invalid duration unit in {s:?}: use ms, s, m, h or d")),
    };
    if ms <= 0.0 {
        return Err(format!("duration {s:?} must be positive"));
    }
    Ok(Duration::from_millis(ms as u64))
}

/// Exit status for "the answer is no" (not found, compare failed).
pub const EXIT_NO: u8 = 1;
pub const EXIT_ERROR: u8 = 2;

impl Cli {
    /// The token and TLS settings every connection uses.
    pub fn connect_options(&self) -> Result<crate::client::ConnectOptions, String> {
        let tls = match (&self.cacert, &self.cert, &self.key) {
            (None, None, None) => None,
            (None, _, _) => {
                return Err("--cert/--key need --cacert (the CA that signed the nodes' certificates)".into())
            }
            (Some(ca), cert, key) => Some(crate::client::ClientTls::load(ca, cert.as_deref(), key.as_deref())?),
        };
        Ok(crate::client::ConnectOptions { token: self.token.clone(), tls })
    }
}

pub fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(EXIT_ERROR)
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    // For `kv serve --join`, which asks the cluster as a client does.
    let connect = cli.connect_options();
    match cli.command {
        Command::Serve(args) => serve::run(*args, connect),
        Command::Dev(args) => dev::run(args),
        Command::Check { ref args } => external::run("check", args),
        Command::Jepsen { ref args } => external::run("jepsen", args),
        Command::Cluster { ref command } => with_runtime(cluster::run(&cli, command)),
        Command::Bench(ref args) => bench::run(&cli, args),
        Command::Topic { ref command } => with_runtime(topic::run(&cli, command)),
        // Listed, not `_`: a new subcommand must be dispatched or it does not compile.
        Command::Get { .. } | Command::Set { .. } | Command::Del { .. } | Command::Cas { .. } => {
            with_runtime(data::run(&cli))
        }
    }
}

fn with_runtime(fut: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt.block_on(fut),
        Err(e) => fail(format!("cannot start the async runtime: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_duration("24h").unwrap(), parse_duration("1d").unwrap());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("0s").is_err());
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
