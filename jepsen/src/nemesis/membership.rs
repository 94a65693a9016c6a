//! The membership nemesis: remove a node from the cluster for good, then
//! add a new node in its place, while the workload runs.
//!
//! A window is one replacement in two halves, as an operator does it when a
//! node's disk dies:
//!
//! - **start**: `ChangeMembers(remove)` of the member in slot `pick mod N`
//!   (the Raft leader as likely as any other), then kill -9 it and delete
//!   its data, so nothing it held can come back. The cluster serves with
//!   N−1 members until the heal: Raft's voters and the quorum level's
//!   replica set both shrink (the quorum level's reconfiguration moves the
//!   registers first), the eventual level stops replicating to it.
//! - **heal**: a new node, under an id no node of the run ever had, starts
//!   with `kv serve --join` on the freed slot's address with empty data, is
//!   added as a learner, and promoted once the leader finds it caught up
//!   (the same calls as `kv cluster add`). The quorum replica set grows to
//!   it; the eventual level fills it by anti-entropy.
//!
//! So every window removes one member and adds one, and over a run the
//! founders are replaced one after another. A removal the cluster refuses
//! (it would leave no reachable majority) leaves the window empty and says
//! so in its description.
//!
//! The slot keeps its address, so the workload's clients, the partition
//! nemesis's links and the kill and pause nemeses keep naming slots; only
//! the serving id changes ([`Cluster::raft_id`]).

use std::time::Duration;

use capkv::client::{Client, ClientError};
use capkv::proto::{ChangeMembersRequest, MemberChangeOp};

use super::NemesisError;
use crate::cluster::{Cluster, NodeId};

/// How long one membership change may take, retries included (a removal
/// waits for the quorum level to follow the previous change; a promotion
/// for the learner to catch up by snapshot and log).
pub const CHANGE_TIMEOUT_MS: u64 = 60_000;

/// A replacement half done: the slot whose member was removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Active {
    /// The freed slot.
    pub slot: NodeId,
    /// The serving id it had.
    pub removed_id: u32,
}

/// Removes the member in slot `pick mod N` and retires the slot. Returns
/// the half-done replacement (`None` if the cluster refused the removal)
/// and what happened, for the report.
pub async fn start(cluster: &mut Cluster, pick: u32) -> Result<(Option<Active>, String), NemesisError> {
    let slots = cluster.ids();
    let slot = slots[pick as usize % slots.len()];
    let removed_id = cluster.raft_id(slot);
    let client = every_node(cluster)?;
    let timeout = Duration::from_millis(CHANGE_TIMEOUT_MS);
    match client.change_members(request(MemberChangeOp::MemberRemove, removed_id), timeout).await {
        Ok(_) => {}
        Err(ClientError::FailedPrecondition(m)) if m.contains("is not a member") => {}
        Err(ClientError::FailedPrecondition(m)) => {
            return Ok((None, format!("remove node {removed_id} (n{slot}) refused: {m}")));
        }
        Err(e) => return Err(failed(format!("remove node {removed_id} (n{slot})"), e)),
    }
    cluster.retire(slot)?;
    let what = format!("removed node {removed_id} (n{slot}), its data deleted");
    Ok((Some(Active { slot, removed_id }), what))
}

/// Starts a new node on `active`'s slot with `--join`, adds it as a
/// learner and promotes it. Returns what happened, for the report.
pub async fn heal(cluster: &mut Cluster, active: &Active) -> Result<String, NemesisError> {
    let slot = active.slot;
    let new_id = cluster.fresh_raft_id();
    let endpoints: Vec<String> =
        cluster.ids().into_iter().filter(|&id| id != slot).map(|id| cluster.addr(id).to_string()).collect();
    cluster.join(slot, new_id, endpoints).await?;
    let client = every_node(cluster)?;
    let timeout = Duration::from_millis(CHANGE_TIMEOUT_MS);
    let add = ChangeMembersRequest {
        client_address: cluster.addr(slot).to_string(),
        peer_address: cluster.peer_addr(slot).to_string(),
        ..request(MemberChangeOp::MemberAddLearner, new_id)
    };
    match client.change_members(add, timeout).await {
        Ok(_) => {}
        Err(ClientError::FailedPrecondition(m)) if m.contains("is already a") => {}
        Err(e) => return Err(failed(format!("add node {new_id} (n{slot}) as a learner"), e)),
    }
    match client.change_members(request(MemberChangeOp::MemberPromote, new_id), timeout).await {
        Ok(_) => {}
        Err(ClientError::FailedPrecondition(m)) if m.contains("is not a learner") => {}
        Err(e) => return Err(failed(format!("promote node {new_id} (n{slot})"), e)),
    }
    Ok(format!("node {new_id} joined on n{slot}'s address and was promoted"))
}

/// A client of every slot: a change goes to the Raft leader, whichever
/// node it is (the one being removed too: it hands leadership on first).
fn every_node(cluster: &Cluster) -> Result<Client, NemesisError> {
    let endpoints = cluster.endpoints();
    Client::connect(&endpoints, cluster.connect_options()).map_err(|e| NemesisError::Membership(e.to_string()))
}

fn request(op: MemberChangeOp, id: u32) -> ChangeMembersRequest {
    ChangeMembersRequest { op: op as i32, id, ..Default::default() }
}

fn failed(what: String, e: ClientError) -> NemesisError {
    NemesisError::Membership(format!("{what}: {e}"))
}
