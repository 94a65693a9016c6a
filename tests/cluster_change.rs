//! Changing the members of a running cluster of real `kv serve` processes
//! with the commands an operator uses: `kv serve --join`, `kv cluster add`,
//! `replace` and `members`. A 3-node cluster grows to 4, a dead node is
//! replaced, and the joined node restarts from what it saved. Every key
//! written before keeps its value through the nodes that joined, at every
//! level.

mod common;

use std::time::Duration;

use capkv::Level;
use common::{eventually, kv, opts, TestCluster};

fn members_json(endpoint: &str) -> serde_json::Value {
    let (code, out, err) = kv(&["--endpoints", endpoint, "--output", "json", "cluster", "members"]);
    assert_eq!(code, 0, "kv cluster members: {err}");
    serde_json::from_str(&out).unwrap()
}

/// Voter ids as the node at `endpoint` lists them, ascending.
fn voters(endpoint: &str) -> Vec<u64> {
    let m = members_json(endpoint);
    let mut v: Vec<u64> = m["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "voter")
        .map(|m| m["id"].as_u64().unwrap())
        .collect();
    v.sort();
    v
}

async fn voters_become(c: &TestCluster, at: u32, want: &[u64]) {
    let endpoint = c.node(at).addr.clone();
    eventually(Duration::from_secs(30), &format!("node {at} lists voters {want:?}"), || {
        let endpoint = endpoint.clone();
        async move { (voters(&endpoint) == want).then_some(()) }
    })
    .await;
}

async fn every_key_through(c: &TestCluster, id: u32, keys: u32) {
    let client = c.client(id);
    for level in [Level::Linearizable, Level::Quorum] {
        for i in 0..keys {
            let got = client.get(format!("k{i}").as_bytes(), opts(level)).await.unwrap();
            assert_eq!(got.map(|v| v.value), Some(format!("v{i}").into()), "k{i} at {level:?} through node {id}");
        }
    }
    // Eventual: once anti-entropy has brought the cells over.
    eventually(Duration::from_secs(30), &format!("every key at eventual through node {id}"), || async {
        for i in 0..keys {
            let got = client.get(format!("k{i}").as_bytes(), opts(Level::Eventual)).await.ok()?;
            if got.map(|v| v.value) != Some(format!("v{i}").into()) {
                return None;
            }
        }
        Some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grow_and_replace_with_the_cli() {
    const AE: &[&str] = &["--anti-entropy-interval-ms", "300"];
    let mut c = TestCluster::start(3, AE).await;
    let client = c.client(1);
    let levels = [Level::Linearizable, Level::Quorum, Level::Eventual];
    for i in 0..30u32 {
        let level = levels[i as usize % 3];
        client.set(format!("k{i}").as_bytes(), format!("v{i}").as_bytes(), opts(level)).await.unwrap();
    }
    let founders = c.endpoints();

    // Grow: node 4 starts with --join (no --cluster), then is added.
    let four = c.prepare_joiner(&[1, 2, 3], AE);
    c.spawn(four);
    c.wait_ready(four).await;
    let (code, out, err) = kv(&[
        "--endpoints",
        &founders,
        "cluster",
        "add",
        "--id",
        "4",
        "--address",
        &c.node(four).addr,
        "--peer-address",
        &c.node(four).peer_addr,
    ]);
    assert_eq!(code, 0, "kv cluster add: {out}{err}");
    assert!(out.contains("added as a learner") && out.contains("promoted to voter"), "{out}");
    voters_become(&c, four, &[1, 2, 3, 4]).await;
    every_key_through(&c, four, 30).await;

    // Replace: node 3 dies for good; node 5 takes its place.
    c.kill(3);
    let five = c.prepare_joiner(&[1, 2, 4], AE);
    c.spawn(five);
    c.wait_ready(five).await;
    let live = [1, 2, 4].map(|id| c.node(id).addr.clone()).join(",");
    let (code, out, err) = kv(&[
        "--endpoints",
        &live,
        "cluster",
        "replace",
        "--id",
        "3",
        "--new-id",
        "5",
        "--address",
        &c.node(five).addr,
        "--peer-address",
        &c.node(five).peer_addr,
    ]);
    assert_eq!(code, 0, "kv cluster replace: {out}{err}");
    assert!(out.contains("node 3 removed"), "{out}");
    voters_become(&c, five, &[1, 2, 4, 5]).await;
    every_key_through(&c, five, 30).await;

    // The joined node restarts from its data directory's join file and
    // asks nobody (its --join endpoints are not even read).
    c.nodes[five as usize - 1].join = Some("127.0.0.1:1".into());
    c.kill(five);
    c.restart(five).await;
    let c5 = c.client(five);
    c5.set(b"after", b"restart", opts(Level::Linearizable)).await.unwrap();
    let got = c.client(2).get(b"after", opts(Level::Quorum)).await.unwrap();
    assert_eq!(got.map(|v| v.value), Some("restart".into()));
}

#[test]
fn join_refuses_what_it_cannot_do() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("n");
    let d = d.to_str().unwrap();
    let (code, _, err) = kv(&["serve", "--id", "4", "--join", "127.0.0.1:1", "--data-dir", d]);
    assert_eq!(code, 2);
    assert!(err.contains("--join needs --listen"), "{err}");
    let (code, _, err) =
        kv(&["serve", "--id", "4", "--join", "127.0.0.1:1", "--cluster", "1=127.0.0.1:7001", "--data-dir", d]);
    assert_ne!(code, 0);
    assert!(err.contains("cannot be used with"), "{err}");
    let (code, _, err) = kv(&["cluster", "add", "--id", "4", "--address", "nohost"]);
    assert_eq!(code, 2);
    assert!(err.contains("--address"), "{err}");
}
