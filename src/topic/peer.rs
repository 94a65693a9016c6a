//! Connections to the other nodes for topic traffic, following the members.
//!
//! Separate from the channels Raft and the key-value levels use
//! (`node::peers`): follower fetches move megabytes, and on a shared
//! HTTP/2 connection they would queue Raft heartbeats behind them. Like
//! those, outgoing connections bind this node's listen IP, so network
//! partitions between per-node loopback addresses cut topic traffic too.
//!
//! Who may be dialed is the node's member set ([`Peers`]), which follows
//! the Raft configuration (`kv cluster add/remove`): a connection to a
//! member is opened on first use (and again when its address changed), and
//! a node that is no longer a member is refused and its connection
//! dropped. So a joined node gets topic traffic without a restart, and a
//! removed one gets none.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tonic::transport::Channel;

use crate::clock::NodeId;
use crate::node::peers::{call, request, Dialer, Peers, MAX_PEER_MESSAGE_BYTES};
use crate::proto::peer::topic_peer_client::TopicPeerClient;
use crate::proto::peer::{PartitionStatus, PartitionStatusRequest, ReplicaFetchRequest, ReplicaFetchResponse};

pub struct PeerConns {
    self_id: NodeId,
    /// The current members and their peer addresses.
    members: Arc<Peers>,
    dialer: Arc<dyn Dialer>,
    /// Connections opened so far, with the address each was opened to; at
    /// most one per member (`node::peers::MAX_MEMBERS`), pruned as members go.
    clients: Mutex<BTreeMap<NodeId, (String, TopicPeerClient<Channel>)>>,
}

impl PeerConns {
    pub fn new(members: Arc<Peers>, dialer: Arc<dyn Dialer>) -> PeerConns {
        PeerConns { self_id: members.self_id(), members, dialer, clients: Mutex::new(BTreeMap::new()) }
    }

    /// Whether `id` is a member now (this node included).
    pub fn is_member(&self, id: NodeId) -> bool {
        self.members.contains(id)
    }

    /// The current members' ids, this node included, ascending.
    pub fn member_ids(&self) -> Vec<NodeId> {
        self.members.members().into_keys().collect()
    }

    /// A connection to member `id`: refused when it is not (or no longer)
    /// a member, reopened when its address changed.
    fn client(&self, id: NodeId) -> Result<TopicPeerClient<Channel>, tonic::Status> {
        let addr = self.members.members().remove(&id);
        let mut clients = self.clients.lock().expect("topic peer clients lock");
        let Some(addr) = addr.filter(|_| id != self.self_id) else {
            clients.remove(&id);
            return Err(tonic::Status::unavailable(format!(
                "node {id} is not a member of the cluster (as node {} knows it)",
                self.self_id
            )));
        };
        if let Some((a, c)) = clients.get(&id) {
            if *a == addr {
                return Ok(c.clone());
            }
        }
        let channel = self.dialer.channel(&addr).map_err(tonic::Status::unavailable)?;
        let c = TopicPeerClient::new(channel)
            .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES);
        clients.retain(|&n, _| self.members.contains(n));
        clients.insert(id, (addr, c.clone()));
        Ok(c)
    }

    pub async fn replica_fetch(
        &self,
        leader: NodeId,
        req: ReplicaFetchRequest,
        timeout_ms: u64,
    ) -> Result<ReplicaFetchResponse, tonic::Status> {
        let mut c = self.client(leader)?;
        call(timeout_ms, c.replica_fetch(request(req, timeout_ms))).await
    }

    pub async fn partition_status(
        &self,
        node: NodeId,
        topic_id: u64,
        partitions: Vec<u32>,
        timeout_ms: u64,
    ) -> Result<Vec<PartitionStatus>, tonic::Status> {
        let mut c = self.client(node)?;
        let req = PartitionStatusRequest { from_node: self.self_id, topic_id, partitions };
        Ok(call(timeout_ms, c.partition_status(request(req, timeout_ms))).await?.partitions)
    }
}
