//! The client-facing gRPC services: `Kv` (validate, then route the request
//! to its level), `Cluster` (status, ping) and `Admin` (test hooks).
//!
//! Every refusal is a gRPC status whose message is one sentence a user can
//! act on. Statuses that mean "certainly not applied" carry the metadata
//! `capkv-retry: safe`, which tells clients a retry on another node cannot
//! apply the operation twice. Replies to linearizable requests name the Raft
//! leader (`capkv-raft-leader`), so clients can send them straight there.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::{Request, Response, Status};

use super::config::MAX_KEY_BYTES;
use super::router;
use super::NodeState;
use crate::level::Level;
use crate::levels::quorum::QuorumError;
use crate::levels::{Call, Caller, CasReply, LevelError};
use crate::proto::admin_server::Admin;
use crate::proto::cluster_server::Cluster;
use crate::proto::kv_server::Kv;
use crate::proto::*;
use crate::store::Cell;
use crate::wire::version_to_proto;

/// Upper bound on a client-chosen deadline.
pub const MAX_REQUEST_TIMEOUT_MS: u64 = 120_000;
pub use capkv_proto::headers::{RAFT_LEADER_HEADER, RETRY_SAFE_HEADER};
/// How much earlier than the client's deadline a node stops working on a
/// request (at most a tenth of the deadline).
pub const DEADLINE_MARGIN_MS: u64 = 100;

/// Cheap to clone: a session serves each of its requests on a task of its
/// own (see [`super::session`]).
#[derive(Clone)]
pub struct KvService {
    pub(super) node: Arc<NodeState>,
    /// Each member's client address as a [`RAFT_LEADER_HEADER`] value.
    leader_headers: Arc<HashMap<u64, MetadataValue<Ascii>>>,
}

impl KvService {
    pub fn new(node: Arc<NodeState>) -> Self {
        let leader_headers = node
            .cfg
            .cluster
            .iter()
            .filter_map(|(&id, addr)| Some((id as u64, MetadataValue::try_from(addr.as_str()).ok()?)))
            .collect();
        KvService { node, leader_headers: Arc::new(leader_headers) }
    }

    /// `reply` of a linearizable request, naming the Raft leader when known.
    fn with_leader<T>(&self, level: Level, reply: T) -> Response<T> {
        let mut r = Response::new(reply);
        if level == Level::Linearizable {
            if let Some(v) = self.leader_headers.get(&self.node.linear.leader_id()) {
                r.metadata_mut().insert(RAFT_LEADER_HEADER, v.clone());
            }
        }
        r
    }

    fn key(&self, key: &Bytes) -> Result<(), Status> {
        if key.is_empty() {
            return Err(Status::invalid_argument("key must not be empty"));
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(Status::invalid_argument(format!("key is {} bytes; the limit is {MAX_KEY_BYTES}", key.len())));
        }
        Ok(())
    }

    fn value(&self, value: &Bytes) -> Result<(), Status> {
        let max = self.node.cfg.max_value_bytes;
        if value.len() > max {
            return Err(Status::invalid_argument(format!(
                "value is {} bytes; this node's limit is {max} (kv serve --max-value-bytes)",
                value.len()
            )));
        }
        Ok(())
    }

    /// The client's deadline for a request, bounded.
    pub(super) fn timeout_ms(&self, h: &RequestHeader) -> u64 {
        match h.timeout_ms {
            0 => self.node.cfg.request_timeout_ms,
            t => (t as u64).min(MAX_REQUEST_TIMEOUT_MS),
        }
    }

    /// The level, deadline and caller ids the request carries.
    fn header(&self, h: Option<&RequestHeader>) -> Result<(Level, Call), Status> {
        let Some(h) = h else {
            return Err(Status::invalid_argument("request has no header: set header.consistency"));
        };
        let level = match Consistency::try_from(h.consistency) {
            Ok(Consistency::Unspecified) => {
                return Err(Status::invalid_argument(
                    "request has no consistency level: set it to EVENTUAL, QUORUM or LINEARIZABLE",
                ))
            }
            Ok(_) => Level::from_proto(h.consistency).expect("known level"),
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "unknown consistency level {}: expected EVENTUAL (1), QUORUM (2) or LINEARIZABLE (3)",
                    h.consistency
                )))
            }
        };
        let ms = self.timeout_ms(h);
        // Answer a little before the client gives up, so a refusal arrives
        // as a refusal and not as a client-side timeout (indeterminate).
        let ms = ms - (ms / 10).min(DEADLINE_MARGIN_MS);
        let caller = Caller { client_id: h.client_id, request_id: h.request_id, ack_below: h.ack_below };
        Ok((level, Call { timeout: Duration::from_millis(ms), caller }))
    }
}

pub fn level_status(e: LevelError) -> Status {
    match e {
        e @ (LevelError::NotStarted(_) | LevelError::GetNotWrittenBack { .. }) => {
            retry_safe(Status::unavailable(e.to_string()))
        }
        LevelError::Quorum(e @ QuorumError::Unavailable { .. }) => retry_safe(Status::unavailable(e.to_string())),
        LevelError::Quorum(e @ QuorumError::Indeterminate { .. }) => Status::deadline_exceeded(e.to_string()),
        LevelError::Raft(e) if e.is_indeterminate() => Status::deadline_exceeded(e.to_string()),
        LevelError::Raft(e) => retry_safe(Status::unavailable(e.to_string())),
        e @ (LevelError::NotWrittenBack { .. } | LevelError::UnexpectedReply { .. }) => {
            Status::deadline_exceeded(e.to_string())
        }
        LevelError::Refused { reason } => Status::failed_precondition(reason),
        LevelError::Store(e) => Status::internal(e.to_string()),
    }
}

/// Writes that add data (set, cas, produce) wait for room under the data
/// directory (`node::disk_space`): refused before anything is written, as
/// retry-safe, so another node may take them. Counted when refused.
pub fn room(node: &NodeState) -> Result<(), Status> {
    node.disk.check_write().map_err(|e| {
        crate::metrics::inc(&node.metrics.writes_refused_disk_full);
        retry_safe(Status::resource_exhausted(e.to_string()))
    })
}

pub fn retry_safe(mut s: Status) -> Status {
    s.metadata_mut().insert(RETRY_SAFE_HEADER, "safe".parse().expect("ascii"));
    s
}

fn get_reply(cell: Option<Cell>) -> GetResponse {
    match cell {
        Some(c) => GetResponse {
            found: !c.is_tombstone(),
            version: Some(version_to_proto(c.version)),
            value: c.value.unwrap_or_default(),
        },
        None => GetResponse { found: false, value: Bytes::new(), version: None },
    }
}

fn cas_reply(r: CasReply) -> CasResponse {
    let g = get_reply(r.current);
    CasResponse { swapped: r.swapped, found: g.found, current: g.value, version: g.version }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn get(&self, req: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let req = req.into_inner();
        let (level, call) = self.header(req.header.as_ref())?;
        self.key(&req.key)?;
        let cell = router::get(&self.node, level, req.key, call).await.map_err(level_status)?;
        Ok(self.with_leader(level, get_reply(cell)))
    }

    async fn set(&self, req: Request<SetRequest>) -> Result<Response<SetResponse>, Status> {
        let req = req.into_inner();
        let (level, call) = self.header(req.header.as_ref())?;
        self.key(&req.key)?;
        self.value(&req.value)?;
        room(&self.node)?;
        let version = router::write(&self.node, level, req.key, Some(req.value), call).await.map_err(level_status)?;
        Ok(self.with_leader(level, SetResponse { version: Some(version_to_proto(version)) }))
    }

    async fn delete(&self, req: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        let req = req.into_inner();
        let (level, call) = self.header(req.header.as_ref())?;
        self.key(&req.key)?;
        let version = router::write(&self.node, level, req.key, None, call).await.map_err(level_status)?;
        Ok(self.with_leader(level, DeleteResponse { version: Some(version_to_proto(version)) }))
    }

    async fn cas(&self, req: Request<CasRequest>) -> Result<Response<CasResponse>, Status> {
        let req = req.into_inner();
        let (level, call) = self.header(req.header.as_ref())?;
        self.key(&req.key)?;
        self.value(&req.new_value)?;
        room(&self.node)?;
        let expected = if req.expect_absent { None } else { Some(req.expected) };
        let reply =
            router::cas(&self.node, level, req.key, expected, req.new_value, call).await.map_err(level_status)?;
        Ok(self.with_leader(level, cas_reply(reply)))
    }

    type SessionStream = super::request_stream::Replies;

    async fn session(
        &self,
        req: Request<tonic::Streaming<SessionRequest>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        // The token's role (when the node checks tokens): a session opens
        // with `read`, and each write on it needs `readwrite`.
        let role = req.extensions().get::<super::auth::Role>().copied();
        Ok(Response::new(super::request_stream::serve(self.clone(), role, req.into_inner())))
    }
}

pub struct ClusterService {
    node: Arc<NodeState>,
}

impl ClusterService {
    pub fn new(node: Arc<NodeState>) -> Self {
        ClusterService { node }
    }
}

/// Hints counted per peer in a status reply, at most.
const MAX_COUNTED_HINTS: usize = 1_000_000;

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn status(&self, _req: Request<StatusRequest>) -> Result<Response<NodeStatus>, Status> {
        let n = &self.node;
        let store = n.store.clone();
        // The founding peers and the current members (a removed member's
        // hints are deleted: it shows 0).
        let mut peers = n.cfg.peers();
        peers.extend(n.store.hint_peers());
        peers.sort_unstable();
        peers.dedup();
        let hints_pending = crate::rt::spawn_blocking(move || {
            peers.into_iter().map(|p| (p, store.count_hints(p, MAX_COUNTED_HINTS).unwrap_or(0) as u64)).collect()
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
        let mut counters = n.metrics.snapshot();
        counters.insert("clock_drift_rejections".into(), n.store.clock().drift_rejections());
        Ok(Response::new(NodeStatus {
            id: n.cfg.id,
            address: n.cfg.cluster.get(&n.cfg.id).cloned().unwrap_or_default(),
            members: n.cfg.cluster.iter().map(|(&id, a)| Member { id, address: a.clone() }).collect(),
            levels: Level::ALL.iter().map(|l| l.to_proto() as i32).collect(),
            uptime_ms: n.started.elapsed().as_millis() as u64,
            hints_pending,
            counters: counters.into_iter().collect(),
            raft: Some({
                let v = n.linear.view();
                RaftStatus {
                    role: v.role.as_str().to_string(),
                    term: v.term,
                    leader_id: v.leader_id,
                    commit_index: v.commit_index,
                    applied_index: v.applied_index,
                    last_contact_ms: v.last_contact_ms.into_iter().collect(),
                }
            }),
            clock_offset_ms: n.store.clock().offset_ms(),
            gc_grace_ms: n.cfg.gc_grace_ms,
        }))
    }

    /// The Raft configuration as this node knows it, with each member's
    /// addresses (the state machine's records over the start-up list).
    async fn members(&self, _req: Request<MembersRequest>) -> Result<Response<MembersResponse>, Status> {
        let n = &self.node;
        let v = n.linear.view();
        let records = n.rsm.member_records().map_err(|e| Status::internal(e.to_string()))?;
        let address = |id: u32| match records.get(&id) {
            Some(r) => (r.client_address.clone(), r.peer_address.clone()),
            None => (
                n.cfg.cluster.get(&id).cloned().unwrap_or_default(),
                n.cfg.peer_cluster.get(&id).cloned().unwrap_or_default(),
            ),
        };
        let info = |id: u64, role: &str| {
            let (client_address, peer_address) = address(id as u32);
            MemberInfo {
                id: id as u32,
                client_address,
                peer_address,
                role: role.to_string(),
                leader: id == v.leader_id,
                matched_index: v.matched.get(&id).copied().unwrap_or(0),
            }
        };
        let mut members: Vec<MemberInfo> = v
            .voters
            .iter()
            .map(|&id| info(id, "voter"))
            .chain(v.learners.iter().map(|&id| info(id, "learner")))
            .collect();
        members.sort_by_key(|m| m.id);
        Ok(Response::new(MembersResponse {
            members,
            answered_by: n.cfg.id,
            leader_id: v.leader_id,
            commit_index: v.commit_index,
            quorum_replicas: Some({
                let c = n.quorum.replica_config();
                ReplicaSet { epoch: c.epoch, current: c.current, next: c.next.unwrap_or_default() }
            }),
        }))
    }

    async fn change_members(
        &self,
        req: Request<ChangeMembersRequest>,
    ) -> Result<Response<ChangeMembersResponse>, Status> {
        use crate::rsm::membership::{MemberOp, MembershipError as E};
        let r = req.into_inner();
        let op = match MemberChangeOp::try_from(r.op) {
            Ok(MemberChangeOp::MemberAddLearner) => {
                if r.client_address.is_empty() || r.peer_address.is_empty() {
                    return Err(Status::invalid_argument("adding a member needs its client and peer addresses"));
                }
                MemberOp::AddLearner(crate::proto::rsm::MemberRecord {
                    id: r.id,
                    client_address: r.client_address,
                    peer_address: r.peer_address,
                    removed: false,
                })
            }
            Ok(MemberChangeOp::MemberPromote) => MemberOp::Promote(r.id),
            Ok(MemberChangeOp::MemberRemove) => MemberOp::Remove(r.id),
            Err(_) => return Err(Status::invalid_argument(format!("unknown membership change {}", r.op))),
        };
        let timeout = Duration::from_millis(r.timeout_ms.clamp(1, MAX_REQUEST_TIMEOUT_MS));
        // A change of the voters waits until the quorum level's replica
        // set has followed the previous one: its state transfer reads
        // from a majority of the old set, which two changes in a row could
        // take away (a removed member is no longer a peer).
        if matches!(op, MemberOp::Promote(_) | MemberOp::Remove(_)) {
            let held = self.node.quorum.replica_config();
            let voters = self.node.linear.view().voters;
            if !held.is_settled_on(&voters) {
                return Err(Status::aborted(format!(
                    "the quorum level is still moving its replica set to the last membership change (epoch {}, \
                     replicas {:?}{}, Raft voters {voters:?}); retry once it is done",
                    held.epoch,
                    held.current,
                    held.next.as_ref().map_or(String::new(), |n| format!(" -> {n:?}")),
                )));
            }
        }
        match self.node.rsm.change_members(op, timeout).await {
            Ok(cs) => Ok(Response::new(ChangeMembersResponse { voters: cs.voters, learners: cs.learners })),
            Err(e) => Err(match &e {
                E::NotLeader { .. }
                | E::LeaderMoving { .. }
                | E::LeadershipChanged { .. }
                | E::Timeout { .. }
                | E::Dropped { .. }
                | E::Stopped => Status::unavailable(e.to_string()),
                E::InProgress | E::NotCaughtUp { .. } => Status::aborted(e.to_string()),
                E::AlreadyMember { .. }
                | E::IdNotUsable { .. }
                | E::NotAMember { .. }
                | E::NotALearner { .. }
                | E::LastVoter { .. }
                | E::WouldLoseQuorum { .. }
                | E::TooMany { .. } => Status::failed_precondition(e.to_string()),
            }),
        }
    }

    /// Echoes the payload and nothing else: the benchmark baseline for a
    /// bare tonic round trip (its size is bounded by tonic's decoding limit).
    async fn ping(&self, req: Request<PingRequest>) -> Result<Response<PingResponse>, Status> {
        Ok(Response::new(PingResponse { payload: req.into_inner().payload }))
    }
}

pub struct AdminService {
    node: Arc<NodeState>,
}

impl AdminService {
    pub fn new(node: Arc<NodeState>) -> Self {
        AdminService { node }
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn set_clock_offset(
        &self,
        req: Request<SetClockOffsetRequest>,
    ) -> Result<Response<SetClockOffsetResponse>, Status> {
        if !self.node.cfg.enable_test_hooks {
            return Err(Status::failed_precondition(
                "test hooks are off: start the node with --enable-test-hooks to use Admin (clock offset)",
            ));
        }
        let offset = req.into_inner().offset_ms;
        // Bounded by the clock (±MAX_CLOCK_OFFSET_MS): a day's skew would
        // put this node's stamps beyond what peers accept.
        let previous =
            self.node.store.clock().set_offset_ms(offset).map_err(|e| Status::invalid_argument(e.to_string()))?;
        tracing::warn!(
            node = self.node.cfg.id,
            offset_ms = offset,
            previous_ms = previous,
            "clock offset changed (clock-skew test hook)"
        );
        Ok(Response::new(SetClockOffsetResponse { previous_offset_ms: previous }))
    }
}
