//! Short runs of the topic workload (`kv-jepsen jepsen --workload topic`)
//! against real `kv serve` processes:
//!
//! - acks=all producers under kill -9 and network partitions lose,
//!   duplicate and reorder no acknowledged message (DESIGN §6: "new leader
//!   from the ISR only"; docs/topics.md "Guarantees by acks");
//! - negative control: with `--unclean-leader-election` the kill-isr
//!   nemesis (a follower falls out of the ISR, then the ISR is killed) makes
//!   the controller elect the stale follower, and the checker reports the
//!   acknowledged messages that were lost (docs/topics.md "Unclean leader
//!   election"); the same schedule without the flag loses nothing.
//!
//! Needs the `kv` binary next to `kv-jepsen` (`cargo build --release
//! --workspace --bins`) or in `CAPKV_KV_BIN`, and root for nftables (the
//! partition run). Each run is 8–10 s of workload; the tests wait for the
//! harness with a deadline, never for fixed sleeps.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_kv-jepsen");

/// How long one harness run may take in all before the test gives up.
const RUN_DEADLINE: Duration = Duration::from_secs(60);

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
    code: Option<i32>,
    results: Value,
    stdout: String,
    stderr: String,
    dir: tempfile::TempDir,
}

impl Run {
    fn out(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    fn topic(&self) -> &Value {
        &self.results["checker"]["topic"]
    }

    fn context(&self) -> String {
        format!("stdout:\n{}\nstderr:\n{}\nresults:\n{:#}", self.stdout, self.stderr, self.results)
    }
}

/// Runs `kv-jepsen jepsen --workload topic ARGS` to the end (bounded by
/// [`RUN_DEADLINE`]) and reads its results.
fn run_topic(args: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut child = Command::new(BIN)
        .args(["jepsen", "--workload", "topic"])
        .args(args)
        .arg("--kv")
        .arg(kv_bin())
        .arg("--out")
        .arg(dir.path().join("run"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kv-jepsen starts");
    // Drain both pipes on threads so the child never blocks on a full pipe.
    let read_all = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().unwrap()));
    let stderr = read_all(Box::new(child.stderr.take().unwrap()));
    let until = Instant::now() + RUN_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= until {
            let _ = child.kill();
            panic!("kv-jepsen did not finish within {RUN_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    eprintln!("kv-jepsen {args:?} took {:.1} s, {status}:\n{stderr}{stdout}", started.elapsed().as_secs_f64());
    let path = dir.path().join("run/results.json");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("no {} ({e}); stderr:\n{stderr}", path.display()));
    Run { code: status.code(), results: serde_json::from_str(&text).unwrap(), stdout, stderr, dir }
}

fn count(v: &Value) -> u64 {
    v["count"].as_u64().expect("a findings count")
}

/// `kv-jepsen check --format topic` on the run's history: its exit status
/// and line.
fn recheck(run: &Run) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .args(["check", "--format", "topic"])
        .arg(run.out().join("history.jsonl"))
        .output()
        .expect("kv-jepsen check runs");
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
}

// Proves: acks=all producers under kill -9 and partitions (both really
// injected) lose, duplicate and reorder nothing: every acknowledged
// message is read back, once, where it was acknowledged; and `kv-jepsen
// check --format topic` gives the same verdict from the history file.
#[test]
fn acks_all_loses_nothing_under_kill_and_partition() {
    let run = run_topic(&[
        "--nemesis",
        "kill,partition",
        "--time",
        "10s",
        "--fault-interval",
        "3s",
        "--heal-interval",
        "1500ms",
        "--concurrency",
        "6",
        "--rate",
        "150",
        "--seed",
        "21",
    ]);
    let r = &run.results;
    assert_eq!(r["valid"], Value::Bool(true), "{}", run.context());
    assert_eq!(run.code, Some(0), "{}", run.context());
    let t = run.topic();
    assert_eq!(t["valid"], Value::Bool(true), "{}", run.context());
    for kind in ["lost", "duplicated", "reordered", "wrong_offset", "unexpected"] {
        assert_eq!(count(&t[kind]), 0, "{kind}: {}", run.context());
    }
    let acked = t["acked"].as_u64().unwrap();
    assert!(acked > 100, "enough was acknowledged to test anything: {}", run.context());
    assert_eq!(t["acked_read"].as_u64().unwrap(), acked, "{}", run.context());
    assert_eq!(r["topic"]["acks"], "all");
    let kinds: Vec<&str> =
        r["nemesis_windows"].as_array().unwrap().iter().map(|w| w["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"kill") && kinds.contains(&"partition"), "both faults were injected: {kinds:?}");
    assert!(stdout_has_verdict(&run.stdout, "valid"), "{}", run.stdout);

    let (code, line) = recheck(&run);
    assert_eq!(code, Some(0), "{line}");
    assert!(line.contains(": valid (") && line.contains("lost 0, duplicated 0, reordered 0"), "{line}");
}

fn stdout_has_verdict(stdout: &str, verdict: &str) -> bool {
    stdout.lines().any(|l| l.starts_with(&format!("{verdict}: workload topic, acks all")))
}

/// The kill-isr schedule on one partition with replication factor 2 and
/// `min.insync.replicas` 1 on 3 nodes: one fault window of 6 s (the
/// follower is paused, leaves the ISR within `--replica-lag-time-max`, the
/// leader alone acknowledges acks=all sends; then the leader is killed and
/// the follower resumed).
fn kill_isr_args(unclean: bool) -> Vec<&'static str> {
    let mut args = vec![
        "--nemesis",
        "kill-isr",
        "--topic-partitions",
        "1",
        "--replication-factor",
        "2",
        "--min-insync",
        "1",
        "--replica-lag-time-max",
        "1s",
        "--time",
        "9s",
        "--fault-interval",
        "6s",
        "--heal-interval",
        "1500ms",
        "--concurrency",
        "6",
        "--rate",
        "150",
        "--seed",
        "22",
    ];
    if unclean {
        args.push("--unclean-leader-election");
    }
    args
}

fn kill_isr_window(run: &Run) -> String {
    let windows = run.results["nemesis_windows"].as_array().unwrap();
    assert_eq!(windows.len(), 1, "{}", run.context());
    assert_eq!(windows[0]["kind"], "kill-isr");
    windows[0]["description"].as_str().unwrap().to_string()
}

// Proves (negative control): with unclean leader election allowed, the
// kill-isr schedule gets the out-of-sync follower elected, and the
// checker reports acknowledged (acks=all) messages as lost: the run is
// invalid (exit 1), and so is the re-check of its history. A harness that
// passed this run would not be testing durability.
#[test]
fn unclean_election_loses_acknowledged_messages() {
    let run = run_topic(&kill_isr_args(true));
    let what = kill_isr_window(&run);
    assert!(what.contains("left the ISR") && what.contains("elected uncleanly"), "{what}\n{}", run.context());
    assert_eq!(run.results["valid"], Value::Bool(false), "{}", run.context());
    assert_eq!(run.code, Some(1), "{}", run.context());
    let t = run.topic();
    let lost = count(&t["lost"]);
    assert!(lost > 0, "{}", run.context());
    let example = &t["lost"]["examples"][0];
    assert_eq!(example["outcome"], "ok", "a lost message was acknowledged: {example}");
    assert!(example["acked_offset"].is_u64(), "{example}");
    assert_eq!(run.results["topic"]["unclean_leader_election"], Value::Bool(true));

    let (code, line) = recheck(&run);
    assert_eq!(code, Some(1), "{line}");
    assert!(line.contains(&format!("lost {lost},")), "{line}");
}

// Proves (control of the control): the same schedule without unclean
// election loses nothing — the partition goes offline while its ISR is
// dead, and comes back with every acknowledged message.
#[test]
fn clean_election_under_kill_isr_loses_nothing() {
    let run = run_topic(&kill_isr_args(false));
    let what = kill_isr_window(&run);
    assert!(what.contains("left the ISR") && what.contains("went offline"), "{what}\n{}", run.context());
    assert_eq!(run.results["valid"], Value::Bool(true), "{}", run.context());
    let t = run.topic();
    assert_eq!(count(&t["lost"]), 0, "{}", run.context());
    assert_eq!(t["acked_read"], t["acked"], "{}", run.context());
}
