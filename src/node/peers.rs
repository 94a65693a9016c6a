//! Connections to the other nodes.
//!
//! One lazily connected tonic channel per peer, shared by every level
//! (tonic channels multiplex and reconnect by themselves). Outgoing
//! connections bind this node's listen IP as their source, so that network
//! partitions between per-node loopback addresses (127.0.0.11, .12, ...)
//! cut exactly the links they name.

use std::collections::BTreeMap;

use tonic::transport::Channel;

use crate::clock::NodeId;
use crate::proto::peer::peer_client::PeerClient;

// The channel and deadline helpers are shared with the client library.
pub use capkv_proto::channel::{
    call, call_full, channel, request, tls_channel, Dialer, TcpDialer, PEER_CONNECT_TIMEOUT_MS,
};

/// Largest peer message, in bytes (cell batches, snapshots chunks).
pub const MAX_PEER_MESSAGE_BYTES: usize = 80 * 1024 * 1024;

pub struct Peers {
    self_id: NodeId,
    addrs: BTreeMap<NodeId, String>,
    clients: BTreeMap<NodeId, PeerClient<Channel>>,
}

impl Peers {
    /// `cluster` lists every member including this node; connections are
    /// opened with `dialer` (TCP from the node's listen IP, or a simulated network).
    pub fn new(self_id: NodeId, cluster: &BTreeMap<NodeId, String>, dialer: &dyn Dialer) -> Result<Peers, String> {
        let mut clients = BTreeMap::new();
        for (&id, addr) in cluster {
            if id == self_id {
                continue;
            }
            clients.insert(
                id,
                PeerClient::new(dialer.channel(addr)?)
                    .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES),
            );
        }
        Ok(Peers { self_id, addrs: cluster.clone(), clients })
    }

    pub fn self_id(&self) -> NodeId {
        self.self_id
    }

    /// Ids of the other nodes, ascending.
    pub fn ids(&self) -> Vec<NodeId> {
        self.clients.keys().copied().collect()
    }

    /// All members including this node, ascending.
    pub fn members(&self) -> &BTreeMap<NodeId, String> {
        &self.addrs
    }

    pub fn client(&self, id: NodeId) -> PeerClient<Channel> {
        self.clients.get(&id).cloned().unwrap_or_else(|| panic!("unknown peer {id}"))
    }
}
