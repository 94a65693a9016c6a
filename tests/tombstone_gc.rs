//! Tombstone GC on 3 real processes (issue 22; docs/consistency.md
//! "Tombstone GC"): a key deleted while one replica is down does not come
//! back at any level once the tombstone is purged, and the space is
//! reclaimed on every node. The negative control runs the same scenario
//! with the "every replica holds it" condition switched off
//! (`--unsafe-gc-skip-replica-check`) and sees the deleted value return.
//!
//! What "down for less than the grace period" must mean here: a node that
//! comes back before the tombstone is older than the grace period gets the
//! tombstone from hints, read repair or anti-entropy before anyone could
//! purge it, so the age condition alone already protects it and such a test
//! could not fail. The scenario that needs the replica condition is the one
//! where node 3 is still down when the tombstone passes the grace period on
//! the others: the test waits for exactly that condition (the GC has looked
//! at the tombstone and refused: `gc_tombstones_blocked`; without the check,
//! it purged: `tombstones_purged`), never for a fixed time. Node 3 then comes
//! back through a Raft snapshot (the log is compacted meanwhile), so it does
//! not replay the purge command either: only the replica condition stands
//! between its old value and the others.

mod common;

use std::sync::Arc;
use std::time::Duration;

use capkv::clock::Clock;
use capkv::store::Store;
use capkv::Level;
use common::*;

const KEY: &[u8] = b"doomed";
const OLD: &[u8] = b"v1";

fn flags(unsafe_gc: bool) -> Vec<String> {
    let mut v: Vec<String> = [
        "--gc-grace",
        "2s",
        "--anti-entropy-interval-ms",
        "300",
        // A lagging node catches up by snapshot (see the module docs).
        "--raft-snapshot-entries",
        "20",
        "--raft-catch-up-entries",
        "5",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if unsafe_gc {
        v.push("--unsafe-gc-skip-replica-check".into());
    }
    v
}

async fn counter(c: &TestCluster, id: u32, name: &str) -> Option<u64> {
    let st = c.client(id).any_status(Duration::from_secs(1)).await.ok()?;
    Some(st.counters.get(name).copied().unwrap_or(0))
}

/// Node 3 holds `KEY = OLD` and is down; nodes 1 and 2 deleted it (quorum
/// level) and their GC has considered the tombstone past the grace period;
/// the Raft log is compacted past all of it; node 3 is back. Returns the
/// cluster.
async fn delete_while_node_3_is_down(unsafe_gc: bool) -> TestCluster {
    let mut c = TestCluster::start(3, &flags(unsafe_gc).iter().map(String::as_str).collect::<Vec<_>>()).await;
    // Written through Raft, so the state machine holds the old value too:
    // the purge must drop it there as well, or a linearizable get brings
    // it back.
    c.client(1).set(KEY, OLD, opts(Level::Linearizable)).await.unwrap();
    let n3 = c.client(3);
    eventually(Duration::from_secs(10), "node 3 holds the old value", || async {
        n3.get(KEY, opts(Level::Eventual)).await.ok()?.filter(|v| &v.value[..] == OLD)
    })
    .await;
    c.kill(3);
    c.raft_leader(&[1, 2]).await;
    c.client(1).delete(KEY, opts(Level::Quorum)).await.unwrap();
    if unsafe_gc {
        eventually(Duration::from_secs(30), "nodes 1 and 2 purged the tombstone", || async {
            for id in [1, 2] {
                (counter(&c, id, "tombstones_purged").await? >= 1).then_some(())?;
            }
            Some(())
        })
        .await;
    } else {
        eventually(Duration::from_secs(30), "the GC refused a tombstone past the grace period", || async {
            let blocked =
                counter(&c, 1, "gc_tombstones_blocked").await? + counter(&c, 2, "gc_tombstones_blocked").await?;
            (blocked >= 1).then_some(())
        })
        .await;
        for id in [1, 2] {
            assert_eq!(counter(&c, id, "tombstones_purged").await, Some(0), "node {id} purged with a replica down");
        }
    }
    // Compact the log past the delete and any purge: node 3 must catch up
    // by snapshot.
    let n1 = c.client(1);
    for i in 0..60 {
        n1.set(format!("filler-{i}").as_bytes(), b"x", opts(Level::Linearizable)).await.unwrap();
    }
    c.restart(3).await;
    // The premise: node 3 skipped the log (and any Purge in it).
    eventually(Duration::from_secs(30), "node 3 caught up by a snapshot install", || async {
        std::fs::read_to_string(&c.node(3).log).ok()?.contains("snapshot installed").then_some(())
    })
    .await;
    c
}

async fn value_at(c: &TestCluster, id: u32, level: Level) -> Option<Vec<u8>> {
    c.client(id).get(KEY, opts(level)).await.unwrap().map(|v| v.value.to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_key_stays_deleted_and_its_tombstone_is_purged_everywhere() {
    let mut c = delete_while_node_3_is_down(false).await;
    // Node 3 gets the tombstone (anti-entropy); then, and only then, every
    // replica covers it and the purge is applied on all three.
    eventually(Duration::from_secs(60), "the purge applied on every node", || async {
        for id in 1..=3 {
            (counter(&c, id, "tombstones_purged").await? >= 1).then_some(())?;
        }
        Some(())
    })
    .await;
    // Several anti-entropy rounds on every node after the purge: nothing
    // brings the value back.
    let mut rounds = Vec::new();
    for id in 1..=3 {
        rounds.push(counter(&c, id, "anti_entropy_rounds").await.unwrap());
    }
    eventually(Duration::from_secs(30), "three more anti-entropy rounds on every node", || async {
        for id in 1..=3u32 {
            (counter(&c, id, "anti_entropy_rounds").await? >= rounds[id as usize - 1] + 3).then_some(())?;
        }
        Some(())
    })
    .await;
    for id in 1..=3 {
        for level in [Level::Eventual, Level::Quorum, Level::Linearizable] {
            assert_eq!(value_at(&c, id, level).await, None, "the deleted value came back on node {id} at {level:?}");
        }
    }
    // Space reclaimed: no cell of the key in any node's store.
    for id in 1..=3 {
        assert_eq!(c.terminate(id).code(), Some(0));
    }
    for id in 1..=3 {
        let store = Store::open(c.data_dir(id), Arc::new(Clock::new(id, 500)), Vec::new()).unwrap();
        assert_eq!(store.get_cell(KEY).unwrap(), None, "node {id} still holds a cell of the purged key");
        assert!(store.get_cell(b"filler-0").unwrap().is_some(), "node {id} lost other data");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_without_the_replica_check_the_deleted_value_comes_back() {
    let c = delete_while_node_3_is_down(true).await;
    // Node 3 still holds the old value, nobody holds the tombstone any more:
    // anti-entropy spreads the old value back to every node.
    for id in 1..=3 {
        eventually(Duration::from_secs(30), "the deleted value back on every node", || async {
            (value_at(&c, id, Level::Eventual).await.as_deref() == Some(OLD)).then_some(())
        })
        .await;
    }
    assert_eq!(value_at(&c, 1, Level::Quorum).await.as_deref(), Some(OLD));
}
