//! The cross-level contract (docs/consistency.md, "Mixing levels on one
//! key"): linearizable writes reach eventual and quorum readers; eventual and
//! quorum writes are not seen by the Raft state machine; mixed writes on one
//! key converge on every replica.

mod common;

use std::time::Duration;

use capkv::Level;
use common::*;

const E: Level = Level::Eventual;
const Q: Level = Level::Quorum;
const L: Level = Level::Linearizable;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linearizable_writes_are_seen_by_eventual_and_quorum_reads_on_every_node() {
    let c = TestCluster::start(3, &[]).await;
    let v = c.client(1).set(b"k", b"lin", opts(L)).await.unwrap();
    for id in 1..=3 {
        let client = c.client(id);
        let got = eventually(Duration::from_secs(5), "node applied the write", || async {
            client.get(b"k", opts(E)).await.ok().flatten()
        })
        .await;
        assert_eq!(&got.value[..], b"lin");
        assert_eq!(got.version, v, "the cell carries the state machine's version");
        assert_eq!(&client.get(b"k", opts(Q)).await.unwrap().unwrap().value[..], b"lin");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventual_and_quorum_writes_are_not_seen_by_linearizable_reads_or_cas() {
    let c = TestCluster::start(3, &[]).await;
    c.client(1).set(b"e", b"eventual", opts(E)).await.unwrap();
    c.client(2).set(b"q", b"quorum", opts(Q)).await.unwrap();
    assert_eq!(c.client(3).get(b"e", opts(L)).await.unwrap(), None);
    assert_eq!(c.client(3).get(b"q", opts(L)).await.unwrap(), None);
    // The state machine decides CAS from its own state only.
    let o = c.client(1).cas(b"q", None, b"lin", opts(L)).await.unwrap();
    assert!(o.swapped, "absent in the state machine, whatever the cells say");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_level_writes_on_one_key_converge_on_every_replica() {
    let c = TestCluster::start(3, &[]).await;
    for round in 0..5 {
        c.client(1).set(b"k", format!("e{round}").as_bytes(), opts(E)).await.unwrap();
        c.client(2).set(b"k", format!("q{round}").as_bytes(), opts(Q)).await.unwrap();
        c.client(3).set(b"k", format!("l{round}").as_bytes(), opts(L)).await.unwrap();
    }
    c.client(2).delete(b"k2", opts(E)).await.unwrap();
    c.client(3).set(b"k2", b"x", opts(Q)).await.unwrap();
    for key in [&b"k"[..], b"k2"] {
        eventually(Duration::from_secs(20), "all replicas hold the same cell", || async {
            let mut cells = Vec::new();
            for id in 1..=3 {
                cells.push(c.client(id).get(key, opts(E)).await.ok()?);
            }
            let same = cells.windows(2).all(|w| w[0] == w[1]);
            same.then_some(())
        })
        .await;
    }
}
