//! Helpers for tests on the deterministic whole-node simulation
//! (`capkv::sim`): a paused, seeded runtime, the members a node reports,
//! and a membership change retried on the leader while it answers "not
//! now". Waits are bounded by attempts of simulated time, never real time.

use std::time::Duration;

use capkv::client::Client;
use capkv::proto::{ChangeMembersRequest, ChangeMembersResponse, MemberChangeOp, MembersResponse};
use capkv::sim::cluster::{host, peer_host, SimCluster};
use tonic::Code;

pub const ATTEMPTS: usize = 200;
pub const RETRY_MS: u64 = 50;

/// A one-thread runtime with a paused clock, seeded: a seed reproduces a run.
pub fn runtime(seed: u64) -> tokio::runtime::Runtime {
    let mut b = tokio::runtime::Builder::new_current_thread();
    b.enable_all().start_paused(true);
    b.rng_seed(tokio::runtime::RngSeed::from_bytes(&seed.to_le_bytes()));
    b.build().expect("runtime")
}

/// A client of node `id` alone.
pub fn only(cluster: &SimCluster, id: u32) -> Client {
    Client::with_dialer(&[host(id)], &cluster.net.dialer(&format!("only{id}"))).unwrap()
}

/// The members as the first node that answers knows them, once it knows a leader.
pub async fn members(client: &Client) -> MembersResponse {
    for _ in 0..ATTEMPTS {
        if let Ok(r) = client.members(Duration::from_secs(1)).await {
            if r.leader_id != 0 {
                return r;
            }
        }
        tokio::time::sleep(Duration::from_millis(RETRY_MS)).await;
    }
    panic!("no leader known after {ATTEMPTS} attempts");
}

/// One membership change on the current leader; retried while the answer
/// says "not now" (no leader, leadership moving, learner catching up, the
/// quorum replica set still following the previous change).
pub async fn change(
    cluster: &SimCluster,
    client: &Client,
    op: MemberChangeOp,
    id: u32,
) -> Result<ChangeMembersResponse, tonic::Status> {
    let req = ChangeMembersRequest {
        op: op as i32,
        id,
        client_address: host(id),
        peer_address: peer_host(id),
        timeout_ms: 5_000,
    };
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let leader = members(client).await.leader_id as u32;
        match cluster.cluster_service(leader).change_members(req.clone()).await {
            Ok(r) => return Ok(r.into_inner()),
            Err(s) if matches!(s.code(), Code::Unavailable | Code::Aborted) => last = Some(s),
            Err(s) => return Err(s),
        }
        tokio::time::sleep(Duration::from_millis(RETRY_MS)).await;
    }
    panic!("membership change {op:?} {id} kept failing: {last:?}");
}
