//! Negative controls (issue "Jepsen-style harness", item 8): nodes started
//! with a test-only switch that breaks a guarantee are caught by the
//! linearizability checker, on a deterministic fault schedule — and the same
//! schedule on correct nodes is judged linearizable, so the tests can fail.
//!
//! Histories are written in the harness's `history.jsonl` format and checked
//! with `kv check --format jsonl` (which runs `kv-jepsen`; both binaries are
//! built by `cargo build --release --workspace --bins`).

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use capkv::client::{CallOptions, ClientError};
use capkv::Level;
use common::*;

/// Records a history of integer register operations on key "k".
struct History {
    start: Instant,
    lines: Vec<String>,
}

impl History {
    fn new() -> Self {
        History { start: Instant::now(), lines: Vec::new() }
    }

    fn event(&mut self, process: u32, kind: &str, f: &str, value: Option<i64>, error: Option<&str>) {
        let value = value.map_or("null".to_string(), |v| v.to_string());
        let error = error.map_or(String::new(), |e| format!(r#","error":{e:?}"#));
        let t = self.start.elapsed().as_nanos();
        self.lines.push(format!(
            r#"{{"process":{process},"type":"{kind}","f":"{f}","key":"k","value":{value},"time_ns":{t}{error}}}"#
        ));
    }

    /// `kv check` on the history: exit status and stdout.
    fn check(&self) -> (i32, String) {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        for l in &self.lines {
            writeln!(file, "{l}").unwrap();
        }
        let (code, out, err) = kv(&["check", "--format", "jsonl", file.path().to_str().unwrap()]);
        assert!(code == 0 || code == 1, "kv check failed: {out}{err}");
        (code, out)
    }
}

fn int(v: &capkv::client::Value) -> i64 {
    std::str::from_utf8(&v.value).unwrap().parse().unwrap()
}

/// The schedule: k=1 on every replica; then a write of 2 reaches only node
/// 1's replica — the state a coordinator that crashed after one replica
/// leaves behind. (It is made with an eventual write on node 1 while nodes 2
/// and 3 are down, hinted handoff and anti-entropy off; to the register it is
/// a write with unknown outcome.) R1 reads through node 1 (majority {1, 2});
/// then, with node 1 paused, R2 reads through node 2 (majority {2, 3}).
/// Without read-impose R1 returns 2 and R2 returns 1: a new/old inversion.
async fn quorum_schedule(extra: &[&str]) -> (i32, String, (i64, i64)) {
    let q = CallOptions::new(Level::Quorum).timeout(Duration::from_secs(3));
    let mut c = TestCluster::start(3, extra).await;
    let mut h = History::new();
    h.event(0, "invoke", "write", Some(1), None);
    c.client(1).set(b"k", b"1", q).await.unwrap();
    h.event(0, "ok", "write", Some(1), None);
    c.kill(2);
    c.kill(3);
    h.event(1, "invoke", "write", Some(2), None);
    c.client(1).set(b"k", b"2", CallOptions::new(Level::Eventual)).await.unwrap();
    h.event(1, "info", "write", Some(2), None);
    c.restart(2).await;
    c.restart(3).await;
    // R1's majority is {1, 2}: node 3 is paused meanwhile.
    c.stop(3);
    h.event(2, "invoke", "read", None, None);
    let r1 = int(&c.client(1).get(b"k", q).await.unwrap().unwrap());
    h.event(2, "ok", "read", Some(r1), None);
    c.cont(3);
    // R2's majority is {2, 3}.
    c.stop(1);
    h.event(3, "invoke", "read", None, None);
    let r2 = int(&c.client(2).get(b"k", q).await.unwrap().unwrap());
    h.event(3, "ok", "read", Some(r2), None);
    c.cont(1);
    let (code, out) = h.check();
    (code, out, (r1, r2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_without_read_impose_is_caught() {
    let flags = ["--unsafe-skip-read-impose", "--no-hinted-handoff", "--anti-entropy-interval-ms", "3600000"];
    let (code, out, reads) = quorum_schedule(&flags).await;
    assert_eq!(reads, (2, 1), "the schedule produced the inversion");
    assert_eq!(code, 1, "the checker must report the violation: {out}");
    assert!(out.contains("not-linearizable"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_with_read_impose_passes_the_same_schedule() {
    let (code, out, reads) = quorum_schedule(&["--no-hinted-handoff", "--anti-entropy-interval-ms", "3600000"]).await;
    assert_eq!(reads, (2, 2), "R1 imposed 2 on a majority, so R2 sees it");
    assert_eq!(code, 0, "{out}");
}

/// k=1; a follower dies; k=2 is written (acknowledged by the majority);
/// the follower restarts with k=1 and, before it can catch up, the other
/// two nodes are paused; a linearizable read through it follows.
async fn linear_schedule(extra: &[&str]) -> (i32, String, Result<i64, ClientError>) {
    let l = CallOptions::new(Level::Linearizable).timeout(Duration::from_secs(2));
    let mut c = TestCluster::start(3, extra).await;
    let mut h = History::new();
    h.event(0, "invoke", "write", Some(1), None);
    c.client(1).set(b"k", b"1", l).await.unwrap();
    h.event(0, "ok", "write", Some(1), None);
    // The follower to isolate: any node but the leader.
    let leader = c.client(1).node_status(0, Duration::from_secs(1)).await.unwrap().raft.unwrap().leader_id as u32;
    let f = (1..=3).find(|&i| i != leader).unwrap();
    let other = (1..=3).find(|&i| i != leader && i != f).unwrap();
    eventually(Duration::from_secs(5), "the follower applied k=1", || async {
        let st = c.client(f).node_status(0, Duration::from_secs(1)).await.ok()?;
        let lst = c.client(leader).node_status(0, Duration::from_secs(1)).await.ok()?;
        (st.raft?.applied_index >= lst.raft?.commit_index).then_some(())
    })
    .await;
    c.kill(f);
    h.event(1, "invoke", "write", Some(2), None);
    c.client(leader).set(b"k", b"2", l).await.unwrap();
    h.event(1, "ok", "write", Some(2), None);
    c.stop(leader);
    c.stop(other);
    c.restart(f).await;
    h.event(2, "invoke", "read", None, None);
    let r = c.client(f).get(b"k", l).await.map(|v| int(&v.unwrap()));
    match &r {
        Ok(v) => h.event(2, "ok", "read", Some(*v), None),
        Err(ClientError::Unavailable(_)) => h.event(2, "fail", "read", None, Some("unavailable")),
        Err(_) => h.event(2, "info", "read", None, None),
    }
    c.cont(leader);
    c.cont(other);
    let (code, out) = h.check();
    (code, out, r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linearizable_reads_without_read_index_are_caught() {
    let (code, out, r) = linear_schedule(&["--unsafe-linearizable-local-reads"]).await;
    assert_eq!(r.ok(), Some(1), "the cut-off follower served its stale value");
    assert_eq!(code, 1, "the checker must report the stale read: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linearizable_reads_with_read_index_pass_the_same_schedule() {
    let (code, out, r) = linear_schedule(&[]).await;
    assert!(matches!(r, Err(ClientError::Unavailable(_))), "no majority, no read: {r:?}");
    assert_eq!(code, 0, "{out}");
}
