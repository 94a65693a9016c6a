//! Raft membership changes in the deterministic whole-node simulation
//! (`capkv::sim`): a node joins as a learner, catches up (by snapshot: the
//! log is compacted every few entries), is promoted, a dead voter is
//! removed, and the linearizable level keeps serving every key through the
//! new node. Refusals are checked too: a removed id is never reused, a
//! removal that would leave no reachable majority is refused.
//!
//! Changes go through `Cluster.ChangeMembers` on the leader, as `kv
//! cluster add/promote/remove` send them (tests/cluster_change.rs drives
//! those commands on real processes); the quorum level's replica set
//! follows the voters (tests/quorum_reconfig.rs).

mod common;

use std::time::Duration;

use capkv::client::{CallOptions, Client};
use capkv::proto::{ChangeMembersRequest, MemberChangeOp};
use capkv::sim::cluster::{peer_host, SimCluster, SimSettings};
use capkv::Level;
use common::sim::{change, members, only, runtime, ATTEMPTS, RETRY_MS};
use tonic::Code;

fn lin() -> CallOptions {
    CallOptions::new(Level::Linearizable).timeout(Duration::from_secs(5))
}

async fn write_keys(client: &Client, range: std::ops::Range<u32>) {
    for i in range {
        client.set(format!("k{i}").as_bytes(), format!("v{i}").as_bytes(), lin()).await.expect("linearizable set");
    }
}

/// Waits until node `id` (the only endpoint of `client`) lists exactly
/// `voters` as voters, each with its peer address.
async fn node_lists_voters(client: &Client, id: u32, voters: &[u32]) {
    let want: Vec<(u32, String, String)> = voters.iter().map(|&v| (v, "voter".to_string(), peer_host(v))).collect();
    let mut seen = None;
    for _ in 0..ATTEMPTS {
        let m = client.members(Duration::from_secs(1)).await.unwrap();
        assert_eq!(m.answered_by, id);
        let listed: Vec<(u32, String, String)> =
            m.members.iter().map(|m| (m.id, m.role.clone(), m.peer_address.clone())).collect();
        if listed == want {
            return;
        }
        seen = Some((m, client.node_status(0, Duration::from_secs(1)).await.map(|s| s.raft)));
        tokio::time::sleep(Duration::from_millis(RETRY_MS)).await;
    }
    panic!("node {id} never listed {want:?}: {seen:?}");
}

/// A joining node must learn the founding voters even when the leader's
/// log was never compacted. It used to receive the log from entry 1 and
/// rebuild the configuration from the changes in it alone: after its own
/// promotion it counted itself as the only voter, elected itself and
/// committed alone (found by hand on real processes, 2026-12-06). Founding
/// logs now start at `RAFT_INIT_INDEX`, so a joining node gets a snapshot.
#[test]
fn a_node_joining_an_uncompacted_cluster_learns_every_voter() {
    let _ = tracing_subscriber::fmt().with_env_filter("capkv=info").try_init();
    let dir = tempfile::tempdir().unwrap();
    runtime(11).block_on(async {
        let settings = SimSettings { seed: 11, ..SimSettings::default() };
        let mut cluster = SimCluster::start(dir.path().to_path_buf(), settings).unwrap();
        let client = cluster.client("client");
        write_keys(&client, 0..10).await;
        cluster.join_node(4).unwrap();
        change(&cluster, &client, MemberChangeOp::MemberAddLearner, 4).await.unwrap();
        change(&cluster, &client, MemberChangeOp::MemberPromote, 4).await.unwrap();
        let only4 = only(&cluster, 4);
        node_lists_voters(&only4, 4, &[1, 2, 3, 4]).await;
        // Cut off, the new node cannot win an election (it needs 3 of 4).
        cluster.isolate(4);
        tokio::time::sleep(Duration::from_secs(5)).await;
        let raft = only4.node_status(0, Duration::from_secs(1)).await.unwrap().raft.unwrap();
        assert_ne!(raft.leader_id, 4, "node 4 leads alone: {raft:?}");
        cluster.net.heal_all();
        write_keys(&client, 10..20).await;
        for i in 0..20 {
            let v = only4.get(format!("k{i}").as_bytes(), lin()).await.expect("linearizable get on node 4");
            assert_eq!(v.map(|v| v.value), Some(format!("v{i}").into()), "k{i} through the new node");
        }
        cluster.shutdown().await.unwrap();
    });
}

/// The eventual level follows the member set: a node added later gets
/// eventual writes pushed to it (not only by anti-entropy, whose rounds
/// are 10 s apart), and the hints kept for a removed node are deleted.
#[test]
fn eventual_replication_follows_the_members() {
    let _ = tracing_subscriber::fmt().with_env_filter("capkv=info").try_init();
    let dir = tempfile::tempdir().unwrap();
    runtime(13).block_on(async {
        let settings = SimSettings { seed: 13, ..SimSettings::default() };
        let mut cluster = SimCluster::start(dir.path().to_path_buf(), settings).unwrap();
        let client = cluster.client("client");
        write_keys(&client, 0..5).await;
        let only1 = only(&cluster, 1);
        let ev = || CallOptions::new(Level::Eventual).timeout(Duration::from_secs(5));
        // Node 3 is down: node 1 keeps hints for it.
        cluster.stop_node(3).await.unwrap();
        for i in 0..20 {
            only1.set(format!("e{i}").as_bytes(), b"x", ev()).await.unwrap();
        }
        let hints_for_3 = || async { only1.node_status(0, Duration::from_secs(1)).await.unwrap().hints_pending[&3] };
        assert!(hints_for_3().await > 0, "node 1 holds hints for the down node 3");

        cluster.join_node(4).unwrap();
        change(&cluster, &client, MemberChangeOp::MemberAddLearner, 4).await.unwrap();
        change(&cluster, &client, MemberChangeOp::MemberPromote, 4).await.unwrap();
        change(&cluster, &client, MemberChangeOp::MemberRemove, 3).await.unwrap();
        let mut left = u64::MAX;
        for _ in 0..ATTEMPTS {
            left = hints_for_3().await;
            if left == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(RETRY_MS)).await;
        }
        assert_eq!(left, 0, "the hints for the removed node 3 are deleted");

        // A write on node 1 reaches node 4 by replication, well before an
        // anti-entropy round could bring it.
        let only4 = only(&cluster, 4);
        node_lists_voters(&only4, 4, &[1, 2, 4]).await;
        only1.set(b"late", b"pushed", ev()).await.unwrap();
        let mut got = None;
        for _ in 0..10 {
            got = only4.get(b"late", ev()).await.unwrap().map(|v| v.value);
            if got.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(RETRY_MS)).await;
        }
        assert_eq!(got, Some("pushed".into()), "node 4 got the eventual write within 500 ms");
        cluster.shutdown().await.unwrap();
    });
}

#[test]
fn a_node_joins_is_promoted_and_replaces_a_dead_voter() {
    let _ = tracing_subscriber::fmt().with_env_filter("capkv=info").try_init();
    let dir = tempfile::tempdir().unwrap();
    runtime(7).block_on(async {
        let settings = SimSettings {
            seed: 7,
            // Compact often, so the new node catches up by snapshot.
            raft_snapshot_entries: Some(20),
            raft_catch_up_entries: Some(5),
            ..SimSettings::default()
        };
        let mut cluster = SimCluster::start(dir.path().to_path_buf(), settings).unwrap();
        let client = cluster.client("client");
        write_keys(&client, 0..100).await;

        cluster.join_node(4).unwrap();
        let r = change(&cluster, &client, MemberChangeOp::MemberAddLearner, 4).await.unwrap();
        assert_eq!((r.voters.len(), r.learners.clone()), (3, vec![4]));
        // Promotion is refused until the learner caught up; `change` retries.
        let r = change(&cluster, &client, MemberChangeOp::MemberPromote, 4).await.unwrap();
        let mut voters = r.voters.clone();
        voters.sort();
        assert_eq!((voters, r.learners.len()), (vec![1, 2, 3, 4], 0));

        // The new node knows every member and its addresses (its own from
        // the record the change wrote, which it got by snapshot or log).
        // It applies the promotion once it learns the commit index.
        let only4 = only(&cluster, 4);
        node_lists_voters(&only4, 4, &[1, 2, 3, 4]).await;

        // Node 1 dies for good and is removed; the group of 2, 3, 4 serves.
        cluster.stop_node(1).await.unwrap();
        let r = change(&cluster, &client, MemberChangeOp::MemberRemove, 1).await.unwrap();
        let mut voters = r.voters.clone();
        voters.sort();
        assert_eq!(voters, vec![2, 3, 4]);
        write_keys(&client, 100..120).await;
        for i in 0..120 {
            let v = only4.get(format!("k{i}").as_bytes(), lin()).await.expect("linearizable get on node 4");
            assert_eq!(v.map(|v| v.value), Some(format!("v{i}").into()), "k{i} through the new node");
        }

        // A restarted founding member finds the members that joined and left
        // in its state machine (its --cluster still names 1, 2, 3): it
        // lists 4 with its address and reaches it.
        cluster.restart_node(2).await.unwrap();
        let only2 = only(&cluster, 2);
        let want: Vec<(u32, String)> = [2, 3, 4].into_iter().map(|id| (id, peer_host(id))).collect();
        let mut listed = Vec::new();
        for _ in 0..ATTEMPTS {
            if let Ok(m) = only2.members(Duration::from_secs(1)).await {
                listed = m.members.iter().map(|m| (m.id, m.peer_address.clone())).collect();
                if listed == want {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(RETRY_MS)).await;
        }
        assert_eq!(listed, want, "node 2 after its restart");
        write_keys(&only2, 120..130).await;

        // A removed id never comes back; a second removal finds nothing.
        let again = change(&cluster, &client, MemberChangeOp::MemberRemove, 1).await.unwrap_err();
        assert_eq!(again.code(), Code::FailedPrecondition, "{again:?}");
        assert!(again.message().contains("not a member"), "{again:?}");
        let reuse = change(&cluster, &client, MemberChangeOp::MemberAddLearner, 1).await.unwrap_err();
        assert_eq!(reuse.code(), Code::FailedPrecondition, "{reuse:?}");
        assert!(reuse.message().contains("removed member"), "{reuse:?}");

        // With one of the two other voters cut off, removing the other
        // would leave the leader alone with an unreachable voter: refused.
        let leader = members(&client).await.leader_id as u32;
        let others: Vec<u32> = [2, 3, 4].into_iter().filter(|&id| id != leader).collect();
        cluster.isolate(others[0]);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let req = ChangeMembersRequest {
            op: MemberChangeOp::MemberRemove as i32,
            id: others[1],
            timeout_ms: 5_000,
            ..Default::default()
        };
        let refused = cluster.cluster_service(leader).change_members(req).await.unwrap_err();
        assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
        assert!(refused.message().contains("would leave 1 reachable voters of 2"), "{refused:?}");
        cluster.net.heal_all();
        cluster.shutdown().await.unwrap();
    });
}
