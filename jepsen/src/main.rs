//! `kv-jepsen`: capkv's Jepsen-style tool. `kv check …` execs
//! `kv-jepsen check …`, so the `check` command line is an interface: keep it.
//!
//! `kv-jepsen check --format jepsen-etcd|porcupine-kv|jsonl [--timeout-s N]
//! [--html DIR] FILE...` prints one line per file on stdout,
//! `FILE: linearizable|not-linearizable|unknown (N ops, T ms)` or
//! `FILE: error: …`; a violation's explanation goes to stderr.
//! `--format topic` checks a topic workload's history instead and prints
//! `FILE: valid|invalid|unknown (COUNTS, T ms)`.
//!
//! Exit status: 0 if every file is linearizable (valid); 1 if any file is
//! not (a definite finding wins over the rest); otherwise 2 if any file is
//! unknown (budget exceeded) or could not be checked. Usage errors also
//! exit 2 (clap's convention).
//!
//! `kv-jepsen jepsen --level L --nemesis LIST --time D --out DIR …` (also
//! `kv jepsen …`; `--workload topic` for the topic log) runs the
//! fault-injection harness; see `cli_jepsen`.

mod cli_jepsen;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use capkv_jepsen::checker::{self, Format, Outcome};
use capkv_jepsen::validity::Validity;
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "kv-jepsen", version, about = "capkv's Jepsen-style testing tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check histories for linearizability.
    ///
    /// Prints `FILE: linearizable|not-linearizable|unknown (N ops, T ms)` per
    /// file. Exit status: 0 all linearizable, 1 any violation, otherwise 2 if
    /// any file is unknown or could not be checked.
    Check(CheckArgs),
    /// Run the fault-injection harness against a fresh cluster.
    ///
    /// Starts --nodes `kv serve` processes on 127.0.0.11, .12, …, runs
    /// --concurrency clients at --level (or, with --workload topic,
    /// producers to a topic) for --time while the nemesis
    /// injects faults, heals, checks, and writes DIR/history.jsonl,
    /// DIR/results.json and DIR/index.html. Exit status: 0 valid, 1
    /// invalid, 2 unknown or error.
    Jepsen(Box<cli_jepsen::JepsenArgs>),
}

#[derive(Debug, clap::Args)]
struct CheckArgs {
    /// Format of the history files.
    #[arg(long, value_enum)]
    format: FormatArg,

    /// Time budget per file, in seconds; a search that exceeds it answers
    /// "unknown".
    #[arg(long = "timeout-s", value_name = "N", default_value_t = 60)]
    timeout_s: u64,

    /// Write an interactive HTML visualization of each violation to
    /// DIR/<file-stem>.html (DIR is created if missing).
    #[arg(long, value_name = "DIR")]
    html: Option<PathBuf>,

    /// History files to check.
    #[arg(value_name = "FILE", required = true)]
    files: Vec<PathBuf>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum FormatArg {
    /// Jepsen's etcd logs (single compare-and-set register).
    JepsenEtcd,
    /// Porcupine's kv logs (EDN maps: get/put/append).
    PorcupineKv,
    /// capkv's history.jsonl.
    Jsonl,
    /// The history.jsonl of a `--workload topic` run (lost, duplicated,
    /// reordered messages; not a linearizability check).
    Topic,
}

impl FormatArg {
    /// The linearizability checker's format; `None` for the topic format,
    /// which has its own checker.
    fn linearizability(self) -> Option<Format> {
        match self {
            FormatArg::JepsenEtcd => Some(Format::JepsenEtcd),
            FormatArg::PorcupineKv => Some(Format::PorcupineKv),
            FormatArg::Jsonl => Some(Format::Jsonl),
            FormatArg::Topic => None,
        }
    }
}

/// The status of one file, ordered by how much it decides the exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum FileStatus {
    /// Linearizable (topic: valid).
    Passed,
    UnknownOrError,
    Violation,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check(args) => run_check(&args),
        Command::Jepsen(args) => cli_jepsen::run(*args),
    }
}

fn run_check(args: &CheckArgs) -> ExitCode {
    let budget = Duration::from_secs(args.timeout_s);
    let worst = args.files.iter().map(|file| check_one(args, file, budget)).max().unwrap_or(FileStatus::Passed);
    match worst {
        FileStatus::Passed => ExitCode::SUCCESS,
        FileStatus::Violation => ExitCode::from(1),
        FileStatus::UnknownOrError => ExitCode::from(2),
    }
}

fn check_one(args: &CheckArgs, file: &Path, budget: Duration) -> FileStatus {
    let name = file.display();
    match check_and_report(args, file, budget) {
        Ok(status) => status,
        Err(error) => {
            println!("{name}: error: {error:#}");
            FileStatus::UnknownOrError
        }
    }
}

fn check_and_report(args: &CheckArgs, file: &Path, budget: Duration) -> anyhow::Result<FileStatus> {
    let name = file.display();
    let Some(format) = args.format.linearizability() else {
        return check_topic(file);
    };
    let verdict = checker::check_file(format, file, budget)?;
    println!("{name}: {} ({} ops, {} ms)", verdict.result, verdict.ops, verdict.elapsed.as_millis());
    Ok(match verdict.result {
        Outcome::Linearizable => FileStatus::Passed,
        Outcome::Unknown => FileStatus::UnknownOrError,
        Outcome::NotLinearizable => {
            if let Some(explanation) = &verdict.explanation {
                eprint!("{name}: not linearizable:\n{explanation}");
            }
            if let Some(dir) = &args.html {
                // The violation stands even if its page cannot be written.
                match write_html(&verdict, dir, file) {
                    Ok(html) => eprintln!("{name}: visualization written to {}", html.display()),
                    Err(error) => eprintln!("{name}: error: {error:#}"),
                }
            }
            FileStatus::Violation
        }
    })
}

/// `--format topic`: the topic checker on one file.
fn check_topic(file: &Path) -> anyhow::Result<FileStatus> {
    let name = file.display();
    let started = std::time::Instant::now();
    let result = capkv_jepsen::topic::checker::check_file(file)?;
    let word = match result.valid {
        Validity::Valid => "valid",
        Validity::Invalid => "invalid",
        Validity::Unknown => "unknown",
    };
    println!("{name}: {word} ({}, {} ms)", result.summary(), started.elapsed().as_millis());
    let explanation = result.explain();
    if !explanation.is_empty() {
        eprint!("{name}:\n{explanation}");
    }
    Ok(match result.valid {
        Validity::Valid => FileStatus::Passed,
        Validity::Invalid => FileStatus::Violation,
        Validity::Unknown => FileStatus::UnknownOrError,
    })
}

/// Writes `DIR/<file-stem>.html` and returns its path.
fn write_html(verdict: &checker::Verdict, dir: &Path, file: &Path) -> anyhow::Result<PathBuf> {
    let stem = file.file_stem().map_or_else(|| "history".into(), |s| s.to_string_lossy().into_owned());
    let html = dir.join(format!("{stem}.html"));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    verdict.write_html(&html)?;
    Ok(html)
}
