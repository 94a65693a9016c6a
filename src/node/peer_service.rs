//! The node-to-node gRPC service: what peers ask of this node.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::NodeState;
use crate::proto::peer::peer_server::Peer;
use crate::proto::peer::*;
use crate::store::{OpOutcome, WriteOp, BUCKETS};
use crate::wire::{cell_from_peer, cell_to_peer};

/// Most entries one ListBuckets page returns.
pub const MAX_LIST_ENTRIES: usize = 10_000;
/// Most keys one ReadCells request may name.
pub const MAX_READ_KEYS: usize = 10_000;

pub struct PeerService {
    node: Arc<NodeState>,
}

impl PeerService {
    pub fn new(node: Arc<NodeState>) -> Self {
        PeerService { node }
    }

    fn check_member(&self, from: u32) -> Result<(), Status> {
        if self.node.cfg.cluster.contains_key(&from) {
            Ok(())
        } else {
            Err(Status::permission_denied(format!("node {from} is not a member of this cluster")))
        }
    }
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn replicate(&self, req: Request<CellsRequest>) -> Result<Response<CellsResponse>, Status> {
        let req = req.into_inner();
        self.check_member(req.from_node)?;
        let ops: Vec<WriteOp> =
            req.cells.into_iter().filter_map(cell_from_peer).map(|(key, cell)| WriteOp::Merge { key, cell }).collect();
        if ops.is_empty() {
            return Ok(Response::new(CellsResponse { applied: 0 }));
        }
        let out = self.node.store.write(ops, true).await.map_err(internal)?;
        let applied = out.iter().filter(|o| matches!(o, OpOutcome::Merged { applied: true })).count();
        Ok(Response::new(CellsResponse { applied: applied as u32 }))
    }

    async fn read_cells(&self, req: Request<ReadCellsRequest>) -> Result<Response<ReadCellsResponse>, Status> {
        let req = req.into_inner();
        self.check_member(req.from_node)?;
        if req.keys.len() > MAX_READ_KEYS {
            return Err(Status::invalid_argument(format!(
                "{} keys in one ReadCells; at most {MAX_READ_KEYS}",
                req.keys.len()
            )));
        }
        let mut cells = Vec::with_capacity(req.keys.len());
        for key in &req.keys {
            cells.push(match self.node.store.get_cell(key).map_err(internal)? {
                Some(c) => MaybeCell { present: true, cell: Some(cell_to_peer(key, &c)) },
                None => MaybeCell { present: false, cell: None },
            });
        }
        Ok(Response::new(ReadCellsResponse { cells }))
    }

    async fn digest(&self, req: Request<DigestRequest>) -> Result<Response<DigestResponse>, Status> {
        let req = req.into_inner();
        self.check_member(req.from_node)?;
        if req.bucket_count != BUCKETS {
            return Err(Status::failed_precondition(format!(
                "bucket count {} differs from ours ({BUCKETS})",
                req.bucket_count
            )));
        }
        Ok(Response::new(DigestResponse { digests: self.node.store.digests() }))
    }

    async fn list_buckets(&self, req: Request<ListBucketsRequest>) -> Result<Response<ListBucketsResponse>, Status> {
        let req = req.into_inner();
        self.check_member(req.from_node)?;
        if req.bucket_count != BUCKETS {
            return Err(Status::failed_precondition(format!(
                "bucket count {} differs from ours ({BUCKETS})",
                req.bucket_count
            )));
        }
        let limit = (req.limit as usize).clamp(1, MAX_LIST_ENTRIES);
        let store = self.node.store.clone();
        let (entries, more) =
            tokio::task::spawn_blocking(move || store.list_buckets(&req.buckets, &req.after_key, limit))
                .await
                .map_err(internal)?
                .map_err(internal)?;
        let entries = entries
            .into_iter()
            .map(|(key, v, tombstone)| KeyVersion { key, hlc: v.hlc, node_id: v.node_id, tombstone })
            .collect();
        Ok(Response::new(ListBucketsResponse { entries, more }))
    }

    async fn ping(&self, req: Request<PingRequest>) -> Result<Response<PingResponse>, Status> {
        let req = req.into_inner();
        self.node.store.clock().observe(req.hlc);
        Ok(Response::new(PingResponse { node_id: self.node.cfg.id, hlc: self.node.store.clock().now() }))
    }

    async fn raft(&self, _req: Request<RaftBatch>) -> Result<Response<RaftBatchResponse>, Status> {
        Err(Status::unimplemented("the linearizable level is not built on this node"))
    }

    async fn snapshot(
        &self,
        _req: Request<tonic::Streaming<SnapshotChunk>>,
    ) -> Result<Response<SnapshotResponse>, Status> {
        Err(Status::unimplemented("the linearizable level is not built on this node"))
    }

    async fn propose(&self, _req: Request<ProposeRequest>) -> Result<Response<ProposeResponse>, Status> {
        Err(Status::unimplemented("the linearizable level is not built on this node"))
    }

    async fn read_index(&self, _req: Request<ReadIndexRequest>) -> Result<Response<ReadIndexResponse>, Status> {
        Err(Status::unimplemented("the linearizable level is not built on this node"))
    }
}
