//! `kv serve --slow-request-ms`: a real node logs one WARN line per KV
//! request at least that slow, with its request id, op, level, key,
//! duration and outcome; with the default threshold a fast request logs
//! nothing.

mod common;

use std::time::Duration;

use common::*;

/// `line` without terminal colour codes (`ESC [ ... m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(ch) = chars.next() {
        if ch == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(ch);
        }
    }
    out
}

/// The node's log lines that report a slow request.
fn slow_lines(c: &TestCluster) -> Vec<String> {
    let log = std::fs::read_to_string(&c.node(1).log).unwrap_or_default();
    log.lines().map(strip_ansi).filter(|l| l.contains("slow request")).collect()
}

/// `--slow-request-ms 0` logs every request: a set and a failed CAS each
/// show with their own request id, op, level, key and outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threshold_zero_logs_every_request() {
    let c = TestCluster::start(1, &["--slow-request-ms", "0"]).await;
    // Quorum CAS goes through Raft: wait for the leader, or the CAS is refused as unavailable.
    c.raft_leader(&[1]).await;
    let ep = c.endpoints();
    assert_eq!(kv(&["--endpoints", &ep, "-c", "eventual", "set", "slow-key", "v"]).0, 0);
    assert_eq!(kv(&["--endpoints", &ep, "-c", "quorum", "cas", "slow-key", "--expect", "nope", "w"]).0, 1);
    let lines = eventually(Duration::from_secs(10), "two slow-request lines in the log", || async {
        let l = slow_lines(&c);
        (l.len() >= 2).then_some(l)
    })
    .await;
    let set = lines.iter().find(|l| l.contains("op=\"set\"")).unwrap_or_else(|| panic!("no set line in {lines:#?}"));
    assert!(set.contains("WARN"), "{set}");
    for field in ["request_id=", "level=\"eventual\"", "key=slow-key", "duration_ms=", "outcome=\"ok\""] {
        assert!(set.contains(field), "{field} missing from {set}");
    }
    let cas = lines.iter().find(|l| l.contains("op=\"cas\"")).unwrap_or_else(|| panic!("no cas line in {lines:#?}"));
    assert!(cas.contains("level=\"quorum\"") && cas.contains("outcome=\"compare_failed\""), "{cas}");
    let id = |l: &str| l.split("request_id=").nth(1).unwrap().split_whitespace().next().unwrap().to_string();
    assert_ne!(id(set), id(cas), "each request has its own id");
}

/// With the default threshold (1000 ms) a fast local request logs no
/// slow-request line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_threshold_does_not_log_a_fast_request() {
    let c = TestCluster::start(1, &[]).await;
    let ep = c.endpoints();
    let started = std::time::Instant::now();
    assert_eq!(kv(&["--endpoints", &ep, "-c", "eventual", "set", "fast-key", "v"]).0, 0);
    let took = started.elapsed();
    // The node logs before it replies: once the client has its answer, the line would be there.
    let lines = slow_lines(&c);
    if took < Duration::from_millis(1000) {
        assert!(lines.is_empty(), "a {took:?} request was logged as slow: {lines:#?}");
    }
    let log = std::fs::read_to_string(&c.node(1).log).unwrap();
    assert!(log.contains("capkv node serving"), "the node's log is the one read");
}
