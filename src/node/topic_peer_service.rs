//! The node-to-node topic service: follower fetches and partition status.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::NodeState;
use crate::proto::peer::topic_peer_server::TopicPeer;
use crate::proto::peer::*;

pub struct TopicPeerService {
    node: Arc<NodeState>,
}

impl TopicPeerService {
    pub fn new(node: Arc<NodeState>) -> Self {
        TopicPeerService { node }
    }

    /// `from` is a member other than us and, with TLS, the member whose
    /// certificate the caller presented on `req`.
    fn check_member<T>(&self, req: &Request<T>, from: u32) -> Result<(), Status> {
        super::peer_input::check_peer(|id| self.node.peers.contains(id), self.node.cfg.id, from)?;
        let peer = super::tls::peer_member(self.node.cfg.tls.is_some(), &self.node.peers, req)?;
        super::tls::check_claim(peer, from)
    }
}

#[tonic::async_trait]
impl TopicPeer for TopicPeerService {
    async fn replica_fetch(&self, req: Request<ReplicaFetchRequest>) -> Result<Response<ReplicaFetchResponse>, Status> {
        self.check_member(&req, req.get_ref().from_node)?;
        let req = req.into_inner();
        Ok(Response::new(self.node.topics.serve_replica_fetch(req).await))
    }

    async fn partition_status(
        &self,
        req: Request<PartitionStatusRequest>,
    ) -> Result<Response<PartitionStatusResponse>, Status> {
        self.check_member(&req, req.get_ref().from_node)?;
        let req = req.into_inner();
        let partitions = self.node.topics.partition_status(req.topic_id, &req.partitions);
        Ok(Response::new(PartitionStatusResponse { partitions }))
    }
}
