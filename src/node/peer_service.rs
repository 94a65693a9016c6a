//! The node-to-node gRPC service: what peers ask of this node.
//!
//! Every handler checks its input first ([`super::peer_input`]): the
//! service is reachable by anyone who reaches the client port.
//!
//! The quorum level's replica side (the `Quorum` stream, `PullCells`,
//! `AdoptConfig`) applies the replica rule of the reconfiguration through
//! the node's [`HeldConfig`](crate::levels::quorum::held::HeldConfig): a
//! request of an older configuration epoch is refused without reading or
//! writing, a newer configuration is adopted durably before serving.

use std::sync::Arc;

use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::peer_input::{check_cells, check_peer, check_raft_message, check_snapshot_header, check_stamp};
use super::NodeState;
use crate::clock::Version;
use crate::levels::quorum::held::Served;
use crate::levels::quorum::shell::holds_applied;
use crate::proto::peer::peer_server::Peer;
use crate::proto::peer::*;
use crate::rsm::snapshot::SnapMeta;
use crate::store::{OpOutcome, WriteOp, BUCKETS};
use crate::wire::{cell_from_peer, cell_to_peer, config_from_peer, config_to_peer};
use protobuf::Message as _;
use tokio::io::AsyncWriteExt;

/// Largest snapshot a node accepts.
pub const MAX_SNAPSHOT_BYTES: u64 = 64 * 1024 * 1024 * 1024;

/// Most entries one ListBuckets page returns.
pub const MAX_LIST_ENTRIES: usize = 10_000;
/// Most keys one ReadCells request may name.
pub const MAX_READ_KEYS: usize = 10_000;
/// Bytes of cells one ReadCells answer may hold (a single larger cell still
/// goes): a larger answer is refused rather than let it break the stream
/// it travels on. Askers cap their requests well below (see
/// `node::peer_batch`).
pub const MAX_READ_CELLS_REPLY_BYTES: usize = 64 * 1024 * 1024;
const _: () = assert!(MAX_READ_CELLS_REPLY_BYTES < super::peers::MAX_PEER_MESSAGE_BYTES);
/// Answers waiting to go out on one quorum stream; reading more requests
/// waits when it is full.
pub const QUORUM_REPLIES_QUEUED: usize = 256;
/// Write requests of one quorum stream waiting for their fsync at once;
/// reading more requests waits when they are all taken.
pub const QUORUM_WRITES_IN_FLIGHT: usize = 64;
/// Most cells one PullCells answer holds (a larger `limit` is lowered).
pub const MAX_PULL_CELLS: usize = 4096;
/// Bytes of keys and values in one PullCells answer past its first cell.
pub const MAX_PULL_REPLY_BYTES: usize = 16 * 1024 * 1024;
const _: () = assert!(MAX_PULL_REPLY_BYTES < super::peers::MAX_PEER_MESSAGE_BYTES / 2);

pub struct PeerService {
    node: Arc<NodeState>,
}

impl PeerService {
    pub fn new(node: Arc<NodeState>) -> Self {
        PeerService { node }
    }

    fn check_member(&self, peer: Option<u32>, from: u32) -> Result<(), Status> {
        check_member(&self.node, peer, from)
    }

    /// The member calling, by its TLS certificate (`None` without TLS). A
    /// certificate of a removed member gets [`super::peers::removed_status`].
    fn peer<T>(&self, req: &Request<T>) -> Result<Option<u32>, Status> {
        super::tls::peer_member(self.node.cfg.tls.is_some(), &self.node.peers, req).map_err(|e| {
            let removed = || {
                let records = self.node.rsm.member_records().ok()?;
                let ids: Vec<u32> = records.iter().filter(|(_, r)| r.removed).map(|(&id, _)| id).collect();
                let certs = req.peer_certs()?;
                super::tls::cert_member(&certs, ids.iter()).ok()
            };
            match removed() {
                Some(id) => super::peers::removed_status(id),
                None => e,
            }
        })
    }
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

/// `from` is a member other than us and, with TLS, the member whose
/// certificate the caller (`peer`) presented.
fn check_member(node: &NodeState, peer: Option<u32>, from: u32) -> Result<(), Status> {
    if let Err(e) = check_peer(|id| node.peers.contains(id), node.cfg.id, from) {
        return Err(if was_removed(node, from) { super::peers::removed_status(from) } else { e });
    }
    super::tls::check_claim(peer, from)
}

/// Whether `id` was a member and was removed (a node still joining is not).
fn was_removed(node: &NodeState, id: u32) -> bool {
    node.rsm.member_records().is_ok_and(|records| records.get(&id).is_some_and(|r| r.removed))
}

/// LWW-merges the cells, durably.
async fn replicate(node: &NodeState, peer: Option<u32>, req: CellsRequest) -> Result<CellsResponse, Status> {
    check_member(node, peer, req.from_node)?;
    check_cells(node.store.clock(), &req.cells)?;
    // Write-backs of Raft results this node has applied already are here
    // (durably): nothing to write for them.
    let mut cells = req.cells;
    let sent = cells.len();
    cells.retain(|c| !holds_applied(&node.store, c.applied_at));
    if cells.len() < sent {
        crate::metrics::add(&node.metrics.write_back_cells_held, (sent - cells.len()) as u64);
    }
    let ops: Vec<WriteOp> =
        cells.into_iter().filter_map(cell_from_peer).map(|(key, cell)| WriteOp::Merge { key, cell }).collect();
    if ops.is_empty() {
        return Ok(CellsResponse { applied: 0 });
    }
    let out = node.store.write(ops, true).await.map_err(internal)?;
    let applied = out.iter().filter(|o| matches!(o, OpOutcome::Merged { applied: true })).count();
    Ok(CellsResponse { applied: applied as u32 })
}

/// This node's cells for the keys, in request order.
fn read_cells(node: &NodeState, peer: Option<u32>, req: ReadCellsRequest) -> Result<ReadCellsResponse, Status> {
    check_member(node, peer, req.from_node)?;
    if req.keys.len() > MAX_READ_KEYS {
        return Err(Status::invalid_argument(format!(
            "{} keys in one ReadCells; at most {MAX_READ_KEYS}",
            req.keys.len()
        )));
    }
    let mut cells = Vec::with_capacity(req.keys.len());
    let mut bytes = 0usize;
    for key in &req.keys {
        cells.push(match node.store.get_cell(key).map_err(internal)? {
            Some(c) => {
                bytes += super::peer_batch::cell_bytes(key.len(), c.value.as_ref().map_or(0, |v| v.len()));
                if bytes > MAX_READ_CELLS_REPLY_BYTES && !cells.is_empty() {
                    return Err(Status::invalid_argument(format!(
                        "the cells of {} keys exceed {MAX_READ_CELLS_REPLY_BYTES} bytes; ask for fewer keys",
                        req.keys.len()
                    )));
                }
                MaybeCell { present: true, cell: Some(cell_to_peer(key, &c)) }
            }
            None => MaybeCell { present: false, cell: None },
        });
    }
    Ok(ReadCellsResponse { cells })
}

/// A quorum request's configuration; `Err` when it has none or it is invalid.
fn request_config(c: Option<ReplicaConfig>) -> Result<crate::levels::quorum::ReplicaConfig, Status> {
    let c = c.ok_or_else(|| Status::invalid_argument("a quorum request without a replica configuration"))?;
    config_from_peer(c).map_err(|e| Status::invalid_argument(format!("invalid replica configuration: {e}")))
}

/// One request of the quorum stream, served under the replica rule.
async fn serve_quorum_request(node: &NodeState, peer: Option<u32>, req: QuorumRequest) -> QuorumReply {
    let id = req.id;
    let error = |s: Status| QuorumReply { id, read: None, error: s.message().to_string(), refused: None };
    let config = match request_config(req.config) {
        Ok(c) => c,
        Err(s) => return error(s),
    };
    let from = match &req.body {
        Some(quorum_request::Body::Read(r)) => r.from_node,
        Some(quorum_request::Body::Write(w)) => w.from_node,
        None => return error(Status::invalid_argument("a quorum request with neither reads nor writes")),
    };
    // Only a member may make this node adopt a configuration.
    if let Err(s) = check_member(node, peer, from) {
        return error(s);
    }
    let served = match req.body.expect("checked above") {
        quorum_request::Body::Read(r) => {
            node.quorum_config.serve_at(&config, async { read_cells(node, peer, r).map(Some) }).await
        }
        quorum_request::Body::Write(w) => {
            node.quorum_config.serve_at(&config, async { replicate(node, peer, w).await.map(|_| None) }).await
        }
    };
    match served {
        Ok(Served::Served(Ok(read))) => QuorumReply { id, read, error: String::new(), refused: None },
        Ok(Served::Served(Err(s))) => error(s),
        Ok(Served::Refused(held)) => {
            tracing::debug!(
                from,
                theirs = config.epoch,
                ours = held.epoch,
                "quorum request of an older configuration refused"
            );
            QuorumReply { id, read: None, error: String::new(), refused: Some(config_to_peer(&held)) }
        }
        Err(e) => error(internal(e)),
    }
}

/// Tombstone GC: whether this node covers each tombstone
/// (`Store::gc_covers`), in request order.
fn gc_check(node: &NodeState, peer: Option<u32>, req: GcCheckRequest) -> Result<GcCheckResponse, Status> {
    check_member(node, peer, req.from_node)?;
    if req.tombstones.len() > MAX_READ_KEYS {
        return Err(Status::invalid_argument(format!(
            "{} tombstones in one GcCheck; at most {MAX_READ_KEYS}",
            req.tombstones.len()
        )));
    }
    let covered = req
        .tombstones
        .iter()
        .map(|t| node.store.gc_covers(&t.key, Version { hlc: t.hlc, node_id: t.node_id, rmw: t.rmw }))
        .collect::<Result<Vec<bool>, _>>()
        .map_err(internal)?;
    Ok(GcCheckResponse { covered })
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn gc_check(&self, req: Request<GcCheckRequest>) -> Result<Response<GcCheckResponse>, Status> {
        let peer = self.peer(&req)?;
        Ok(Response::new(gc_check(&self.node, peer, req.into_inner())?))
    }

    async fn replicate(&self, req: Request<CellsRequest>) -> Result<Response<CellsResponse>, Status> {
        let peer = self.peer(&req)?;
        Ok(Response::new(replicate(&self.node, peer, req.into_inner()).await?))
    }

    async fn read_cells(&self, req: Request<ReadCellsRequest>) -> Result<Response<ReadCellsResponse>, Status> {
        let peer = self.peer(&req)?;
        Ok(Response::new(read_cells(&self.node, peer, req.into_inner())?))
    }

    type QuorumStream = ReceiverStream<Result<QuorumReply, Status>>;

    async fn quorum(
        &self,
        req: Request<tonic::Streaming<QuorumRequest>>,
    ) -> Result<Response<Self::QuorumStream>, Status> {
        let peer = self.peer(&req)?;
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(QUORUM_REPLIES_QUEUED);
        let node = self.node.clone();
        tokio::spawn(async move {
            let writes = Arc::new(Semaphore::new(QUORUM_WRITES_IN_FLIGHT));
            loop {
                let req = tokio::select! {
                    _ = node.stopping.cancelled() => break,
                    m = inbound.message() => match m {
                        Ok(Some(req)) => req,
                        _ => break,
                    },
                };
                if matches!(req.body, Some(quorum_request::Body::Write(_))) {
                    // Writes wait for the fsync; reads behind them must not.
                    let Ok(permit) = writes.clone().acquire_owned().await else { break };
                    let (node, tx) = (node.clone(), tx.clone());
                    tokio::spawn(async move {
                        let reply = serve_quorum_request(&node, peer, req).await;
                        drop(permit);
                        let _ = tx.send(Ok(reply)).await;
                    });
                    continue;
                }
                let reply = serve_quorum_request(&node, peer, req).await;
                if tx.send(Ok(reply)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn adopt_config(&self, req: Request<AdoptConfigRequest>) -> Result<Response<AdoptConfigResponse>, Status> {
        let peer = self.peer(&req)?;
        let req = req.into_inner();
        self.check_member(peer, req.from_node)?;
        let config = request_config(req.config)?;
        let held = self.node.quorum_config.adopt(&config).await.map_err(internal)?;
        Ok(Response::new(AdoptConfigResponse { held: Some(config_to_peer(&held)) }))
    }

    async fn pull_cells(&self, req: Request<PullCellsRequest>) -> Result<Response<PullCellsResponse>, Status> {
        let peer = self.peer(&req)?;
        let req = req.into_inner();
        self.check_member(peer, req.from_node)?;
        let config = request_config(req.config)?;
        let limit = (req.limit as usize).clamp(1, MAX_PULL_CELLS);
        let store = self.node.store.clone();
        let after = req.after_key;
        let scan = async move {
            crate::rt::spawn_blocking(move || store.scan_cells(after.as_deref(), limit, MAX_PULL_REPLY_BYTES)).await
        };
        match self.node.quorum_config.serve_at(&config, scan).await.map_err(internal)? {
            Served::Served(scanned) => {
                let (cells, more) = scanned.map_err(internal)?.map_err(internal)?;
                let cells = cells.iter().map(|(k, c)| cell_to_peer(k, c)).collect();
                Ok(Response::new(PullCellsResponse { cells, more, refused: None }))
            }
            Served::Refused(held) => Ok(Response::new(PullCellsResponse {
                cells: Vec::new(),
                more: false,
                refused: Some(config_to_peer(&held)),
            })),
        }
    }

    async fn digest(&self, req: Request<DigestRequest>) -> Result<Response<DigestResponse>, Status> {
        let peer = self.peer(&req)?;
        let req = req.into_inner();
        self.check_member(peer, req.from_node)?;
        if req.bucket_count != BUCKETS {
            return Err(Status::failed_precondition(format!(
                "bucket count {} differs from ours ({BUCKETS})",
                req.bucket_count
            )));
        }
        Ok(Response::new(DigestResponse { digests: self.node.store.digests() }))
    }

    async fn list_buckets(&self, req: Request<ListBucketsRequest>) -> Result<Response<ListBucketsResponse>, Status> {
        let peer = self.peer(&req)?;
        let req = req.into_inner();
        self.check_member(peer, req.from_node)?;
        if req.bucket_count != BUCKETS {
            return Err(Status::failed_precondition(format!(
                "bucket count {} differs from ours ({BUCKETS})",
                req.bucket_count
            )));
        }
        if req.buckets.len() > BUCKETS as usize || req.buckets.iter().any(|&b| b >= BUCKETS) {
            return Err(Status::invalid_argument(format!(
                "{} buckets listed; at most {BUCKETS}, each below {BUCKETS}",
                req.buckets.len()
            )));
        }
        let limit = (req.limit as usize).clamp(1, MAX_LIST_ENTRIES);
        let store = self.node.store.clone();
        let (entries, more) =
            crate::rt::spawn_blocking(move || store.list_buckets(&req.buckets, &req.after_key, limit))
                .await
                .map_err(internal)?
                .map_err(internal)?;
        let entries = entries
            .into_iter()
            .map(|(key, v, tombstone)| KeyVersion { key, hlc: v.hlc, node_id: v.node_id, tombstone, rmw: v.rmw })
            .collect();
        Ok(Response::new(ListBucketsResponse { entries, more }))
    }

    async fn ping(&self, req: Request<PingRequest>) -> Result<Response<PingResponse>, Status> {
        let peer = self.peer(&req)?;
        let req = req.into_inner();
        self.check_member(peer, req.from_node)?;
        check_stamp(self.node.store.clock(), req.hlc)?;
        self.node.store.clock().observe(req.hlc);
        Ok(Response::new(PingResponse { node_id: self.node.cfg.id, hlc: self.node.store.clock().now() }))
    }

    async fn raft(&self, req: Request<tonic::Streaming<RaftBatch>>) -> Result<Response<RaftBatchResponse>, Status> {
        let peer = self.peer(&req)?;
        let mut stream = req.into_inner();
        loop {
            let batch = tokio::select! {
                _ = self.node.stopping.cancelled() => break,
                m = stream.message() => match m? {
                    Some(batch) => batch,
                    None => break,
                },
            };
            self.check_member(peer, batch.from_node)?;
            let mut msgs = Vec::with_capacity(batch.messages.len());
            for m in &batch.messages {
                let m = raft::eraftpb::Message::parse_from_bytes(m)
                    .map_err(|e| Status::invalid_argument(format!("bad raft message: {e}")))?;
                check_raft_message(&m, batch.from_node, self.node.cfg.id)?;
                msgs.push(m);
            }
            if batch.lost_log {
                self.node.rsm.peer_lost_log(batch.from_node, batch.log_last_index);
            }
            self.node.rsm.step(msgs);
        }
        Ok(Response::new(RaftBatchResponse {}))
    }

    async fn snapshot(
        &self,
        req: Request<tonic::Streaming<SnapshotChunk>>,
    ) -> Result<Response<SnapshotResponse>, Status> {
        let peer = self.peer(&req)?;
        let mut stream = req.into_inner();
        let snapshots = self.node.rsm.snapshots().clone();
        let mut header: Option<raft::eraftpb::Message> = None;
        let mut file: Option<(tokio::fs::File, std::path::PathBuf, std::path::PathBuf)> = None;
        let mut total = 0u64;
        while let Some(chunk) = stream.message().await? {
            self.check_member(peer, chunk.from_node)?;
            if header.is_none() {
                let m = raft::eraftpb::Message::parse_from_bytes(&chunk.message)
                    .map_err(|e| Status::invalid_argument(format!("bad snapshot header: {e}")))?;
                check_snapshot_header(&m, chunk.from_node, self.node.cfg.id)?;
                let meta = m.get_snapshot().get_metadata();
                let name = SnapMeta { index: meta.index, term: meta.term }.file_name();
                let tmp = snapshots.path(&format!("{name}.recv.tmp"));
                let f = tokio::fs::File::create(&tmp).await.map_err(|e| Status::internal(e.to_string()))?;
                file = Some((f, tmp, snapshots.path(&name)));
                header = Some(m);
            }
            let (f, _, _) = file.as_mut().expect("file opened with the header");
            total += chunk.data.len() as u64;
            if total > MAX_SNAPSHOT_BYTES {
                return Err(Status::resource_exhausted(format!("snapshot larger than {MAX_SNAPSHOT_BYTES} bytes")));
            }
            f.write_all(&chunk.data).await.map_err(|e| Status::internal(e.to_string()))?;
            if chunk.last {
                break;
            }
        }
        let (Some(mut msg), Some((f, tmp, path))) = (header, file) else {
            return Err(Status::invalid_argument("empty snapshot stream"));
        };
        f.sync_all().await.map_err(|e| Status::internal(e.to_string()))?;
        drop(f);
        tokio::fs::rename(&tmp, &path).await.map_err(|e| Status::internal(e.to_string()))?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        msg.mut_snapshot().set_data(name.into_bytes().into());
        tracing::info!(from = msg.from, bytes = total, "snapshot received");
        self.node.rsm.step(vec![msg]);
        Ok(Response::new(SnapshotResponse {}))
    }

    async fn propose(&self, _req: Request<ProposeRequest>) -> Result<Response<ProposeResponse>, Status> {
        Err(Status::unimplemented("the linearizable level is not built on this node"))
    }

    async fn read_index(&self, _req: Request<ReadIndexRequest>) -> Result<Response<ReadIndexResponse>, Status> {
        Err(Status::unimplemented("the linearizable level is not built on this node"))
    }
}
