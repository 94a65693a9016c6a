//! The quorum level (ABD) on 3 real processes (issue "Quorum level"):
//! available with a majority, refused without one within the deadline while
//! eventual still answers, and a stale replica serving the latest value by
//! read-impose after it comes back.

mod common;

use std::time::{Duration, Instant};

use capkv::client::{CallOptions, ClientError};
use capkv::Level;
use common::*;

const Q: Level = Level::Quorum;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_paused_quorum_ops_still_succeed() {
    let c = TestCluster::start(3, &[]).await;
    c.stop(3);
    let n1 = c.client(1);
    let t = Instant::now();
    n1.set(b"k", b"v1", opts(Q)).await.unwrap();
    assert_eq!(&n1.get(b"k", opts(Q)).await.unwrap().unwrap().value[..], b"v1");
    n1.delete(b"k", opts(Q)).await.unwrap();
    assert!(c.client(2).get(b"k", opts(Q)).await.unwrap().is_none());
    // A majority answers: nobody waited for the paused node's deadline.
    assert!(t.elapsed() < Duration::from_secs(2), "took {:?}", t.elapsed());
    c.cont(3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_paused_unavailable_within_deadline_and_eventual_answers() {
    let c = TestCluster::start(3, &[]).await;
    let n1 = c.client(1);
    n1.set(b"k", b"v", opts(Q)).await.unwrap();
    c.stop(2);
    c.stop(3);
    let deadline = Duration::from_secs(2);
    for op in ["get", "set"] {
        let t = Instant::now();
        let r = match op {
            "get" => n1.get(b"k", CallOptions::new(Q).timeout(deadline)).await.map(|_| ()),
            _ => n1.set(b"k", b"w", CallOptions::new(Q).timeout(deadline)).await.map(|_| ()),
        };
        let took = t.elapsed();
        assert!(took < deadline + Duration::from_millis(500), "{op} took {took:?}");
        match r {
            Err(ClientError::Unavailable(m)) => {
                assert!(m.contains("1 of 3 replicas answered"), "{m}");
                assert!(m.contains("2 needed"), "{m}");
            }
            other => panic!("{op}: expected UNAVAILABLE, got {other:?}"),
        }
    }
    // CAP: the same node still serves the eventual level.
    assert_eq!(&n1.get(b"k", opts(Level::Eventual)).await.unwrap().unwrap().value[..], b"v");
    n1.set(b"e", b"1", opts(Level::Eventual)).await.unwrap();
    c.cont(2);
    c.cont(3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_node_returns_the_latest_value_at_quorum_after_sigcont() {
    let c = TestCluster::start(3, &[]).await;
    c.client(1).set(b"k", b"old", opts(Q)).await.unwrap();
    c.stop(3);
    for i in 0..5 {
        c.client(1).set(b"k", format!("new{i}").as_bytes(), opts(Q)).await.unwrap();
    }
    c.cont(3);
    assert_eq!(&c.client(3).get(b"k", opts(Q)).await.unwrap().unwrap().value[..], b"new4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_whose_majority_holds_a_stale_replica_imposes_the_newest_value() {
    // ABD read phase 2: node 3 missed the writes (killed, so nothing in
    // flight can reach it later; anti-entropy off). With node 2 paused, a
    // get through node 3 must use the majority {1, 3}: it returns the newest
    // value and writes it back before answering. A later get that sees a
    // unanimous majority does not write back.
    let mut c = TestCluster::start(3, &["--anti-entropy-interval-ms", "3600000"]).await;
    c.client(1).set(b"k", b"old", opts(Q)).await.unwrap();
    let n3 = c.client(3);
    eventually(Duration::from_secs(5), "node 3 holds the old value", || async {
        n3.get(b"k", opts(Level::Eventual)).await.ok()?.filter(|v| &v.value[..] == b"old")
    })
    .await;
    c.kill(3);
    for i in 0..5 {
        c.client(1).set(b"k", format!("new{i}").as_bytes(), opts(Q)).await.unwrap();
    }
    c.restart(3).await;
    c.stop(2);
    let n3 = c.client(3);
    assert_eq!(&n3.get(b"k", opts(Q)).await.unwrap().unwrap().value[..], b"new4");
    let imposes = |id: u32| {
        let client = c.client(id);
        async move { client.any_status(Duration::from_secs(2)).await.unwrap().counters["read_imposes"] }
    };
    assert_eq!(imposes(3).await, 1, "the get through node 3 had to write back");
    // The write-back reached node 3's own replica before the answer.
    assert_eq!(&n3.get(b"k", opts(Level::Eventual)).await.unwrap().unwrap().value[..], b"new4");
    c.cont(2);
    c.client(1).get(b"k", opts(Q)).await.unwrap();
    assert_eq!(imposes(1).await, 0, "nodes 1 and 3 agree now: no write-back");
    // The counter is visible in `kv cluster status`.
    let (code, out, _) = kv(&["--endpoints", &c.endpoints(), "cluster", "status"]);
    assert_eq!(code, 0);
    assert!(out.contains("IMPOSES"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_issue_commands_show_one_keyspace_from_the_cli() {
    // `kv -c quorum set color blue; kv get color; kv cas color --expect blue red`
    // and an eventual write read back at the default level, from any node.
    let c = TestCluster::start(3, &[]).await;
    let ep = c.endpoints();
    let (code, _, err) = kv(&["--endpoints", &ep, "-c", "quorum", "set", "color", "blue"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = kv(&["--endpoints", &ep, "get", "color"]);
    assert_eq!((code, out.trim()), (0, "blue"), "{err}");
    let (code, out, err) = kv(&["--endpoints", &ep, "cas", "color", "--expect", "blue", "red"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = kv(&["--endpoints", &ep, "-c", "quorum", "cas", "color", "--expect", "red", "green"]);
    assert_eq!(code, 0, "quorum cas works: {out}{err}");
    let (code, out, _) = kv(&["--endpoints", &ep, "-c", "quorum", "get", "color"]);
    assert_eq!((code, out.trim()), (0, "green"));
    let (code, _, err) = kv(&["--endpoints", &ep, "-c", "eventual", "set", "size", "42"]);
    assert_eq!(code, 0, "{err}");
    let got = eventually(Duration::from_secs(10), "the eventual write reached a majority", || async {
        let (code, out, _) = kv(&["--endpoints", &ep, "get", "size"]);
        (code == 0).then_some(out)
    })
    .await;
    assert_eq!(got.trim(), "42");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_writes_survive_kill_9_of_every_node() {
    let mut c = TestCluster::start(3, &[]).await;
    for i in 0..100 {
        c.client(1 + i % 3).set(format!("q{i}").as_bytes(), b"x", opts(Q)).await.unwrap();
    }
    for id in 1..=3 {
        c.kill(id);
    }
    for id in 1..=3 {
        c.restart(id).await;
    }
    for i in 0..100 {
        assert!(c.client(2).get(format!("q{i}").as_bytes(), opts(Q)).await.unwrap().is_some(), "lost q{i}");
    }
}
