//! `kv cluster add / promote / remove / replace`: change the Raft group's
//! members while the cluster serves, in the manner of `etcdctl member
//! add/promote/remove`.
//!
//! Why it exists: the node serves one change at a time on the Raft leader
//! (`Cluster.ChangeMembers`, `rsm::membership` says what is refused and
//! why); an operator wants one command per intent. So `add` is "add as a
//! learner, wait until it caught up, promote", and `replace` is "add the
//! new node, then remove the dead one": each step is one change, retried
//! by the client library while the answer is "not now" (no leader,
//! leadership moving, learner still catching up).
//!
//! What it promises: every step prints what it did; a step that finds its
//! work already done (the node is already a learner or a voter, e.g. on a
//! re-run after a timeout) says so and goes on, so re-running an
//! interrupted command finishes it; a refusal (FAILED_PRECONDITION) stops
//! the command with the node's reason and exit code 2.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::{fail, Cli};
use crate::client::{Client, ClientError};
use crate::node::config::{default_peer_addr, validate_host_port};
use crate::proto::{ChangeMembersRequest, MemberChangeOp};

/// How long `members` reads wait.
const MEMBERS_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Args, Debug)]
pub struct AddArgs {
    /// The new node's id: a positive integer no member has (or had).
    #[arg(long)]
    pub id: u32,
    /// The new node's client address, HOST:PORT (its `kv serve --listen`).
    #[arg(long)]
    pub address: String,
    /// Its peer address (default: the client port + 1000, like --cluster).
    #[arg(long)]
    pub peer_address: Option<String>,
    /// Stop after adding it as a learner (promote later with `kv cluster promote`).
    #[arg(long)]
    pub learner: bool,
    /// How long to wait for the learner to catch up before promoting it, e.g. 2m.
    #[arg(long, default_value = "2m", value_parser = super::parse_duration)]
    pub wait: Duration,
}

#[derive(Args, Debug)]
pub struct IdArgs {
    /// The member's id.
    #[arg(long)]
    pub id: u32,
    /// How long to keep trying while the answer is "not now" (no leader,
    /// leadership moving, the learner still catching up), e.g. 30s.
    #[arg(long, default_value = "1m", value_parser = super::parse_duration)]
    pub wait: Duration,
}

#[derive(Args, Debug)]
pub struct ReplaceArgs {
    /// The member to replace (usually a dead one).
    #[arg(long)]
    pub id: u32,
    /// The replacement's id (default: one above every current member's id).
    /// Ids are never reused, so the replacement needs a new one.
    #[arg(long)]
    pub new_id: Option<u32>,
    /// The replacement's client address, HOST:PORT.
    #[arg(long)]
    pub address: String,
    /// Its peer address (default: the client port + 1000).
    #[arg(long)]
    pub peer_address: Option<String>,
    /// How long to wait for the replacement to catch up, e.g. 2m.
    #[arg(long, default_value = "2m", value_parser = super::parse_duration)]
    pub wait: Duration,
}

fn connect(cli: &Cli) -> Result<Client, String> {
    let opts = cli.connect_options()?;
    Client::connect(&cli.endpoints, &opts).map_err(|e| e.to_string())
}

fn addresses(address: &str, peer: Option<&str>) -> Result<(String, String), String> {
    validate_host_port(address).map_err(|e| format!("--address: {e}"))?;
    let peer = match peer {
        Some(p) => {
            validate_host_port(p).map_err(|e| format!("--peer-address: {e}"))?;
            p.to_string()
        }
        None => default_peer_addr(address).map_err(|e| format!("--address: {e}"))?,
    };
    if peer == address {
        return Err(format!("the client and peer addresses are both {address}; they must differ"));
    }
    Ok((address.to_string(), peer))
}

fn request(op: MemberChangeOp, id: u32) -> ChangeMembersRequest {
    ChangeMembersRequest { op: op as i32, id, ..Default::default() }
}

fn sorted(mut ids: Vec<u64>) -> Vec<u64> {
    ids.sort_unstable();
    ids
}

/// Adds `id` as a learner, unless it is a member already. The node's own
/// refusals say so (a follower's member list may lag the leader's).
async fn add_learner(
    client: &Client,
    id: u32,
    client_addr: &str,
    peer_addr: &str,
    wait: Duration,
) -> Result<(), String> {
    let req = ChangeMembersRequest {
        client_address: client_addr.to_string(),
        peer_address: peer_addr.to_string(),
        ..request(MemberChangeOp::MemberAddLearner, id)
    };
    match client.change_members(req, wait).await {
        Ok(cs) => {
            println!(
                "node {id} added as a learner (client {client_addr}, peer {peer_addr}); voters {:?}, learners {:?}",
                sorted(cs.voters),
                sorted(cs.learners)
            );
            Ok(())
        }
        Err(ClientError::FailedPrecondition(m)) if m.contains("is already a") => {
            println!("{m}");
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Promotes learner `id` once the leader finds it caught up.
async fn promote(client: &Client, id: u32, wait: Duration) -> Result<(), String> {
    println!("waiting up to {}s for node {id} to catch up, then promoting it", wait.as_secs());
    match client.change_members(request(MemberChangeOp::MemberPromote, id), wait).await {
        Ok(cs) => {
            println!("node {id} promoted to voter; voters {:?}", sorted(cs.voters));
            Ok(())
        }
        Err(ClientError::FailedPrecondition(m)) if m.contains("is not a learner") => {
            println!("node {id} is already a voter");
            Ok(())
        }
        Err(ClientError::FailedPrecondition(m)) if m.contains("is not a member") => {
            Err(format!("node {id} is not a member; add it first with `kv cluster add`"))
        }
        Err(ClientError::Unavailable(why)) => Err(format!(
            "node {id} is still a learner after {}s ({why}). Is it running (`kv serve --id {id} --listen ADDRESS \
             --join ENDPOINTS`)? `kv cluster promote --id {id}` finishes the addition",
            wait.as_secs()
        )),
        Err(e) => Err(e.to_string()),
    }
}

async fn remove(client: &Client, id: u32, wait: Duration) -> Result<(), String> {
    match client.change_members(request(MemberChangeOp::MemberRemove, id), wait).await {
        Ok(cs) => {
            println!("node {id} removed; voters {:?}, learners {:?}", sorted(cs.voters), sorted(cs.learners));
            Ok(())
        }
        Err(ClientError::FailedPrecondition(m)) if m.contains("is not a member") => {
            println!("node {id} is not a member (already removed?)");
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    }
}

pub async fn add(cli: &Cli, a: &AddArgs) -> ExitCode {
    let run = async {
        let (c, p) = addresses(&a.address, a.peer_address.as_deref())?;
        let client = connect(cli)?;
        add_learner(&client, a.id, &c, &p, a.wait).await?;
        if a.learner {
            return Ok(());
        }
        promote(&client, a.id, a.wait).await
    };
    done(run.await)
}

pub async fn promote_cmd(cli: &Cli, a: &IdArgs) -> ExitCode {
    let run = async {
        let client = connect(cli)?;
        promote(&client, a.id, a.wait).await
    };
    done(run.await)
}

pub async fn remove_cmd(cli: &Cli, a: &IdArgs) -> ExitCode {
    let run = async {
        let client = connect(cli)?;
        remove(&client, a.id, a.wait).await
    };
    done(run.await)
}

pub async fn replace(cli: &Cli, a: &ReplaceArgs) -> ExitCode {
    let run = async {
        let (c, p) = addresses(&a.address, a.peer_address.as_deref())?;
        let client = connect(cli)?;
        let now = client.members(MEMBERS_TIMEOUT).await.map_err(|e| e.to_string())?;
        if !now.members.iter().any(|m| m.id == a.id) {
            return Err(format!("node {} is not a member: nothing to replace (use `kv cluster add`)", a.id));
        }
        let new_id = match a.new_id {
            Some(n) => n,
            None => now.members.iter().map(|m| m.id).max().unwrap_or(a.id).max(a.id) + 1,
        };
        if new_id == a.id {
            return Err(format!("--new-id {new_id} is the id being replaced; ids are never reused"));
        }
        println!(
            "replacing node {} by node {new_id}: add it, promote it once caught up, then remove node {}",
            a.id, a.id
        );
        add_learner(&client, new_id, &c, &p, a.wait).await?;
        promote(&client, new_id, a.wait).await?;
        remove(&client, a.id, a.wait).await
    };
    done(run.await)
}

fn done(r: Result<(), String>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_address_defaults_to_the_client_port_plus_1000() {
        assert_eq!(addresses("127.0.0.1:7004", None).unwrap(), ("127.0.0.1:7004".into(), "127.0.0.1:8004".into()));
        assert_eq!(
            addresses("127.0.0.1:7004", Some("127.0.0.1:9004")).unwrap(),
            ("127.0.0.1:7004".into(), "127.0.0.1:9004".into())
        );
        assert!(addresses("127.0.0.1", None).unwrap_err().contains("--address"));
        assert!(addresses("127.0.0.1:7004", Some("127.0.0.1:7004")).unwrap_err().contains("must differ"));
    }
}
