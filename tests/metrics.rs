//! `kv serve --metrics-listen`: real nodes scraped over HTTP, the text
//! parsed with a Prometheus parser (`prometheus-parse`), and the numbers
//! checked against what the test did — request counters and latency
//! buckets move by the requests sent, Raft, topic, RocksDB and process
//! families are there with sane values.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use prometheus_parse::{Scrape, Value};

/// The metrics address node `id` logged at start (it binds port 0).
async fn metrics_addr(c: &TestCluster, id: u32) -> String {
    eventually(Duration::from_secs(20), "the node to log its metrics address", || async {
        let log = std::fs::read_to_string(&c.node(id).log).ok()?;
        let (_, rest) = log.split_once("serving Prometheus metrics at http://")?;
        Some(rest.split_once("/metrics")?.0.to_string())
    })
    .await
}

/// One HTTP/1.1 GET; (status code, body).
fn http_get(addr: &str, path: &str) -> (u32, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no header end in {raw:?}"));
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

fn scrape(addr: &str) -> Scrape {
    let (status, body) = http_get(addr, "/metrics");
    assert_eq!(status, 200, "{body}");
    assert!(body.ends_with("# EOF\n"), "not complete OpenMetrics text: ...{}", &body[body.len().saturating_sub(200)..]);
    Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap()
}

fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples.iter().find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v))).and_then(
        |x| match x.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(v),
            _ => None,
        },
    )
}

fn requests(s: &Scrape, op: &str, level: &str, outcome: &str) -> f64 {
    value(s, "capkv_requests_total", &[("op", op), ("level", level), ("outcome", outcome)])
        .unwrap_or_else(|| panic!("no capkv_requests_total for {op}/{level}/{outcome}"))
}

/// (le, cumulative count) buckets of the request histogram for op × level.
fn buckets(s: &Scrape, op: &str, level: &str) -> Vec<(f64, f64)> {
    let h = s
        .samples
        .iter()
        .find(|x| {
            x.metric == "capkv_request_duration_seconds"
                && x.labels.get("op") == Some(op)
                && x.labels.get("level") == Some(level)
        })
        .unwrap_or_else(|| panic!("no histogram for {op}/{level}"));
    let Value::Histogram(b) = &h.value else { panic!("not a histogram: {h:?}") };
    let mut b: Vec<_> = b.iter().map(|c| (c.less_than, c.count)).collect();
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    b
}

/// Requests sent to node 1 show in its counters by op × level × outcome,
/// and the latency histogram of each op × level gains exactly as many
/// observations, in finite buckets; `kv bench` moves them too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_counters_and_latency_buckets_move_with_requests() {
    let c = TestCluster::start(3, &["--metrics-listen", "127.0.0.1:0"]).await;
    c.raft_leader(&[1, 2, 3]).await;
    let addr = metrics_addr(&c, 1).await;
    let before = scrape(&addr);
    let ep = c.node(1).addr.clone();
    let run = |args: &[&str]| {
        let mut a = vec!["--endpoints", ep.as_str(), "-c", "quorum"];
        a.extend_from_slice(args);
        kv(&a)
    };
    for i in 0..5 {
        assert_eq!(run(&["set", &format!("k{i}"), "v"]).0, 0);
    }
    assert_eq!(run(&["get", "k0"]).0, 0);
    assert_eq!(run(&["get", "missing"]).0, 1);
    assert_eq!(run(&["cas", "k1", "--expect", "nope", "w"]).0, 1);
    assert_eq!(run(&["del", "k2"]).0, 0);
    let after = scrape(&addr);
    let delta = |op, outcome| requests(&after, op, "quorum", outcome) - requests(&before, op, "quorum", outcome);
    assert_eq!(delta("set", "ok"), 5.0);
    assert_eq!(delta("get", "ok"), 1.0);
    assert_eq!(delta("get", "not_found"), 1.0);
    assert_eq!(delta("cas", "compare_failed"), 1.0);
    assert_eq!(delta("cas", "ok"), 0.0);
    assert_eq!(delta("del", "ok"), 1.0);
    assert_eq!(requests(&after, "set", "eventual", "ok"), 0.0, "no eventual request was sent");

    let (b0, b1) = (buckets(&before, "set", "quorum"), buckets(&after, "set", "quorum"));
    assert_eq!(b1.last().unwrap(), &(f64::INFINITY, b0.last().unwrap().1 + 5.0));
    // Quorum sets on loopback finish in well under 30 s: the largest finite bucket holds them all.
    assert_eq!(b1[b1.len() - 2].1, b1.last().unwrap().1, "{b1:?}");
    assert!(b1.windows(2).all(|w| w[0].1 <= w[1].1), "buckets not cumulative: {b1:?}");
    assert_eq!(
        value(&after, "capkv_request_duration_seconds_count", &[("op", "set"), ("level", "quorum")]),
        Some(b1.last().unwrap().1)
    );

    // kv bench at the linearizable level moves that level's counters and
    // buckets. The client sends linearizable requests to the Raft leader it
    // learns of, so sum over the nodes.
    let mut addrs = Vec::new();
    for id in 1..=3 {
        addrs.push(metrics_addr(&c, id).await);
    }
    let sum = |scrapes: &[Scrape], f: &dyn Fn(&Scrape) -> f64| scrapes.iter().map(f).sum::<f64>();
    let lin_before: Vec<Scrape> = addrs.iter().map(|a| scrape(a)).collect();
    let (code, _, err) = kv(&[
        "--endpoints",
        &ep,
        "-c",
        "linearizable",
        "bench",
        "--op",
        "set",
        "--clients",
        "4",
        "--requests",
        "200",
        "--warmup",
        "0",
        "--no-progress",
    ]);
    assert_eq!(code, 0, "kv bench failed: {err}");
    let lin_after: Vec<Scrape> = addrs.iter().map(|a| scrape(a)).collect();
    let ok = |s: &Scrape| requests(s, "set", "linearizable", "ok");
    let moved = sum(&lin_after, &ok) - sum(&lin_before, &ok);
    assert!(moved >= 200.0, "linearizable set ok moved by {moved}");
    let inf = |s: &Scrape| buckets(s, "set", "linearizable").last().unwrap().1;
    assert_eq!(sum(&lin_after, &inf) - sum(&lin_before, &inf), moved, "one observation per counted request");
    let finite = |s: &Scrape| buckets(s, "set", "linearizable").iter().rev().nth(1).unwrap().1;
    assert_eq!(sum(&lin_after, &finite), sum(&lin_after, &inf), "a set took longer than 30 s?");
    // Raft writes were applied, so every node's apply histogram moved.
    for s in &lin_after {
        let apply = value(s, "capkv_raft_apply_duration_seconds_count", &[]).unwrap();
        assert!(apply > 0.0, "raft apply count {apply}");
    }
}

/// The gauges computed at scrape time say what the cluster is: a leader
/// all nodes agree on, commit ≥ applied, one Raft role set; a topic's
/// replica shows its log end offset and high watermark reach the records
/// produced and its ISR the whole replica set; RocksDB and process
/// families exist with plausible values; other paths are 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_topic_store_and_process_gauges() {
    let c = TestCluster::start(3, &["--metrics-listen", "127.0.0.1:0"]).await;
    let leader = c.raft_leader(&[1, 2, 3]).await;
    let ep = c.endpoints();
    let (code, _, err) =
        kv(&["--endpoints", &ep, "topic", "create", "m", "--partitions", "1", "--replication-factor", "3"]);
    assert_eq!(code, 0, "{err}");
    let lines: String = (0..10).map(|i| format!("r{i}\n")).collect();
    let (code, _, err) = kv_stdin(&["--endpoints", &ep, "topic", "produce", "m", "--acks", "all"], &lines);
    assert_eq!(code, 0, "{err}");
    for id in 1..=3 {
        let addr = metrics_addr(&c, id).await;
        let s = eventually(Duration::from_secs(20), "replica m/0 caught up with ISR of 3", || async {
            let s = scrape(&addr);
            let p = [("topic", "m"), ("partition", "0")];
            let ok = value(&s, "capkv_topic_log_end_offset", &p) == Some(10.0)
                && value(&s, "capkv_topic_high_watermark", &p) == Some(10.0)
                && value(&s, "capkv_topic_isr_size", &p) == Some(3.0)
                && value(&s, "capkv_topic_replicas", &p) == Some(3.0);
            ok.then_some(s)
        })
        .await;
        let p = [("topic", "m"), ("partition", "0")];
        assert_eq!(value(&s, "capkv_topic_under_replicated", &p), Some(0.0));
        assert_eq!(value(&s, "capkv_node_id", &[]), Some(id as f64));
        assert_eq!(value(&s, "capkv_raft_leader_id", &[]), Some(leader as f64));
        assert!(value(&s, "capkv_raft_term", &[]).unwrap() >= 1.0);
        let (commit, applied) =
            (value(&s, "capkv_raft_commit_index", &[]).unwrap(), value(&s, "capkv_raft_applied_index", &[]).unwrap());
        assert!(applied > 0.0 && commit >= applied, "commit {commit} applied {applied}");
        let roles: f64 = ["leader", "follower", "candidate", "pre-candidate"]
            .iter()
            .map(|&r| value(&s, "capkv_raft_role", &[("role", r)]).unwrap())
            .sum();
        assert_eq!(roles, 1.0);
        assert_eq!(value(&s, "capkv_raft_role", &[("role", "leader")]), Some((id == leader) as u8 as f64));
        assert!(value(&s, "capkv_raft_leader_changes_total", &[]).unwrap() >= 1.0);
        assert!(value(&s, "capkv_rocksdb_live_data_bytes", &[("cf", "cells")]).is_some());
        assert!(value(&s, "capkv_rocksdb_live_data_bytes", &[("cf", "topic_data")]).is_some());
        assert_eq!(value(&s, "capkv_rocksdb_write_stopped", &[]), Some(0.0));
        assert!(value(&s, "process_resident_memory_bytes", &[]).unwrap() > 1e6);
        assert!(value(&s, "process_open_fds", &[]).unwrap() > 3.0);
        for peer in (1..=3).filter(|&p| p != id) {
            let peer = peer.to_string();
            assert!(value(&s, "capkv_hints_pending", &[("peer", peer.as_str())]).is_some());
        }
        assert!(value(&s, "capkv_read_imposes_total", &[]).is_some(), "existing counters are exported");
    }
    // The produce went to the partition leader: the records show in the sum over nodes.
    let mut produced = 0.0;
    for id in 1..=3 {
        produced += value(&scrape(&metrics_addr(&c, id).await), "capkv_topic_produce_records_total", &[]).unwrap();
    }
    assert_eq!(produced, 10.0);
    let (status, _) = http_get(&metrics_addr(&c, 1).await, "/");
    assert_eq!(status, 404);
}

/// Every metric the shipped Grafana dashboard queries is one a node
/// exports (a renamed metric would leave a panel silently empty).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_queries_only_exported_metrics() {
    // Two nodes: per-peer families (hints pending) have no series on a node without peers.
    let c = TestCluster::start(2, &["--metrics-listen", "127.0.0.1:0"]).await;
    let ep = c.endpoints();
    let (code, _, err) =
        kv(&["--endpoints", &ep, "topic", "create", "d", "--partitions", "1", "--replication-factor", "2"]);
    assert_eq!(code, 0, "{err}");
    let addr = metrics_addr(&c, 1).await;
    // Partition gauges appear once the replica is open.
    let s = eventually(Duration::from_secs(20), "topic d's replica in the scrape", || async {
        let s = scrape(&addr);
        value(&s, "capkv_topic_high_watermark", &[("topic", "d")]).is_some().then_some(s)
    })
    .await;
    let mut exported: std::collections::BTreeSet<String> = s.samples.iter().map(|x| x.metric.clone()).collect();
    // Histograms parse as one sample named after the family; queries use its _bucket series.
    let hist: Vec<String> = s
        .samples
        .iter()
        .filter(|x| matches!(x.value, Value::Histogram(_)))
        .map(|x| format!("{}_bucket", x.metric))
        .collect();
    exported.extend(hist);
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/grafana/capkv-dashboard.json");
    let dash: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut queried = std::collections::BTreeSet::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(i) = rest.find(|ch: char| ch.is_ascii_lowercase()) {
                rest = &rest[i..];
                let end = rest.find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_')).unwrap_or(rest.len());
                let word = &rest[..end];
                if word.starts_with("capkv_") || word.starts_with("process_") {
                    queried.insert(word.to_string());
                }
                rest = &rest[end..];
            }
        }
    }
    assert!(queried.len() >= 15, "too few metrics found in the dashboard: {queried:?}");
    let missing: Vec<_> = queried.difference(&exported).collect();
    assert!(missing.is_empty(), "the dashboard queries metrics no node exports: {missing:?}");
}

/// A linearizable set's write-back names the applied index its node
/// answered at; a replica that has applied that far holds the cell already
/// and acknowledges without writing (`capkv_write_back_cells_held_total`,
/// docs/consistency.md step 3). The cell is on a majority at every ack all
/// the same: a majority of the nodes' own cells (eventual gets read only
/// the local cell) hold each set's version as soon as it is acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_backs_are_held_by_replicas_that_applied_the_entry() {
    use capkv::Level;
    let c = TestCluster::start(3, &["--metrics-listen", "127.0.0.1:0"]).await;
    c.raft_leader(&[1, 2, 3]).await;
    let mut addrs = Vec::new();
    for id in 1..=3 {
        addrs.push(metrics_addr(&c, id).await);
    }
    let held = |addrs: &[String]| -> f64 {
        addrs.iter().map(|a| value(&scrape(a), "capkv_write_back_cells_held_total", &[]).unwrap_or(0.0)).sum()
    };
    assert_eq!(held(&addrs), 0.0, "nothing written back yet");
    let (client, readers) = (c.client(1), [c.client(1), c.client(2), c.client(3)]);
    // Followers apply as soon as the leader broadcasts the commit, so they
    // have usually applied by the time the write-back reaches them; bounded.
    let mut sets = 0;
    while held(&addrs) == 0.0 {
        assert!(sets < 300, "no replica held a write-back in {sets} linearizable sets");
        for _ in 0..10 {
            let key = format!("held-{sets}");
            let v = client.set(key.as_bytes(), b"x", opts(Level::Linearizable)).await.unwrap();
            let mut holding = 0;
            for r in &readers {
                let own = r.get(key.as_bytes(), opts(Level::Eventual)).await.unwrap();
                holding += usize::from(own.is_some_and(|g| g.version == v));
            }
            assert!(holding >= 2, "set {sets}: only {holding} of 3 replicas hold the acknowledged write");
            sets += 1;
        }
    }
}
