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

    fn check_member(&self, from: u32) -> Result<(), Status> {
        super::peer_input::check_peer(&self.node.cfg.cluster, self.node.cfg.id, from)
    }
}

#[tonic::async_trait]
impl TopicPeer for TopicPeerService {
    async fn replica_fetch(&self, req: Request<ReplicaFetchRequest>) -> Result<Response<ReplicaFetchResponse>, Status> {
        let req = req.into_inner();
        self.check_member(req.from_node)?;
        Ok(Response::new(self.node.topics.serve_replica_fetch(req).await))
    }

    async fn partition_status(
        &self,
        req: Request<PartitionStatusRequest>,
    ) -> Result<Response<PartitionStatusResponse>, Status> {
        let req = req.into_inner();
        self.check_member(req.from_node)?;
        let partitions = self.node.topics.partition_status(req.topic_id, &req.partitions);
        Ok(Response::new(PartitionStatusResponse { partitions }))
    }
}
