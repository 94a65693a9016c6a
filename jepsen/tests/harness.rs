//! Short runs of the real harness (`kv-jepsen jepsen`) against real `kv
//! serve` processes: the eventual level converges under each nemesis, the
//! quorum, linearizable and mixed levels stay linearizable, deliberately
//! wrong choices (a checker, a node switch) are caught (negative controls), and
//! every run — also an interrupted one — leaves no node process and no
//! nftables table behind.
//!
//! Needs the `kv` binary next to `kv-jepsen` (`cargo build --release
//! --workspace --bins`) or in `CAPKV_KV_BIN`, and root for nftables (the
//! partition runs). Each run is ~12 s of workload; the tests wait for
//! conditions with deadlines, never for fixed sleeps.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_kv-jepsen");

/// How long one harness run may take in all before the test gives up.
const RUN_DEADLINE: Duration = Duration::from_secs(90);

fn kv_bin() -> PathBuf {
    let kv = std::env::var_os("CAPKV_KV_BIN").map(PathBuf::from).unwrap_or_else(|| Path::new(BIN).with_file_name("kv"));
    assert!(
        kv.is_file(),
        "no kv binary at {}: build it with `cargo build --release --workspace --bins` or set CAPKV_KV_BIN",
        kv.display()
    );
    kv
}

struct Run {
    status: ExitStatus,
    results: Value,
    stderr: String,
    dir: tempfile::TempDir,
    pid: u32,
}

impl Run {
    fn out(&self) -> PathBuf {
        self.dir.path().join("run")
    }
}

/// Arguments for a short run: 3 nodes, 12 s, 3 s faults after 2 s of quiet
/// (three fault windows); `overrides` replace or add flags.
fn short_args(nemesis: &str, seed: u64, overrides: &[(&str, &str)]) -> Vec<String> {
    let seed = seed.to_string();
    let mut flags: Vec<(&str, &str)> = vec![
        ("--level", "eventual"),
        ("--nemesis", nemesis),
        ("--time", "12s"),
        ("--fault-interval", "3s"),
        ("--heal-interval", "2s"),
        ("--concurrency", "6"),
        ("--keys", "5"),
        ("--rate", "150"),
        ("--seed", &seed),
    ];
    for &(flag, value) in overrides {
        match flags.iter_mut().find(|(f, _)| *f == flag) {
            Some(entry) => entry.1 = value,
            None => flags.push((flag, value)),
        }
    }
    flags.into_iter().flat_map(|(f, v)| [f.to_string(), v.to_string()]).collect()
}

fn spawn(args: &[String], dir: &Path) -> Child {
    Command::new(BIN)
        .arg("jepsen")
        .args(args)
        .arg("--kv")
        .arg(kv_bin())
        .arg("--out")
        .arg(dir.join("run"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kv-jepsen starts")
}

/// Reads a child's stderr lines on a thread, so the test can wait for one.
fn stderr_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait_with_deadline(child: &mut Child, deadline: Duration) -> ExitStatus {
    let until = Instant::now() + deadline;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() >= until {
            let _ = child.kill();
            panic!("kv-jepsen did not finish within {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn run_harness(args: &[String]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut child = spawn(args, dir.path());
    let pid = child.id();
    let lines = stderr_lines(&mut child);
    let status = wait_with_deadline(&mut child, RUN_DEADLINE);
    let stderr: String = lines.iter().map(|l| l + "\n").collect();
    eprintln!("kv-jepsen {args:?} took {:.1} s, {status}:\n{stderr}", started.elapsed().as_secs_f64());
    let results_path = dir.path().join("run/results.json");
    let text = std::fs::read_to_string(&results_path)
        .unwrap_or_else(|e| panic!("no {} ({e}); stderr:\n{stderr}", results_path.display()));
    let run = Run { status, results: serde_json::from_str(&text).unwrap(), stderr, dir, pid };
    assert_cleaned_up(&run);
    run
}

/// No node process of the run is alive, and its nftables table is gone.
fn assert_cleaned_up(run: &Run) {
    for entry in std::fs::read_dir(run.out().join("nodes")).unwrap() {
        let pid_file = entry.unwrap().path().join("kv.pid");
        let pid = std::fs::read_to_string(&pid_file).unwrap().trim().to_string();
        // A reused pid would run something else: only a `kv serve` counts.
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let alive_kv = String::from_utf8_lossy(&cmdline).contains("serve");
        assert!(!alive_kv, "node process {pid} ({}) outlived the run", pid_file.display());
    }
    let tables = Command::new("nft").args(["list", "tables"]).output();
    if let Ok(tables) = tables {
        let listing = String::from_utf8_lossy(&tables.stdout);
        let mine = format!("capkv_jepsen_{}_", run.pid);
        assert!(!listing.contains(&mine), "nftables table of run {} left behind:\n{listing}", run.pid);
    }
}

/// The run's verdict was "valid" through the convergence checker, with
/// faults of `kind` really injected.
fn assert_converged_under(run: &Run, kind: &str) {
    let r = &run.results;
    assert_eq!(r["valid"], Value::Bool(true), "results:\n{r:#}\nstderr:\n{}", run.stderr);
    assert!(run.status.success(), "exit {}", run.status);
    assert_eq!(r["checker"]["convergence"]["valid"], Value::Bool(true));
    assert!(r["ok"].as_u64().unwrap() > 100, "{r:#}");
    let windows = r["nemesis_windows"].as_array().unwrap();
    assert!(windows.len() >= 2, "{windows:?}");
    assert!(windows.iter().all(|w| w["kind"] == kind && w["end_s"].is_number()), "{windows:?}");
    let final_ok = r["final_reads"]["ok"].as_u64().unwrap();
    assert_eq!(final_ok, r["final_reads"]["ops"].as_u64().unwrap(), "every final read succeeded");
    for file in ["history.jsonl", "results.json", "index.html"] {
        assert!(run.out().join(file).is_file(), "{file} written");
    }
}

fn node_logs(run: &Run) -> String {
    (1..=3).map(|n| std::fs::read_to_string(run.out().join(format!("nodes/n{n}/kv.log"))).unwrap_or_default()).collect()
}

// Proves: under kill -9 and restart the eventual level converges (every
// acknowledged write survives on every replica), and the nodes really were
// restarted.
#[test]
fn eventual_converges_under_kill() {
    let run = run_harness(&short_args("kill", 11, &[]));
    assert_converged_under(&run, "kill");
    assert!(node_logs(&run).contains("==== kv-jepsen: start #2"), "a node was restarted");
}

// Proves: under SIGSTOP/SIGCONT the eventual level converges; writes to a
// paused node end with unknown outcome (info), and their processes are
// retired.
#[test]
fn eventual_converges_under_pause() {
    let run = run_harness(&short_args("pause", 12, &[]));
    assert_converged_under(&run, "pause");
    assert!(run.results["info"].as_u64().unwrap() > 0, "writes to a paused node are indeterminate");
}

/// One operation of a history: (process, f, key, written or read value,
/// outcome, invoke s, complete s, level).
struct HistOp {
    process: u64,
    f: String,
    key: String,
    value: Option<i64>,
    ok: bool,
    invoke_s: f64,
    complete_s: f64,
    /// The invoke's `level` field.
    level: Option<String>,
}

fn history_ops(run: &Run) -> Vec<HistOp> {
    let text = std::fs::read_to_string(run.out().join("history.jsonl")).unwrap();
    let mut open: std::collections::HashMap<u64, Value> = Default::default();
    let mut ops = Vec::new();
    for line in text.lines() {
        let e: Value = serde_json::from_str(line).unwrap();
        let process = e["process"].as_u64().unwrap();
        if e["type"] == "invoke" {
            open.insert(process, e);
            continue;
        }
        let invoke = open.remove(&process).expect("paired");
        let f = invoke["f"].as_str().unwrap().to_string();
        let value = match f.as_str() {
            "read" => e["value"].as_i64(),
            "write" => invoke["value"].as_i64(),
            _ => invoke["value"][1].as_i64(),
        };
        ops.push(HistOp {
            process,
            f,
            key: invoke["key"].as_str().unwrap().to_string(),
            value,
            ok: e["type"] == "ok",
            invoke_s: invoke["time_ns"].as_f64().unwrap() / 1e9,
            complete_s: e["time_ns"].as_f64().unwrap() / 1e9,
            level: invoke["level"].as_str().map(String::from),
        });
    }
    ops
}

// Proves: under network partitions (nftables between node addresses) the
// eventual level stays available and converges after the heal — and the
// partitions were real: while the two sides of an isolate-one or
// majority/minority partition were cut, no value written through one side
// was read through the other (each process talks to its home node,
// process mod 3, and all nodes are up, so clients do not fail over).
#[test]
fn eventual_converges_under_partition() {
    let run = run_harness(&short_args("partition", 13, &[]));
    assert_converged_under(&run, "partition");
    assert!(run.results["config"]["firewall_table"].is_string());

    // Margins around the window for the cut to be applied and lifted.
    const MARGIN_S: f64 = 0.3;
    let ops = history_ops(&run);
    let home = |process: u64| process % 3 + 1;
    let (mut pairs_checked, mut leaks) = (0, Vec::new());
    for w in run.results["nemesis_windows"].as_array().unwrap() {
        if !w["bridge"].is_null() {
            continue; // a bridge node relays between the sides legitimately
        }
        let sides: Vec<Vec<u64>> = w["sides"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_array().unwrap().iter().map(|n| n.as_u64().unwrap()).collect())
            .collect();
        let (start, end) = (w["start_s"].as_f64().unwrap() + MARGIN_S, w["end_s"].as_f64().unwrap() - MARGIN_S);
        for (a, b) in [(&sides[0], &sides[1]), (&sides[1], &sides[0])] {
            for write in
                ops.iter().filter(|o| o.ok && o.f != "read" && o.invoke_s > start && a.contains(&home(o.process)))
            {
                for read in ops.iter().filter(|o| {
                    o.ok && o.f == "read"
                        && o.key == write.key
                        && o.invoke_s > write.complete_s
                        && o.complete_s < end
                        && b.contains(&home(o.process))
                }) {
                    pairs_checked += 1;
                    if read.value == write.value {
                        leaks.push(format!(
                            "{} = {:?} written via n{} read via n{} at {:.3}s",
                            write.key,
                            write.value,
                            home(write.process),
                            home(read.process),
                            read.invoke_s
                        ));
                    }
                }
            }
        }
    }
    assert!(pairs_checked > 10, "too few cross-partition reads to tell ({pairs_checked})");
    assert!(leaks.is_empty(), "values crossed a partition: {leaks:#?}");
}

// Proves: with skewed HLC clocks (admin RPC) the eventual level converges
// to the highest-versioned acknowledged write; the nodes did get the
// offsets.
#[test]
fn eventual_converges_under_clock_skew() {
    let run = run_harness(&short_args("clock", 14, &[]));
    assert_converged_under(&run, "clock");
    assert!(node_logs(&run).contains("clock offset changed"), "the admin RPC reached the nodes");
}

// Proves (negative control): the eventual level judged by the
// linearizability checker under partitions is reported invalid — clients
// on one side write, clients on the other keep reading the old value — with
// an explanation and the checker's visualization, and stale reads counted.
#[test]
fn eventual_is_not_linearizable_under_partition() {
    let args = short_args(
        "partition",
        15,
        &[
            ("--checker", "linearizable"),
            ("--keys", "2"),
            ("--time", "10s"),
            ("--fault-interval", "4s"),
            ("--rate", "300"),
        ],
    );
    let run = run_harness(&args);
    let r = &run.results;
    assert_eq!(r["valid"], Value::Bool(false), "results:\n{r:#}\nstderr:\n{}", run.stderr);
    assert_eq!(run.status.code(), Some(1));
    let lin = &r["checker"]["linearizable"];
    assert_eq!(lin["result"], "not-linearizable");
    assert!(lin["explanation"].as_str().is_some_and(|e| !e.is_empty()));
    assert_eq!(lin["html"], "linearizability.html");
    assert!(run.out().join("linearizability.html").is_file());
    let index = std::fs::read_to_string(run.out().join("index.html")).unwrap();
    assert!(index.contains("INVALID") && index.contains("linearizability.html"));
    assert!(r["stale_reads"]["stale"].as_u64().unwrap() > 0);
}

// Proves: Ctrl-C (SIGINT) in the middle of a partition stops the run early
// with exit status 2 and verdict "unknown", and still heals, stops every
// node and deletes the nftables table.
#[test]
fn interrupted_run_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let args = short_args("partition", 16, &[("--time", "60s")]);
    let mut child = spawn(&args, dir.path());
    let pid = child.id();
    let lines = stderr_lines(&mut child);
    let until = Instant::now() + Duration::from_secs(60);
    let mut seen = String::new();
    loop {
        let line = lines.recv_timeout(until.saturating_duration_since(Instant::now())).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("no partition started within 60 s:\n{seen}")
        });
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("nemesis: start partition") {
            break;
        }
    }
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGINT) }, 0);
    let status = wait_with_deadline(&mut child, RUN_DEADLINE);
    assert_eq!(status.code(), Some(2), "{status}");
    let results: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("run/results.json")).unwrap()).unwrap();
    assert_eq!(results["valid"], "unknown");
    assert!(results["reasons"].to_string().contains("interrupted"), "{results:#}");
    let run = Run { status, results, stderr: seen, dir, pid };
    assert_cleaned_up(&run);
}

// Proves: bad command lines exit 2 with a message naming the problem.
#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    for (args, needle) in [
        (vec!["--level", "eventual", "--nemesis", "flood", "--time", "1s"], "flood"),
        (vec!["--level", "serializable", "--nemesis", "none", "--time", "1s"], "serializable"),
        (vec!["--level", "eventual", "--nemesis", "none", "--time", "1s", "--nodes", "0"], "--nodes 0"),
    ] {
        let out = Command::new(BIN).arg("jepsen").args(&args).arg("--out").arg(dir.path().join("x")).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

/// The run was judged linearizable, with faults really injected and most
/// operations answered.
fn assert_linearizable(run: &Run) {
    let r = &run.results;
    assert_eq!(r["valid"], Value::Bool(true), "results:\n{r:#}\nstderr:\n{}", run.stderr);
    assert!(run.status.success(), "exit {}", run.status);
    assert_eq!(r["checker"]["linearizable"]["result"], "linearizable", "{r:#}");
    assert!(r["ok"].as_u64().unwrap() > 100, "{r:#}");
    assert_eq!(r["stale_reads"]["stale"].as_u64(), Some(0), "{r:#}");
    let windows = r["nemesis_windows"].as_array().unwrap();
    assert!(windows.len() >= 2, "{windows:?}");
}

// Proves: the quorum level (ABD) keeps get/set linearizable per key while
// nodes are partitioned and paused.
#[test]
fn quorum_is_linearizable_under_partition_and_pause() {
    let run = run_harness(&short_args("partition,pause", 21, &[("--level", "quorum")]));
    assert_linearizable(&run);
}

// Proves: the linearizable level (Raft) keeps read/write/cas linearizable
// across leader crashes (kill -9 + restart) and partitions.
#[test]
fn linearizable_is_linearizable_under_kill_and_partition() {
    let run = run_harness(&short_args("kill,partition", 22, &[("--level", "linearizable"), ("--op-timeout", "2s")]));
    assert_linearizable(&run);
}

// Proves (issue 23): with TLS on every port (mutual between nodes, the
// clock nemesis reaching Admin with a CA-signed client certificate), quorum
// and linearizable operations mixed on the same keys stay linearizable under
// kills, partitions and clock jumps.
#[test]
fn mixed_levels_are_linearizable_with_tls_under_kill_partition_and_clock() {
    let mut args = short_args("kill,partition,clock", 31, &[("--level", "mixed"), ("--op-timeout", "2s")]);
    args.push("--tls".to_string());
    let run = run_harness(&args);
    assert_linearizable(&run);
    assert!(run.dir.path().join("run/tls/ca.pem").is_file(), "the run's CA");
    let log = std::fs::read_to_string(run.dir.path().join("run/nodes/n1/kv.log")).unwrap();
    assert!(log.contains("--tls-cert"), "node 1 was started with TLS");
}

// Proves (review issue, item 2): leader-lease reads stay linearizable while
// the leader is cut off and paused — the lease is bounded by what a majority
// confirmed, and a paused leader's lease runs out while it is stopped.
#[test]
fn lease_reads_are_linearizable_under_partition_and_pause() {
    let run = run_harness(&short_args(
        "partition,pause",
        23,
        &[("--level", "linearizable"), ("--op-timeout", "2s"), ("--serve-arg", "--read-mode=lease")],
    ));
    assert_linearizable(&run);
}

// Proves (review issue, items 1 and 4, and the frequent-snapshot class):
// a one-node cluster restarts on its data under kill -9; clock jumps of up to
// an hour on a minority never make the state machine's log time expire the
// clients' sessions; snapshots every 50 entries while nodes crash.
#[test]
fn linearizable_is_linearizable_on_one_node_under_kill_and_clock() {
    let run = run_harness(&short_args(
        "kill,clock",
        24,
        &[("--level", "linearizable"), ("--nodes", "1"), ("--op-timeout", "2s")],
    ));
    assert_linearizable(&run);
}

#[test]
fn linearizable_is_linearizable_with_frequent_snapshots_under_kill_and_clock() {
    let run = run_harness(&short_args(
        "kill,clock",
        25,
        &[("--level", "linearizable"), ("--op-timeout", "2s"), ("--serve-arg", "--raft-snapshot-entries=50")],
    ));
    assert_linearizable(&run);
}

// Proves (review issue, item 7's class): with values of 512 KiB, hints for a
// killed node, replication and read repair still carry them (batches are
// bounded in bytes, not only in count) and the replicas converge.
#[test]
fn eventual_converges_with_large_values_under_kill() {
    let run = run_harness(&short_args("kill", 26, &[("--value-bytes", "524288"), ("--rate", "60")]));
    assert_converged_under(&run, "kill");
}

// Proves (issue 21): reads, writes and cas drawn at quorum or linearizable
// per operation, on the same keys, are linearizable together while nodes
// are paused: one keyspace whichever level an operation names. Both levels
// really ran every kind of operation (the history records each invoke's
// level), and a quorum cas did swap (it goes through consensus).
#[test]
fn mixed_levels_are_linearizable_under_pause() {
    let run = run_harness(&short_args("pause", 27, &[("--level", "mixed"), ("--op-timeout", "2s")]));
    assert_linearizable(&run);
    assert_eq!(run.results["level"], "mixed");
    let ops = history_ops(&run);
    for level in ["quorum", "linearizable"] {
        for f in ["read", "write", "cas"] {
            let ok = ops.iter().filter(|o| o.ok && o.f == f && o.level.as_deref() == Some(level)).count();
            assert!(ok > 0, "no {f} at {level} succeeded");
        }
        assert!(run.results["by_level"][level]["ok"].as_u64().unwrap() > 20, "{:#}", run.results["by_level"]);
    }
    assert!(ops.iter().all(|o| o.level.is_some()), "every invoke records its level");
}

// Proves (negative control of the test above): with the nodes' level join
// turned off (`--unsafe-skip-level-join`), a linearizable read misses a
// quorum write that finished before it; the harness reports the mixed
// history not linearizable, with no fault needed.
#[test]
fn mixed_levels_without_the_join_are_not_linearizable() {
    let args = short_args(
        "none",
        28,
        &[
            ("--level", "mixed"),
            ("--serve-arg", "--unsafe-skip-level-join"),
            ("--time", "6s"),
            ("--keys", "2"),
            ("--rate", "300"),
        ],
    );
    let run = run_harness(&args);
    let r = &run.results;
    assert_eq!(r["valid"], Value::Bool(false), "results:\n{r:#}\nstderr:\n{}", run.stderr);
    assert_eq!(run.status.code(), Some(1));
    assert_eq!(r["checker"]["linearizable"]["result"], "not-linearizable");
    assert!(run.out().join("linearizability.html").is_file());
}

// Proves: with eventual writes joining quorum and linearizable ones on the
// same keys (`mixed-eventual`), every replica still ends with the
// last-writer-wins cell of every key under kill -9 and restart, whichever
// level wrote it; the convergence checker is the default.
#[test]
fn mixed_eventual_converges_under_kill() {
    let run = run_harness(&short_args("kill", 29, &[("--level", "mixed-eventual"), ("--op-timeout", "2s")]));
    assert_converged_under(&run, "kill");
    assert_eq!(run.results["checkers"], serde_json::json!(["convergence"]));
    for level in ["eventual", "quorum", "linearizable"] {
        assert!(run.results["by_level"][level]["ok"].as_u64().unwrap() > 10, "{:#}", run.results["by_level"]);
    }
}

/// The membership window really replaced a member: a removal and a join
/// under a new id, on a slot whose log shows `kv serve --join`.
fn assert_replaced_a_member(run: &Run) {
    let windows = run.results["nemesis_windows"].as_array().unwrap();
    let replaced: Vec<&str> = windows
        .iter()
        .filter(|w| w["kind"] == "membership")
        .map(|w| w["description"].as_str().unwrap())
        .filter(|d| d.contains("removed node") && d.contains("joined") && d.contains("promoted"))
        .collect();
    assert!(!replaced.is_empty(), "no completed replacement in {windows:#?}");
    let joined = (1..=3).any(|n| {
        let log = std::fs::read_to_string(run.out().join(format!("nodes/n{n}/kv.log"))).unwrap_or_default();
        log.contains(" --join ")
    });
    assert!(joined, "no node log shows a start with --join");
}

// Proves (issue 22): reads, writes and cas at quorum and linearizable on the
// same keys stay linearizable while a member is removed (its data deleted)
// and a new node under a new id joins in its place, between kills and
// partitions: Raft's joint configuration changes and the quorum level's
// epoch-fenced reconfiguration together. With TLS on every port, so the
// peers must accept the certificate of a node that joined after them.
#[test]
fn mixed_levels_are_linearizable_with_tls_under_membership_kill_and_partition() {
    let mut args =
        short_args("membership,kill,partition", 32, &[("--level", "mixed"), ("--op-timeout", "2s"), ("--time", "15s")]);
    args.push("--tls".to_string());
    let run = run_harness(&args);
    assert_linearizable(&run);
    assert_replaced_a_member(&run);
}

// Proves (issue 22): with eventual, quorum and linearizable writes on the
// same keys, nodes that join in place of removed members (two replacements)
// end with every key's last-writer-wins cell (anti-entropy fills them), as
// do the others.
#[test]
fn mixed_eventual_converges_under_membership() {
    let run = run_harness(&short_args("membership", 33, &[("--level", "mixed-eventual"), ("--op-timeout", "2s")]));
    assert_converged_under(&run, "membership");
    assert_replaced_a_member(&run);
}
