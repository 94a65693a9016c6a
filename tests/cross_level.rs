//! The cross-level contract (docs/consistency.md, "One keyspace"): every
//! level reads and writes the same cells; a write acknowledged at quorum or
//! linearizable is seen by every later quorum or linearizable read and CAS
//! on any node, and an eventual write once it reached a majority; quorum
//! CAS works (through consensus); mixed writes on one key converge.
//! The negative control (`--unsafe-skip-level-join`) shows these tests can
//! fail: without the join a quorum write is invisible to linearizable reads.

mod common;

use std::time::Duration;

use capkv::client::ClientError;
use capkv::Level;
use common::*;

const E: Level = Level::Eventual;
const Q: Level = Level::Quorum;
const L: Level = Level::Linearizable;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linearizable_writes_are_seen_by_quorum_reads_at_once_and_eventual_reads_eventually() {
    let c = TestCluster::start(3, &[]).await;
    let v = c.client(1).set(b"k", b"lin", opts(L)).await.unwrap();
    for id in 1..=3 {
        let client = c.client(id);
        // At once: the write was written back to a majority before its ack.
        let q = client.get(b"k", opts(Q)).await.unwrap().unwrap();
        assert_eq!((&q.value[..], q.version), (&b"lin"[..], v), "quorum read on node {id}");
        let got = eventually(Duration::from_secs(5), "node applied the write", || async {
            client.get(b"k", opts(E)).await.ok().flatten()
        })
        .await;
        assert_eq!(&got.value[..], b"lin");
        assert_eq!(got.version, v, "the cell carries the state machine's version");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_writes_are_seen_by_linearizable_reads_and_cas_on_every_node() {
    let c = TestCluster::start(3, &[]).await;
    // The first try as a new user: quorum set, then a default get.
    let v = c.client(1).set(b"color", b"blue", opts(Q)).await.unwrap();
    // At the ack a majority's cells hold it, so a majority's eventual reads
    // see it at once; every node's, once replicated.
    let mut holding = 0;
    for id in 1..=3 {
        holding += usize::from(c.client(id).get(b"color", opts(E)).await.unwrap().is_some_and(|g| g.version == v));
    }
    assert!(holding >= 2, "only {holding} of 3 replicas hold the acknowledged quorum write");
    for id in 1..=3 {
        let client = c.client(id);
        eventually(Duration::from_secs(10), "replicated to every node", || async {
            client.get(b"color", opts(E)).await.ok().flatten().filter(|g| g.version == v)
        })
        .await;
    }
    for id in 1..=3 {
        let got = c.client(id).get(b"color", opts(L)).await.unwrap().expect("linearizable get sees the quorum write");
        assert_eq!(&got.value[..], b"blue", "node {id}");
    }
    let o = c.client(2).cas(b"color", Some(b"blue"), b"red", opts(L)).await.unwrap();
    assert!(o.swapped, "linearizable cas compares against the quorum write: {o:?}");
    // And the CAS result is the key's value at every level that reads a majority.
    for id in 1..=3 {
        assert_eq!(&c.client(id).get(b"color", opts(Q)).await.unwrap().unwrap().value[..], b"red");
        assert_eq!(&c.client(id).get(b"color", opts(L)).await.unwrap().unwrap().value[..], b"red");
    }
    // A quorum write after the CAS wins over it (its version is above the CAS's).
    c.client(3).set(b"color", b"green", opts(Q)).await.unwrap();
    assert_eq!(&c.client(1).get(b"color", opts(L)).await.unwrap().unwrap().value[..], b"green");
    // A quorum delete is seen by linearizable reads and CAS too.
    c.client(1).delete(b"color", opts(Q)).await.unwrap();
    assert_eq!(c.client(2).get(b"color", opts(L)).await.unwrap(), None);
    let o = c.client(3).cas(b"color", Some(b"green"), b"x", opts(L)).await.unwrap();
    assert!(!o.swapped && o.current.is_none(), "deleted at quorum: {o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_cas_works_from_every_node_and_is_atomic() {
    let c = TestCluster::start(3, &[]).await;
    let o = c.client(1).cas(b"n", None, b"0", opts(Q)).await.unwrap();
    assert!(o.swapped, "{o:?}");
    // Increment from each node in turn, mixing the levels of the CAS.
    for i in 0..6u32 {
        let level = if i % 2 == 0 { Q } else { L };
        let client = c.client(1 + i % 3);
        let o = client.cas(b"n", Some(i.to_string().as_bytes()), (i + 1).to_string().as_bytes(), opts(level)).await;
        assert!(o.unwrap().swapped, "step {i} at {level}");
    }
    let o = c.client(2).cas(b"n", Some(b"5"), b"x", opts(Q)).await.unwrap();
    assert!(!o.swapped);
    assert_eq!(&o.current.unwrap().value[..], b"6", "a failed CAS gives the current value");
    assert_eq!(&c.client(3).get(b"n", opts(Q)).await.unwrap().unwrap().value[..], b"6");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_cas_without_a_majority_is_unavailable_and_changes_nothing() {
    let mut c = TestCluster::start(3, &[]).await;
    c.client(1).set(b"k", b"v", opts(Q)).await.unwrap();
    c.kill(2);
    c.kill(3);
    let quick = opts(Q).timeout(Duration::from_secs(2));
    match c.client(1).cas(b"k", Some(b"v"), b"w", quick).await {
        Err(ClientError::Unavailable(msg)) => assert!(!msg.is_empty()),
        other => panic!("expected UNAVAILABLE, got {other:?}"),
    }
    c.restart(2).await;
    let got = eventually(Duration::from_secs(10), "a majority again", || async {
        c.client(1).get(b"k", opts(Q)).await.ok().flatten()
    })
    .await;
    assert_eq!(&got.value[..], b"v", "the refused CAS changed nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventual_writes_are_seen_by_stronger_reads_once_replicated() {
    let c = TestCluster::start(3, &[]).await;
    c.client(1).set(b"size", b"42", opts(E)).await.unwrap();
    for id in 1..=3 {
        let client = c.client(id);
        let got = eventually(Duration::from_secs(10), "the eventual write reached a majority", || async {
            client.get(b"size", opts(L)).await.ok().flatten()
        })
        .await;
        assert_eq!(&got.value[..], b"42");
        assert_eq!(&client.get(b"size", opts(Q)).await.unwrap().unwrap().value[..], b"42");
    }
    let o = c.client(2).cas(b"size", Some(b"42"), b"43", opts(L)).await.unwrap();
    assert!(o.swapped, "{o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_join_quorum_writes_are_invisible_to_linearizable_reads() {
    // Negative control: the test switch that leaves the join out.
    let c = TestCluster::start(3, &["--unsafe-skip-level-join"]).await;
    c.client(1).set(b"color", b"blue", opts(Q)).await.unwrap();
    assert_eq!(c.client(2).get(b"color", opts(L)).await.unwrap(), None, "the two orders are apart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_level_writes_on_one_key_converge_on_every_replica() {
    let c = TestCluster::start(3, &[]).await;
    for round in 0..5 {
        c.client(1).set(b"k", format!("e{round}").as_bytes(), opts(E)).await.unwrap();
        c.client(2).set(b"k", format!("q{round}").as_bytes(), opts(Q)).await.unwrap();
        c.client(3).set(b"k", format!("l{round}").as_bytes(), opts(L)).await.unwrap();
        let o = c.client(1 + round % 3).cas(b"k", Some(format!("l{round}").as_bytes()), b"c", opts(Q)).await.unwrap();
        assert!(o.swapped, "round {round}: {o:?}");
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
