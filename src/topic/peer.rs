//! Connections to the other nodes for topic traffic.
//!
//! Separate from the channels Raft and the key-value levels use
//! (`node::peers`): follower fetches move megabytes, and on a shared
//! HTTP/2 connection they would queue Raft heartbeats behind them. Like
//! those, outgoing connections bind this node's listen IP, so network
//! partitions between per-node loopback addresses cut topic traffic too.

use std::collections::BTreeMap;

use tonic::transport::Channel;

use crate::clock::NodeId;
use crate::node::peers::{call, request, Dialer, MAX_PEER_MESSAGE_BYTES};
use crate::proto::peer::topic_peer_client::TopicPeerClient;
use crate::proto::peer::{PartitionStatus, PartitionStatusRequest, ReplicaFetchRequest, ReplicaFetchResponse};

pub struct PeerConns {
    self_id: NodeId,
    clients: BTreeMap<NodeId, TopicPeerClient<Channel>>,
}

impl PeerConns {
    pub fn new(self_id: NodeId, members: &BTreeMap<NodeId, String>, dialer: &dyn Dialer) -> Result<PeerConns, String> {
        let mut clients = BTreeMap::new();
        for (&id, addr) in members {
            if id == self_id {
                continue;
            }
            clients.insert(
                id,
                TopicPeerClient::new(dialer.channel(addr)?)
                    .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES),
            );
        }
        Ok(PeerConns { self_id, clients })
    }

    fn client(&self, id: NodeId) -> Result<TopicPeerClient<Channel>, tonic::Status> {
        self.clients
            .get(&id)
            .cloned()
            .ok_or_else(|| tonic::Status::invalid_argument(format!("node {id} is not a peer of node {}", self.self_id)))
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
