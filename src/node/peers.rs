//! Connections to the other nodes, and who they are.
//!
//! One lazily connected tonic channel per peer, shared by every level
//! (tonic channels multiplex and reconnect by themselves). Outgoing
//! connections bind this node's listen IP as their source, so that network
//! partitions between per-node loopback addresses (127.0.0.11, .12, ...)
//! cut exactly the links they name.
//!
//! The member set can change while the node runs: the replicated state
//! machine adds a member when a Raft configuration change that adds it is
//! applied, and removes one when its removal is applied
//! (`rsm::state_machine::members`). Readers take a snapshot of the set
//! ([`Peers::ids`], [`Peers::members`]) and ask for a connection by id
//! ([`Peers::client`]), which is `None` once the member is gone; tasks that
//! keep one loop per peer watch [`Peers::changes`].
//!
//! It also carries the news that this node itself was removed
//! ([`Peers::mark_removed`]): learnt when the node applies its own removal,
//! or when a member answers its Raft messages with [`REMOVED_HEADER`]
//! (like etcd's "the member has been permanently removed"). The node then
//! stops serving (`node::run`), so a removed node that keeps running does
//! not go on taking writes nobody else will ever hold.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock, RwLock};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::clock::NodeId;
use crate::proto::peer::peer_client::PeerClient;

// The channel and deadline helpers are shared with the client library.
pub use capkv_proto::channel::{
    call, call_full, channel, request, tls_channel, Dialer, TcpDialer, PEER_CONNECT_TIMEOUT_MS,
};

/// Largest peer message, in bytes (cell batches, snapshots chunks).
pub const MAX_PEER_MESSAGE_BYTES: usize = 80 * 1024 * 1024;

/// The largest member set a node accepts (Raft voters and learners together).
pub const MAX_MEMBERS: usize = 15;

/// Metadata key of a peer's refusal that means "you were removed from the
/// cluster" (not merely "not a member yet", as a node still joining hears).
pub const REMOVED_HEADER: &str = "capkv-removed";

/// A refusal of a request from `from`, a removed member: carries
/// [`REMOVED_HEADER`], which tells `from` to stop.
pub fn removed_status(from: NodeId) -> tonic::Status {
    let mut md = tonic::metadata::MetadataMap::new();
    md.insert(REMOVED_HEADER, tonic::metadata::MetadataValue::from(from));
    tonic::Status::with_metadata(
        tonic::Code::FailedPrecondition,
        format!("node {from} was removed from the cluster"),
        md,
    )
}

/// Whether `status` is a [`removed_status`].
pub fn is_removed_status(status: &tonic::Status) -> bool {
    status.metadata().get(REMOVED_HEADER).is_some()
}

pub struct Peers {
    self_id: NodeId,
    dialer: Arc<dyn Dialer>,
    inner: RwLock<Inner>,
    /// Bumped on every change of the member set.
    changes: watch::Sender<u64>,
    /// Cancelled once this node learns it was removed from the cluster.
    removed: CancellationToken,
    /// How it learnt it (the first way), for the logs and the exit message.
    removed_why: OnceLock<String>,
}

#[derive(Default)]
struct Inner {
    /// Every member's peer address, this node's own included.
    addrs: BTreeMap<NodeId, String>,
    /// One client per other member.
    clients: BTreeMap<NodeId, PeerClient<Channel>>,
}

fn peer_client(dialer: &dyn Dialer, addr: &str) -> Result<PeerClient<Channel>, String> {
    Ok(PeerClient::new(dialer.channel(addr)?)
        .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES))
}

impl Peers {
    /// `cluster` lists every member including this node; connections are
    /// opened with `dialer` (TCP from the node's listen IP, or a simulated network).
    pub fn new(self_id: NodeId, cluster: &BTreeMap<NodeId, String>, dialer: Arc<dyn Dialer>) -> Result<Peers, String> {
        let peers = Peers {
            self_id,
            dialer,
            inner: RwLock::new(Inner::default()),
            changes: watch::Sender::new(0),
            removed: CancellationToken::new(),
            removed_why: OnceLock::new(),
        };
        for (&id, addr) in cluster {
            peers.add(id, addr)?;
        }
        Ok(peers)
    }

    pub fn self_id(&self) -> NodeId {
        self.self_id
    }

    /// Ids of the other members, ascending.
    pub fn ids(&self) -> Vec<NodeId> {
        self.inner.read().expect("peers lock").clients.keys().copied().collect()
    }

    /// All members including this node, ascending, with their peer addresses.
    pub fn members(&self) -> BTreeMap<NodeId, String> {
        self.inner.read().expect("peers lock").addrs.clone()
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.inner.read().expect("peers lock").addrs.contains_key(&id)
    }

    /// A connection to member `id`; `None` when it is not (or no longer) a member.
    pub fn client(&self, id: NodeId) -> Option<PeerClient<Channel>> {
        self.inner.read().expect("peers lock").clients.get(&id).cloned()
    }

    /// Adds member `id` at `addr`, or moves it there (a new connection is
    /// opened only when the address changed). Returns whether anything changed.
    pub fn add(&self, id: NodeId, addr: &str) -> Result<bool, String> {
        assert!(id != 0, "node id 0 is reserved");
        let mut inner = self.inner.write().expect("peers lock");
        if inner.addrs.get(&id).is_some_and(|a| a == addr) {
            return Ok(false);
        }
        if !inner.addrs.contains_key(&id) && inner.addrs.len() >= MAX_MEMBERS {
            return Err(format!("a cluster has at most {MAX_MEMBERS} members"));
        }
        if id != self.self_id {
            let client = peer_client(&*self.dialer, addr)?;
            inner.clients.insert(id, client);
        }
        inner.addrs.insert(id, addr.to_string());
        drop(inner);
        self.changes.send_modify(|g| *g += 1);
        Ok(true)
    }

    /// Removes member `id` (its connection closes when the last user drops
    /// it). Returns whether it was a member.
    pub fn remove(&self, id: NodeId) -> bool {
        let mut inner = self.inner.write().expect("peers lock");
        let was = inner.addrs.remove(&id).is_some();
        inner.clients.remove(&id);
        drop(inner);
        if was {
            self.changes.send_modify(|g| *g += 1);
        }
        was
    }

    /// Changes of the member set: the value is bumped on each.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Records that this node was removed from the cluster (`why`: how it
    /// learnt it). The first reason is kept.
    pub fn mark_removed(&self, why: String) {
        if self.removed_why.set(why).is_ok() {
            let why = self.removed_why.get().expect("just set");
            tracing::error!(node = self.self_id, "{why}: this node was removed from the cluster");
        }
        self.removed.cancel();
    }

    /// Cancelled once [`Peers::mark_removed`] was called.
    pub fn removed(&self) -> CancellationToken {
        self.removed.clone()
    }

    /// How this node learnt it was removed; `None` while it was not.
    pub fn removed_why(&self) -> Option<String> {
        self.removed_why.get().cloned()
    }
}
