//! `kv serve --join ENDPOINTS`: start a node that joins a running cluster,
//! without a `--cluster` list.
//!
//! Why it exists: a new node must know the other members' addresses (to
//! dial them) and the quorum level's replica set (to coordinate quorum
//! operations), and a node added later cannot be handed a `--cluster` list
//! that stays true. So on its first start it asks the cluster
//! (`Cluster.Members` on the first of ENDPOINTS that answers) and saves the
//! answer in its data directory ([`JOIN_FILE`]); on every later start it
//! reads that file and asks nobody, so a joined node restarts even when the
//! nodes it first asked are gone. Either way the Raft configuration, not
//! this list, decides who is a member: the node starts with an empty Raft
//! configuration and waits until the leader adds it (`kv cluster add`), and
//! the addresses the state machine records replace these on start
//! (`rsm::driver::sync_peers`).
//!
//! What it refuses: joining with an id that is already a **voter** while
//! the data directory holds no join file (that voter's log is not in this
//! directory: remove it and add the node under a new id). The quorum
//! replica set it saves is where it starts (at epoch 0): the replicas
//! refuse a stale configuration and teach it the current one
//! (`levels::quorum::held`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::client::{Client, ConnectOptions};
use crate::clock::NodeId;
use crate::node::config::{cluster_spec, default_peer_addr, validate_host_port};

/// The file a joined node keeps in its data directory.
pub const JOIN_FILE: &str = "join.json";
/// How long the first start keeps asking the endpoints.
pub const JOIN_ASK_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between two rounds of asking.
const JOIN_RETRY_MS: u64 = 1_000;

/// What a joining node learned from the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Joined {
    /// Every member's client and peer address, this node's own included.
    pub members: BTreeMap<NodeId, (String, String)>,
    /// The quorum level's replicas when the node joined (its starting
    /// point only: the configuration it holds follows the cluster's).
    pub quorum_replicas: Vec<NodeId>,
}

impl Joined {
    /// The `--cluster` text naming every member with both addresses.
    pub fn cluster_spec(&self) -> String {
        cluster_spec(self.members.iter().map(|(&id, (c, p))| (id, c, p)))
    }
}

fn join_file(data_dir: &Path) -> PathBuf {
    data_dir.join(JOIN_FILE)
}

/// Reads the saved join file, if this data directory has one.
pub fn saved(data_dir: &Path) -> Result<Option<Joined>, String> {
    let path = join_file(data_dir);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("cannot parse {}: {e} (delete it only if this node never joined)", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Saves `joined` durably (write, fsync, rename, fsync the directory).
pub fn save(data_dir: &Path, joined: &Joined) -> Result<(), String> {
    std::fs::create_dir_all(data_dir).map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    let path = join_file(data_dir);
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(joined).map_err(|e| e.to_string())?;
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&text)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(data_dir)?.sync_all()
    };
    write().map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// This node's two addresses when it joins: `--listen` (required) and
/// `--peer-listen` (default: its port + 1000).
pub fn own_addresses(listen: Option<&str>, peer_listen: Option<&str>) -> Result<(String, String), String> {
    let Some(listen) = listen else {
        return Err(
            "--join needs --listen HOST:PORT: the client address the other members will know this node by".into()
        );
    };
    validate_host_port(listen).map_err(|e| format!("--listen: {e}"))?;
    let peer = match peer_listen {
        Some(p) => {
            validate_host_port(p).map_err(|e| format!("--peer-listen: {e}"))?;
            p.to_string()
        }
        None => default_peer_addr(listen).map_err(|e| format!("--listen: {e}"))?,
    };
    Ok((listen.to_string(), peer))
}

/// Asks `endpoints` for the members and the quorum replica set, retrying
/// until [`JOIN_ASK_TIMEOUT`]; `me` is this node's id and addresses.
pub async fn ask(endpoints: &[String], opts: &ConnectOptions, me: (NodeId, String, String)) -> Result<Joined, String> {
    let (id, listen, peer) = me;
    let client = Client::connect(endpoints, opts).map_err(|e| format!("--join: {e}"))?;
    let deadline = tokio::time::Instant::now() + JOIN_ASK_TIMEOUT;
    let r = loop {
        match client.members(Duration::from_secs(2)).await {
            Ok(r) => break r,
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::warn!("--join: no member answered yet ({e}); retrying");
                tokio::time::sleep(Duration::from_millis(JOIN_RETRY_MS)).await;
            }
            Err(e) => return Err(format!("--join: no member answered within {}s: {e}", JOIN_ASK_TIMEOUT.as_secs())),
        }
    };
    if r.members.iter().any(|m| m.id == id && m.role == "voter") {
        return Err(format!(
            "node {id} is already a voter, and this data directory has no {JOIN_FILE}: that voter's log is not \
             here. Remove it (`kv cluster remove --id {id}`) and add this node under a new id"
        ));
    }
    let mut members = BTreeMap::new();
    for m in &r.members {
        if m.id != id {
            members.insert(m.id, (m.client_address.clone(), m.peer_address.clone()));
        }
    }
    members.insert(id, (listen, peer));
    let quorum_replicas = match &r.quorum_replicas {
        Some(q) if !q.current.is_empty() => q.current.clone(),
        _ => return Err(format!("--join: node {} did not report the quorum replica set", r.answered_by)),
    };
    Ok(Joined { members, quorum_replicas })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_join_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(saved(dir.path()).unwrap(), None);
        let j = Joined {
            members: BTreeMap::from([
                (1, ("127.0.0.1:7001".to_string(), "127.0.0.1:8001".to_string())),
                (4, ("127.0.0.1:7004".to_string(), "127.0.0.1:8004".to_string())),
            ]),
            quorum_replicas: vec![1, 2, 3],
        };
        save(dir.path(), &j).unwrap();
        assert_eq!(saved(dir.path()).unwrap(), Some(j.clone()));
        assert_eq!(j.cluster_spec(), "1=127.0.0.1:7001/127.0.0.1:8001,4=127.0.0.1:7004/127.0.0.1:8004");
        std::fs::write(dir.path().join(JOIN_FILE), b"{").unwrap();
        assert!(saved(dir.path()).unwrap_err().contains("cannot parse"));
    }

    #[test]
    fn joining_needs_a_listen_address() {
        assert!(own_addresses(None, None).unwrap_err().contains("--join needs --listen"));
        assert_eq!(
            own_addresses(Some("127.0.0.1:7004"), None).unwrap(),
            ("127.0.0.1:7004".to_string(), "127.0.0.1:8004".to_string())
        );
    }
}
