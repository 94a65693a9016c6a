//! Topics (DESIGN §6): a partitioned, replicated log with Kafka-style ISR
//! replication on the same nodes as the key-value store.
//!
//! * [`controller`]: the Raft leader elects partition leaders.
//! * [`isr`]: the partition leader's sans-I/O core (ISR, high watermark).
//! * [`epochs`]: leader-epoch history; where followers truncate.
//! * [`error`]: why a topic request failed ([`TopicError`]), as facts.
//! * [`producer_state`]: idempotent producers.
//! * [`assign`]: replica, group and key placement (the state machine's
//!   module, re-exported).
//! * [`log`]: one partition's records and state in RocksDB.
//! * [`replica`]: one partition replica's runtime (leader: appends, serves
//!   fetches; follower: pulls from the leader).
//! * [`peer`]: connections to other nodes for topic traffic.
//!
//! The nodes topics run on are the cluster's current members (the Raft
//! voters and learners, as `node::peers` follows them): new topics and
//! reassignments may place replicas on a node that joined, and a node that
//! is removed is treated as down at once (see [`controller`]).
//!
//! Topic and group metadata live in the linearizable state machine
//! (`rsm::state_machine::topic_meta`: the commands, their epoch
//! compare-and-set rules and the key layout); this layer reads that layout
//! and proposes the commands, the state machine never calls into it.
//!
//! [`Topics`] is this node's entry point: it keeps the partition replicas
//! in line with the metadata this node has applied, and serves the client
//! and peer services.

pub mod controller;
pub mod epochs;
pub mod error;
pub mod isr;
pub mod log;
pub mod peer;
pub mod producer_state;
pub mod replica;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use prost::Message;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::NodeId;
use crate::proto::peer::{PartitionStatus, ReplicaFetchRequest, ReplicaFetchResponse};
use crate::proto::rsm::{self, topic_op, PartitionMeta, TopicErrorCode, TopicMeta, TopicOp, TopicReply};
use crate::rsm::state_machine::topic_meta as meta;
use crate::rsm::{Caller, DbRsm, Rsm, RsmRead};
use crate::store::{Store, StoreError};
use log::PartitionId;
use replica::Partition;

pub use crate::rsm::state_machine::topic_meta::assign;
pub use error::{
    IndeterminateReason, InvalidRequest, NotLeaderReason, PartitionName, Refusal, TopicError, UnavailableReason,
};

/// How often a node checks whether the topic metadata it applied changed.
pub const META_POLL_MS: u64 = 50;
/// Period of the partition leaders' ISR/lag checks and checkpoints.
pub const LEADER_TICK_MS: u64 = 100;
/// A high watermark is checkpointed at most this often.
pub const HW_CHECKPOINT_INTERVAL_MS: u64 = 1_000;
/// Deadline of the metadata proposals a node makes itself (ISR, elections).
pub const META_PROPOSAL_TIMEOUT_MS: u64 = 5_000;
/// One attempt of the read barrier a node passes before hosting replicas.
pub const STARTUP_BARRIER_ATTEMPT_MS: u64 = 1_000;
/// Deadline of a status question to a partition leader (describe).
pub const PEER_STATUS_TIMEOUT_MS: u64 = 1_000;

/// Node-wide topic settings (`kv serve` flags).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicSettings {
    /// The controller declares a node dead when it has not heard from it
    /// (Raft traffic) for this long, and moves its partitions' leadership.
    pub node_timeout_ms: u64,
    /// Default `replica.lag.time.max.ms` of topics that do not set it.
    pub replica_lag_time_max_ms: u64,
    /// How often partition leaders apply retention.
    pub retention_check_interval_ms: u64,
    /// TEST ONLY (`--unsafe-reassign-without-catch-up`): the controller
    /// completes reassignments without waiting for the targets to catch up.
    pub unsafe_reassign_without_catch_up: bool,
}

pub const DEFAULT_NODE_TIMEOUT_MS: u64 = 3_000;
pub const DEFAULT_REPLICA_LAG_TIME_MAX_MS: u64 = 10_000;
pub const DEFAULT_RETENTION_CHECK_INTERVAL_MS: u64 = 5_000;

impl Default for TopicSettings {
    fn default() -> Self {
        TopicSettings {
            node_timeout_ms: DEFAULT_NODE_TIMEOUT_MS,
            replica_lag_time_max_ms: DEFAULT_REPLICA_LAG_TIME_MAX_MS,
            retention_check_interval_ms: DEFAULT_RETENTION_CHECK_INTERVAL_MS,
            unsafe_reassign_without_catch_up: false,
        }
    }
}

/// What every partition replica of this node shares.
pub struct Ctx {
    pub node_id: NodeId,
    pub store: Arc<Store>,
    /// The node's replicated state machine (`crate::rsm`), where topic
    /// metadata lives.
    pub rsm: Arc<Rsm>,
    /// Connections to the other members; also who the members are now.
    pub peers: peer::PeerConns,
    pub settings: TopicSettings,
    /// The client addresses the start-up configuration names (`--cluster`,
    /// or the join file): the fallback for members the state machine holds
    /// no record of ([`Topics::members`]).
    pub configured_clients: BTreeMap<NodeId, String>,
    pub tracker: TaskTracker,
    pub cancel: CancellationToken,
    started: Instant,
}

impl Ctx {
    /// Monotonic milliseconds since the node started: the cores' time.
    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
}

/// The topic metadata this node has applied, indexed.
#[derive(Clone, Debug, Default)]
pub struct MetaCache {
    pub version: u64,
    pub next_topic_id: u64,
    pub topics: BTreeMap<String, TopicMeta>,
}

impl MetaCache {
    pub fn by_id(&self, id: u64) -> Option<&TopicMeta> {
        self.topics.values().find(|t| t.id == id)
    }
}

pub struct Topics {
    ctx: Arc<Ctx>,
    partitions: RwLock<HashMap<PartitionId, Arc<Partition>>>,
    cache: RwLock<Arc<MetaCache>>,
}

/// The partitions of `t` that list `node` as a replica (for the node's
/// reconcile loop).
fn replicas_of(t: &TopicMeta, node: NodeId) -> Vec<&PartitionMeta> {
    t.partitions.iter().filter(|p| p.replicas.contains(&node)).collect()
}

/// Reads all topic metadata from this node's `rsm` family.
pub fn load_meta(store: &Store) -> Result<MetaCache, StoreError> {
    let view = DbRsm(store.db());
    let version = view.get(meta::KEY_VERSION)?.and_then(|b| meta::decode_u64(&b)).unwrap_or(0);
    let next_topic_id = view.get(meta::KEY_NEXT_ID)?.and_then(|b| meta::decode_u64(&b)).unwrap_or(1);
    let mut topics = BTreeMap::new();
    for (_, v) in view.scan(meta::TOPIC_PREFIX, &[], meta::MAX_TOPICS)? {
        let t = TopicMeta::decode(&v[..])
            .map_err(|e| StoreError::Malformed { what: "topic metadata", source: e.into() })?;
        topics.insert(t.name.clone(), t);
    }
    Ok(MetaCache { version, next_topic_id, topics })
}

fn read_version(store: &Store) -> Result<u64, StoreError> {
    Ok(DbRsm(store.db()).get(meta::KEY_VERSION)?.and_then(|b| meta::decode_u64(&b)).unwrap_or(0))
}

/// Maps a metadata refusal to an error (OK replies pass through).
pub fn check_reply(r: TopicReply) -> Result<TopicReply, TopicError> {
    let code = TopicErrorCode::try_from(r.code).unwrap_or(TopicErrorCode::Invalid);
    let refusal = match code {
        TopicErrorCode::TopicOk => return Ok(r),
        TopicErrorCode::UnknownTopic => Refusal::UnknownTopic,
        TopicErrorCode::TopicExists => Refusal::TopicExists,
        TopicErrorCode::Invalid => Refusal::Invalid,
        TopicErrorCode::StaleEpoch => Refusal::StaleEpoch,
        TopicErrorCode::StaleGeneration => Refusal::StaleGeneration,
        TopicErrorCode::ReassignmentInProgress => Refusal::ReassignmentInProgress,
    };
    Err(TopicError::Refused { refusal, message: r.message })
}

/// The per-partition status a leader reports (describe).
#[derive(Clone, Debug, Default)]
pub struct Offsets {
    pub high_watermark: u64,
    pub log_end_offset: u64,
    pub log_start_offset: u64,
}

impl Topics {
    /// Starts the topic layer of this node: the metadata reconcile loop,
    /// the leaders' tick loop and the controller.
    pub fn start(
        node_id: NodeId,
        store: Arc<Store>,
        rsm: Arc<Rsm>,
        configured_clients: BTreeMap<NodeId, String>,
        dialer: Arc<dyn crate::node::peers::Dialer>,
        settings: TopicSettings,
        cancel: CancellationToken,
        tracker: &TaskTracker,
    ) -> Arc<Topics> {
        assert_eq!(rsm.peers().self_id(), node_id, "the member set is this node's");
        let peers = peer::PeerConns::new(rsm.peers().clone(), dialer);
        let ctx = Arc::new(Ctx {
            node_id,
            store,
            rsm,
            peers,
            settings,
            configured_clients,
            tracker: tracker.clone(),
            cancel,
            started: Instant::now(),
        });
        let topics = Arc::new(Topics {
            ctx: ctx.clone(),
            partitions: RwLock::new(HashMap::new()),
            cache: RwLock::new(Arc::new(MetaCache::default())),
        });
        tracker.spawn(topics.clone().reconcile_loop());
        tracker.spawn(topics.clone().tick_loop());
        tracker.spawn(controller::run(ctx, topics.clone()));
        topics
    }

    pub fn ctx(&self) -> &Arc<Ctx> {
        &self.ctx
    }

    /// This node's applied view of the metadata (refreshed every
    /// [`META_POLL_MS`]).
    pub fn cache(&self) -> Arc<MetaCache> {
        self.cache.read().expect("topic cache lock").clone()
    }

    pub fn partition(&self, pid: PartitionId) -> Option<Arc<Partition>> {
        self.partitions.read().expect("partitions lock").get(&pid).cloned()
    }

    /// Every replica this node hosts (for metrics).
    pub fn hosted_partitions(&self) -> Vec<Arc<Partition>> {
        self.all_partitions()
    }

    fn all_partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions.read().expect("partitions lock").values().cloned().collect()
    }

    /// Keeps the local replicas in line with the applied metadata. Waits
    /// for one read barrier first, so a restarted node never acts on
    /// metadata older than what was committed when it came up.
    async fn reconcile_loop(self: Arc<Self>) {
        let cancel = self.ctx.cancel.clone();
        loop {
            // Short attempts: raft-rs drops a follower's ReadIndex that
            // reaches a leader with nothing committed in its term yet (just
            // after an election), and such a barrier waits out its deadline.
            match self.ctx.rsm.barrier(Duration::from_millis(STARTUP_BARRIER_ATTEMPT_MS)).await {
                Ok(_) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "topics: waiting for the metadata to catch up");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    }
                }
            }
        }
        let mut seen = u64::MAX;
        loop {
            match read_version(&self.ctx.store) {
                Ok(v) if v != seen => match load_meta(&self.ctx.store) {
                    Ok(cache) => {
                        seen = v;
                        if let Err(e) = self.apply_meta(cache).await {
                            tracing::error!(error = %e, "topics: applying metadata failed");
                            seen = u64::MAX;
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "topics: cannot read metadata"),
                },
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "topics: cannot read the metadata version"),
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_millis(META_POLL_MS)) => {}
            }
        }
        for p in self.all_partitions() {
            p.stop();
        }
    }

    async fn apply_meta(&self, cache: MetaCache) -> Result<(), StoreError> {
        let me = self.ctx.node_id;
        let mut wanted = HashMap::new();
        for t in cache.topics.values() {
            for p in replicas_of(t, me) {
                wanted.insert(PartitionId { topic_id: t.id, partition: p.id }, (t, p));
            }
        }
        for (&pid, &(t, p)) in &wanted {
            let part = match self.partition(pid) {
                Some(part) => part,
                None => {
                    let part = Partition::open(self.ctx.clone(), pid, t.name.clone()).await?;
                    self.partitions.write().expect("partitions lock").insert(pid, part.clone());
                    tracing::info!(topic = %t.name, partition = p.id, "hosting a partition replica");
                    part
                }
            };
            part.update_meta(p.clone(), t.config.unwrap_or_default()).await?;
        }
        *self.cache.write().expect("topic cache lock") = Arc::new(cache.clone());
        // Replicas of deleted topics, and replicas a completed reassignment
        // removed from this node (it leaves only once every target replica
        // is in the ISR, so its data is no longer needed). Ids below the
        // next id were seen by the metadata: absence then means deletion,
        // not "not applied yet".
        let gone: Vec<PartitionId> = self
            .partitions
            .read()
            .expect("partitions lock")
            .keys()
            .copied()
            .filter(|pid| !wanted.contains_key(pid) && pid.topic_id < cache.next_topic_id)
            .collect();
        for pid in gone {
            let removed = self.partitions.write().expect("partitions lock").remove(&pid);
            match removed {
                Some(p) => p.delete().await?,
                None => {
                    self.ctx.store.write(log::delete_partition(pid), false).await?;
                }
            }
            tracing::info!(partition = %pid, "deleted a replica this node no longer hosts (topic deleted or replica reassigned)");
        }
        let db = self.ctx.store.db().clone();
        for (pid, topic) in log::local_replicas(&db)? {
            if !wanted.contains_key(&pid) && pid.topic_id < cache.next_topic_id && self.partition(pid).is_none() {
                self.ctx.store.write(log::delete_partition(pid), false).await?;
                tracing::info!(topic = %topic, partition = %pid, "deleted a leftover replica this node no longer hosts");
            }
        }
        Ok(())
    }

    async fn tick_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(LEADER_TICK_MS));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_retention = Instant::now();
        loop {
            tokio::select! {
                _ = self.ctx.cancel.cancelled() => break,
                _ = tick.tick() => {}
            }
            let retention_due =
                last_retention.elapsed() >= Duration::from_millis(self.ctx.settings.retention_check_interval_ms);
            if retention_due {
                last_retention = Instant::now();
            }
            for p in self.all_partitions() {
                if let Err(e) = p.tick(retention_due).await {
                    tracing::error!(partition = %p.pid, error = %e, "partition housekeeping failed");
                }
            }
        }
    }

    /// Looks a topic up in the applied metadata; if it is not there, once
    /// more after a read barrier (it may have just been created).
    pub async fn topic(&self, name: &str, timeout: Duration) -> Result<TopicMeta, TopicError> {
        if let Some(t) = self.cache().topics.get(name) {
            return Ok(t.clone());
        }
        self.ctx.rsm.barrier(timeout).await?;
        let view = DbRsm(self.ctx.store.db());
        match view.get(&meta::topic_key(name))? {
            Some(b) => TopicMeta::decode(&b[..])
                .map_err(|e| TopicError::Store(StoreError::Malformed { what: "topic metadata", source: e.into() })),
            None => Err(TopicError::UnknownTopic { topic: name.to_string() }),
        }
    }

    /// The local replica of `topic`/`partition`, which must lead it.
    pub async fn leader_partition(
        &self,
        topic: &str,
        partition: u32,
        timeout: Duration,
    ) -> Result<Arc<Partition>, TopicError> {
        let t = self.topic(topic, timeout).await?;
        let Some(pm) = t.partitions.get(partition as usize) else {
            return Err(InvalidRequest::NoSuchPartition {
                topic: topic.to_string(),
                partition,
                partitions: t.partitions.len(),
            }
            .into());
        };
        let pid = PartitionId { topic_id: t.id, partition };
        match self.partition(pid) {
            Some(p) => Ok(p),
            None => Err(TopicError::NotLeader {
                node: self.ctx.node_id,
                partition: PartitionName::new(topic, partition),
                leader: pm.leader,
                reason: NotLeaderReason::NoReplicaHere,
            }),
        }
    }

    /// Proposes a metadata command on behalf of a client.
    pub async fn propose(&self, caller: Caller, op: topic_op::Op, timeout: Duration) -> Result<TopicReply, TopicError> {
        let r = self.ctx.rsm.topic(caller, TopicOp { op: Some(op) }, timeout).await?;
        check_reply(r)
    }

    /// Every topic (or the named ones) as the linearizable store has them
    /// (after a read barrier when `linearizable`, or when a named topic is
    /// missing from this node's copy).
    pub async fn metadata(
        &self,
        names: &[String],
        linearizable: bool,
        timeout: Duration,
    ) -> Result<Vec<TopicMeta>, TopicError> {
        if linearizable {
            self.ctx.rsm.barrier(timeout).await?;
        }
        let mut all = load_meta(&self.ctx.store)?;
        if names.is_empty() {
            return Ok(all.topics.into_values().collect());
        }
        if !linearizable && names.iter().any(|n| !all.topics.contains_key(n)) {
            // Like `topic`: a name missing here may have just been created
            // through another node; only after a read barrier is it unknown.
            self.ctx.rsm.barrier(timeout).await?;
            all = load_meta(&self.ctx.store)?;
        }
        names
            .iter()
            .map(|n| all.topics.get(n).cloned().ok_or_else(|| TopicError::UnknownTopic { topic: n.clone() }))
            .collect()
    }

    /// High watermark, log end and log start of every partition of `t`,
    /// asked from each leader (`None` where it could not be asked).
    pub async fn offsets(&self, t: &TopicMeta) -> Vec<Option<Offsets>> {
        let mut by_leader: BTreeMap<NodeId, Vec<u32>> = BTreeMap::new();
        for p in &t.partitions {
            if p.leader != 0 {
                by_leader.entry(p.leader).or_default().push(p.id);
            }
        }
        let mut out = vec![None; t.partitions.len()];
        let asks = by_leader.into_iter().map(|(leader, parts)| async move {
            let got = if leader == self.ctx.node_id {
                Ok(self.partition_status(t.id, &parts))
            } else {
                self.ctx.peers.partition_status(leader, t.id, parts.clone(), PEER_STATUS_TIMEOUT_MS).await
            };
            (leader, got)
        });
        for (leader, got) in futures::future::join_all(asks).await {
            match got {
                Ok(list) => {
                    for s in list {
                        if s.role == "leader" {
                            if let Some(slot) = out.get_mut(s.partition as usize) {
                                *slot = Some(Offsets {
                                    high_watermark: s.high_watermark,
                                    log_end_offset: s.log_end_offset,
                                    log_start_offset: s.log_start_offset,
                                });
                            }
                        }
                    }
                }
                Err(e) => tracing::debug!(leader, error = %e, "partition status unavailable"),
            }
        }
        out
    }

    /// This node's view of its replicas of the given partitions.
    pub fn partition_status(&self, topic_id: u64, partitions: &[u32]) -> Vec<PartitionStatus> {
        partitions
            .iter()
            .map(|&partition| match self.partition(PartitionId { topic_id, partition }) {
                Some(p) => p.status(),
                None => PartitionStatus { partition, role: "none".into(), ..Default::default() },
            })
            .collect()
    }

    /// A follower's fetch, served by the partition leader.
    pub async fn serve_replica_fetch(&self, req: ReplicaFetchRequest) -> ReplicaFetchResponse {
        let pid = PartitionId { topic_id: req.topic_id, partition: req.partition };
        match self.partition(pid) {
            Some(p) => p.serve_replica_fetch(req).await,
            None => replica::fetch_error(
                crate::proto::peer::ReplicaFetchError::UnknownPartition,
                format!("node {} has no replica of partition {pid}", self.ctx.node_id),
            ),
        }
    }

    /// The committed offsets of `group` for `topic` (after a read barrier).
    pub async fn committed(&self, group: &str, topic: &str, timeout: Duration) -> Result<Vec<(u32, u64)>, TopicError> {
        self.ctx.rsm.barrier(timeout).await?;
        let view = DbRsm(self.ctx.store.db());
        let Some(b) = view.get(&meta::topic_key(topic))? else {
            return Err(TopicError::UnknownTopic { topic: topic.to_string() });
        };
        let t = TopicMeta::decode(&b[..])
            .map_err(|e| StoreError::Malformed { what: "topic metadata", source: e.into() })?;
        let mut out = Vec::new();
        for p in &t.partitions {
            if let Some(v) = view.get(&meta::offset_key(group, t.id, p.id))?.and_then(|b| meta::decode_u64(&b)) {
                out.push((p.id, v));
            }
        }
        Ok(out)
    }

    /// The current members (Raft voters and learners) with their client
    /// addresses, for placing replicas and for clients that route to
    /// partition leaders. An address comes from the member's record in the
    /// state machine (a node that joined), else from the start-up
    /// configuration (a founder).
    pub fn members(&self) -> BTreeMap<NodeId, String> {
        let records = self.ctx.rsm.member_records().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "topics: cannot read the member records; founders' addresses only");
            BTreeMap::new()
        });
        self.ctx
            .peers
            .member_ids()
            .into_iter()
            .map(|id| {
                let addr = match records.get(&id) {
                    Some(r) if !r.removed => r.client_address.clone(),
                    _ => self.ctx.configured_clients.get(&id).cloned().unwrap_or_default(),
                };
                (id, addr)
            })
            .collect()
    }
}

/// A create request's settings, validated and with defaults applied.
pub fn topic_config(
    partitions: u32,
    replication_factor: u32,
    min_insync: u32,
    unclean: bool,
    retention_ms: u64,
    retention_bytes: u64,
    lag_ms: u64,
) -> Result<rsm::TopicConfig, TopicError> {
    if partitions == 0 || partitions > meta::MAX_PARTITIONS {
        return Err(InvalidRequest::Partitions { partitions, max: meta::MAX_PARTITIONS }.into());
    }
    if replication_factor == 0 {
        return Err(InvalidRequest::ReplicationFactorZero.into());
    }
    let min = if min_insync == 0 { replication_factor.min(2) } else { min_insync };
    if min > replication_factor {
        return Err(InvalidRequest::MinInsyncAboveReplicationFactor { min_insync: min, replication_factor }.into());
    }
    Ok(rsm::TopicConfig {
        replication_factor,
        min_insync_replicas: min,
        unclean_leader_election: unclean,
        retention_ms,
        retention_bytes,
        replica_lag_time_max_ms: lag_ms,
    })
}
