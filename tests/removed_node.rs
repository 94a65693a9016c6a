//! A node the cluster removed while it was still running stops by itself
//! (etcd: "the member has been permanently removed from the cluster"),
//! instead of serving on as a zombie: taking eventual writes and topic
//! records at acks=1 that no member will ever hold. It learns the news by
//! applying its own removal, or from the members refusing its Raft
//! messages with the "removed" marker (`node::peers::REMOVED_HEADER`); with
//! TLS, by its certificate. The others keep serving.

mod common;

use std::time::{Duration, Instant};

use capkv::client::Client;
use capkv::proto::{ChangeMembersRequest, MemberChangeOp};
use capkv::Level;
use common::{opts, TestCluster};

/// How long node 3 may take to notice its removal and stop: an election
/// timeout or two for its Raft messages to be refused, plus the shutdown.
const STOP_WITHIN: Duration = Duration::from_secs(30);

/// Removes node 3 while it runs (`paused`: while it is SIGSTOPped, so it
/// misses its own removal and learns it from the others once resumed) and
/// checks it stops by itself, saying it was removed (`how`).
async fn removed_node_stops(c: &mut TestCluster, paused: bool, how: &str) {
    let client = c.client(1);
    client.set(b"before", b"1", opts(Level::Linearizable)).await.unwrap();
    if paused {
        c.stop(3);
    }
    // A running node 3 may lead: it must get the removal (it hands its
    // leadership over first). A paused one would hold the call until the
    // deadline: the others elect a leader and take it.
    let last = if paused { 2 } else { 3 };
    let endpoints: Vec<String> = (1..=last).map(|id| c.node(id).addr.clone()).collect();
    let admin = Client::connect(&endpoints, &c.connect).unwrap();
    let req = ChangeMembersRequest { op: MemberChangeOp::MemberRemove as i32, id: 3, ..Default::default() };
    let cs = admin.change_members(req, Duration::from_secs(30)).await.expect("remove node 3");
    assert!(!cs.voters.contains(&3), "{cs:?}");
    if paused {
        c.cont(3);
    }

    // Node 3 was not killed: it must stop by itself, saying why.
    let deadline = Instant::now() + STOP_WITHIN;
    let status = loop {
        let child = c.nodes[2].child.as_mut().expect("node 3 was started");
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "node 3 still runs {STOP_WITHIN:?} after its removal:\n{}", c.log_tail(3));
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    c.nodes[2].child = None;
    assert!(!status.success(), "a removed node exits with an error status: {status}");
    let log = std::fs::read_to_string(&c.node(3).log).unwrap();
    assert!(log.contains("was removed from the cluster"), "{}", c.log_tail(3));
    assert!(log.contains(how), "expected {how:?} in\n{}", c.log_tail(3));

    // The two members left serve on, with what was written before.
    let got = c.client(2).get(b"before", opts(Level::Linearizable)).await.unwrap();
    assert_eq!(got.map(|v| v.value), Some("1".into()));
    c.client(1).set(b"after", b"2", opts(Level::Quorum)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_node_that_still_runs_stops_by_itself() {
    let mut c = TestCluster::start(3, &[]).await;
    // Either way of learning it will do (its own removal applied, or the
    // others' refusal: seen so far, as its removal's commit never reaches it).
    removed_node_stops(&mut c, false, "removed from the cluster").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_node_that_missed_its_removal_stops_when_the_others_refuse_it() {
    let mut c = TestCluster::start(3, &[]).await;
    removed_node_stops(&mut c, true, "refused its Raft messages").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_node_that_missed_its_removal_stops_with_tls() {
    let mut c = TestCluster::start_tls(3, &[]).await;
    removed_node_stops(&mut c, true, "refused its Raft messages").await;
}
