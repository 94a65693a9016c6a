//! Topic client: create and inspect topics, produce and consume.
//!
//! ```no_run
//! # async fn demo() -> Result<(), capkv::client::topics::TopicClientError> {
//! use std::sync::Arc;
//! use capkv::client::topics::*;
//! let client = Arc::new(TopicClient::new(&["127.0.0.1:7001", "127.0.0.1:7002"])?);
//! client.create_topic("orders", TopicSpec::new(3, 3)).await?;
//! let producer = Producer::new(client.clone(), "orders", ProducerOptions::default()).await?;
//! let at = producer.send(Some(b"customer-7"), b"paid").await?; // (partition, offset)
//! let mut consumer = Consumer::new(client, "orders", ConsumerOptions::default()).await?;
//! for r in consumer.poll().await? {
//!     println!("{}@{}: {:?}", r.partition, r.offset, r.value);
//! }
//! # Ok(()) }
//! ```
//!
//! Metadata calls go to any endpoint. Produce and fetch go to the
//! partition's leader, found in the metadata (cached, refreshed when a node
//! says it is not the leader). The [`Producer`] is idempotent: a random
//! producer id and per-partition sequence numbers let it retry a batch
//! whose answer was lost without the records being appended twice. Keyed
//! records go to `xxh3(key) mod partitions`, keyless ones round-robin.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Code, Status};

use super::{describe, is_connect_error, timed, MAX_ENDPOINTS, MAX_MESSAGE_BYTES};
use crate::node::service::RETRY_SAFE_HEADER;
use crate::node::topic_service::{EXPECTED_SEQUENCE_HEADER, LOG_END_HEADER, LOG_START_HEADER, TOPIC_ERROR_HEADER};
use crate::proto::topics_client::TopicsClient;
use crate::proto::{self, RequestHeader, TopicInfo};
use crate::topic::assign::partition_for_key;

pub const DEFAULT_METADATA_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Records per produce request the producer builds at most.
pub const DEFAULT_MAX_BATCH_RECORDS: usize = 2_000;
/// Key + value bytes per produce request the producer builds at most.
pub const DEFAULT_MAX_BATCH_BYTES: usize = 2 * 1024 * 1024;
/// Pause before retrying after "not the leader" or "unavailable".
pub const RETRY_PAUSE_MS: u64 = 100;
/// One metadata attempt on one node at most, so a paused node (SIGSTOP)
/// does not hold the call; the next node gets the same request id.
pub const METADATA_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
pub const DEFAULT_FETCH_MAX_BYTES: u32 = 1024 * 1024;
pub const DEFAULT_FETCH_WAIT: Duration = Duration::from_millis(500);
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum TopicClientError {
    #[error("{0}")]
    Config(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("unknown topic: {0}")]
    UnknownTopic(String),
    #[error("topic exists: {0}")]
    TopicExists(String),
    /// acks=all refused: the ISR is below min.insync.replicas. Nothing was written.
    #[error("not enough replicas: {0}")]
    NotEnoughReplicas(String),
    /// A consumer-group request from a member not in the current generation.
    #[error("stale group generation: {0}")]
    StaleGeneration(String),
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    #[error("offset out of range: {message}")]
    OffsetOutOfRange { message: String, log_start: u64, log_end: u64 },
    /// Certainly not done.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A produce whose outcome is unknown: the records may or may not be in the log.
    #[error("indeterminate: {0}")]
    Indeterminate(String),
    #[error("server error ({code}): {message}")]
    Server { code: String, message: String },
}

use TopicClientError as E;

/// What a failed call means for a retry.
#[derive(Debug)]
enum Failure {
    /// Try again (possibly elsewhere): certainly not done.
    Retry(E),
    /// This node does not lead the partition: refresh metadata, retry.
    NotLeader(E),
    /// The sequence numbers are out of order: nothing was appended.
    OutOfOrder { expected: u64, error: E },
    /// Maybe done.
    Unknown(E),
    /// Do not retry.
    Fatal(E),
}

fn header_u64(s: &Status, name: &str) -> Option<u64> {
    s.metadata().get(name)?.to_str().ok()?.parse().ok()
}

fn classify(s: Status, addr: &str) -> Failure {
    let code = s.metadata().get(TOPIC_ERROR_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let msg = format!("{addr}: {}", describe(&s));
    if is_connect_error(&s) {
        return Failure::Retry(E::Unavailable(msg));
    }
    match code.as_str() {
        "not-leader" => return Failure::NotLeader(E::Unavailable(msg)),
        "unknown-topic" => return Failure::Fatal(E::UnknownTopic(s.message().to_string())),
        "topic-exists" => return Failure::Fatal(E::TopicExists(s.message().to_string())),
        "not-enough-replicas" => return Failure::Fatal(E::NotEnoughReplicas(s.message().to_string())),
        "stale-generation" => return Failure::Fatal(E::StaleGeneration(s.message().to_string())),
        "out-of-order-sequence" => {
            if let Some(expected) = header_u64(&s, EXPECTED_SEQUENCE_HEADER) {
                return Failure::OutOfOrder { expected, error: E::FailedPrecondition(msg) };
            }
        }
        "offset-out-of-range" => {
            return Failure::Fatal(E::OffsetOutOfRange {
                message: s.message().to_string(),
                log_start: header_u64(&s, LOG_START_HEADER).unwrap_or(0),
                log_end: header_u64(&s, LOG_END_HEADER).unwrap_or(0),
            })
        }
        _ => {}
    }
    if s.metadata().get(RETRY_SAFE_HEADER).is_some() {
        return Failure::Retry(E::Unavailable(msg));
    }
    match s.code() {
        Code::InvalidArgument | Code::OutOfRange => Failure::Fatal(E::InvalidArgument(s.message().to_string())),
        Code::NotFound => Failure::Fatal(E::UnknownTopic(s.message().to_string())),
        Code::AlreadyExists => Failure::Fatal(E::TopicExists(s.message().to_string())),
        Code::FailedPrecondition => Failure::Fatal(E::FailedPrecondition(s.message().to_string())),
        Code::Unimplemented | Code::PermissionDenied | Code::Unauthenticated | Code::Internal | Code::DataLoss => {
            Failure::Fatal(E::Server { code: format!("{:?}", s.code()), message: s.message().to_string() })
        }
        _ => Failure::Unknown(E::Indeterminate(msg)),
    }
}

/// Settings of a new topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicSpec {
    pub partitions: u32,
    pub replication_factor: u32,
    /// 0 = min(2, replication factor).
    pub min_insync_replicas: u32,
    pub unclean_leader_election: bool,
    /// 0 = forever.
    pub retention_ms: u64,
    /// 0 = no size limit.
    pub retention_bytes: u64,
    /// 0 = the nodes' default.
    pub replica_lag_time_max_ms: u64,
}

impl TopicSpec {
    pub fn new(partitions: u32, replication_factor: u32) -> TopicSpec {
        TopicSpec {
            partitions,
            replication_factor,
            min_insync_replicas: 0,
            unclean_leader_election: false,
            retention_ms: 0,
            retention_bytes: 0,
            replica_lag_time_max_ms: 0,
        }
    }
}

/// Producer acknowledgement level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acks {
    /// The leader answers once the records are queued: they may be lost.
    None,
    /// Once fsynced on the leader: lost if the leader dies before followers copy them.
    Leader,
    /// Once on every in-sync replica (at least min.insync.replicas): survives
    /// any failure that leaves one of them.
    All,
}

impl Acks {
    /// `0`, `1` or `all`, as `kv topic produce --acks` spells them (and
    /// [`FromStr`](std::str::FromStr) reads them back).
    pub fn name(self) -> &'static str {
        match self {
            Acks::None => "0",
            Acks::Leader => "1",
            Acks::All => "all",
        }
    }

    fn to_proto(self) -> proto::Acks {
        match self {
            Acks::None => proto::Acks::None,
            Acks::Leader => proto::Acks::Leader,
            Acks::All => proto::Acks::All,
        }
    }
}

impl std::str::FromStr for Acks {
    type Err = String;
    fn from_str(s: &str) -> Result<Acks, String> {
        match s {
            "0" | "none" => Ok(Acks::None),
            "1" | "leader" => Ok(Acks::Leader),
            "all" | "-1" => Ok(Acks::All),
            _ => Err(format!("acks {s:?} is not valid: expected 0, 1 or all")),
        }
    }
}

/// Where one produce request's records went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProduceResult {
    pub partition: u32,
    /// The first record's offset; `None` for acks=0 (not known).
    pub base_offset: Option<u64>,
    pub duplicate: bool,
}

/// Where one record went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordMetadata {
    pub partition: u32,
    /// `None` for acks=0 (not known).
    pub offset: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub offset: u64,
    pub key: Bytes,
    pub value: Bytes,
    pub timestamp_ms: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FetchResult {
    pub records: Vec<Record>,
    pub high_watermark: u64,
    pub log_start_offset: u64,
    pub log_end_offset: u64,
    pub next_offset: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupState {
    pub generation: u64,
    pub members: Vec<String>,
    /// Partitions per topic assigned to this member.
    pub assignment: BTreeMap<String, Vec<u32>>,
}

pub struct TopicClient {
    endpoints: Vec<String>,
    conns: Mutex<HashMap<String, TopicsClient<Channel>>>,
    /// Node id → client address, from the last metadata answer.
    nodes: RwLock<BTreeMap<u32, String>>,
    topics: RwLock<HashMap<String, TopicInfo>>,
    client_id: u64,
    next_request_id: AtomicU64,
    metadata_timeout: Duration,
}

impl TopicClient {
    /// A client for `endpoints` (`host:port`). Connections are made lazily.
    pub fn new<S: AsRef<str>>(endpoints: &[S]) -> Result<TopicClient, TopicClientError> {
        if endpoints.is_empty() {
            return Err(E::Config("no endpoints given: pass --endpoints HOST:PORT,... or set KV_ENDPOINTS".into()));
        }
        if endpoints.len() > MAX_ENDPOINTS {
            return Err(E::Config(format!("{} endpoints given; at most {MAX_ENDPOINTS}", endpoints.len())));
        }
        let mut eps = Vec::new();
        for e in endpoints {
            let addr = e.as_ref().trim().trim_start_matches("http://").to_string();
            crate::node::config::validate_host_port(&addr).map_err(|m| E::Config(format!("invalid endpoint: {m}")))?;
            eps.push(addr);
        }
        Ok(TopicClient {
            endpoints: eps,
            conns: Mutex::new(HashMap::new()),
            nodes: RwLock::new(BTreeMap::new()),
            topics: RwLock::new(HashMap::new()),
            client_id: rand::random::<u64>() | 1,
            next_request_id: AtomicU64::new(1),
            metadata_timeout: DEFAULT_METADATA_TIMEOUT,
        })
    }

    /// Deadline of metadata calls (create, describe, groups, ...).
    pub fn with_metadata_timeout(mut self, t: Duration) -> Self {
        self.metadata_timeout = t;
        self
    }

    fn conn(&self, addr: &str) -> Result<TopicsClient<Channel>, E> {
        let mut conns = self.conns.lock().expect("conns lock");
        if let Some(c) = conns.get(addr) {
            return Ok(c.clone());
        }
        let ch = crate::node::peers::channel(addr, std::net::IpAddr::from([0, 0, 0, 0])).map_err(E::Config)?;
        let c = TopicsClient::new(ch)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        conns.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    fn header(&self, timeout: Duration) -> Option<RequestHeader> {
        let request_id = self.next_request_id.fetch_add(1, Ordering::Relaxed);
        Some(RequestHeader {
            consistency: 0,
            client_id: self.client_id,
            request_id,
            timeout_ms: timeout.as_millis().clamp(1, u32::MAX as u128) as u32,
            ack_below: 0,
        })
    }

    /// A metadata call on any endpoint, retried elsewhere while that is
    /// safe, until the metadata timeout.
    async fn call_any<T, F, Fut>(&self, what: &str, f: F) -> Result<T, E>
    where
        F: Fn(TopicsClient<Channel>, Duration) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let deadline = Instant::now() + self.metadata_timeout;
        let mut errors: Vec<String> = Vec::new();
        let mut maybe_done = None;
        loop {
            // Only the last round's errors are reported (bounded).
            if errors.len() >= self.endpoints.len() {
                errors.drain(..errors.len() - self.endpoints.len());
            }
            for addr in &self.endpoints {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    let why = errors.join("; ");
                    return Err(match maybe_done {
                        Some(e) => e,
                        None => E::Unavailable(format!("no node could {what}: {why}")),
                    });
                }
                let c = self.conn(addr)?;
                let attempt = left.min(METADATA_ATTEMPT_TIMEOUT);
                match crate::node::peers::call(attempt.as_millis() as u64 + 1, f(c, attempt)).await {
                    Ok(r) => return Ok(r),
                    Err(s) => match classify(s, addr) {
                        Failure::Fatal(e) => return Err(e),
                        Failure::Retry(e) | Failure::NotLeader(e) | Failure::OutOfOrder { error: e, .. } => {
                            errors.push(e.to_string())
                        }
                        // Metadata writes are de-duplicated by request id.
                        Failure::Unknown(e) => {
                            errors.push(e.to_string());
                            maybe_done = Some(e);
                        }
                    },
                }
            }
            tokio::time::sleep(Duration::from_millis(RETRY_PAUSE_MS)).await;
        }
    }

    pub async fn create_topic(&self, name: &str, spec: TopicSpec) -> Result<TopicInfo, E> {
        let settings = proto::TopicSettings {
            partitions: spec.partitions,
            replication_factor: spec.replication_factor,
            min_insync_replicas: spec.min_insync_replicas,
            unclean_leader_election: spec.unclean_leader_election,
            retention_ms: spec.retention_ms,
            retention_bytes: spec.retention_bytes,
            replica_lag_time_max_ms: spec.replica_lag_time_max_ms,
        };
        let header = self.header(self.metadata_timeout);
        let t = self
            .call_any("create the topic", |mut c, left| {
                let req = proto::CreateTopicRequest {
                    header: header.map(|h| RequestHeader { timeout_ms: left.as_millis() as u32, ..h }),
                    name: name.to_string(),
                    settings: Some(settings),
                };
                async move { c.create_topic(timed(req, left)).await }
            })
            .await?;
        self.topics.write().expect("topics lock").insert(name.to_string(), t.clone());
        Ok(t)
    }

    pub async fn delete_topic(&self, name: &str) -> Result<(), E> {
        let header = self.header(self.metadata_timeout);
        self.call_any("delete the topic", |mut c, left| {
            let req = proto::DeleteTopicRequest { header, name: name.to_string() };
            async move { c.delete_topic(timed(req, left)).await }
        })
        .await?;
        self.topics.write().expect("topics lock").remove(name);
        Ok(())
    }

    /// Metadata of every topic (or the named ones), linearizable.
    pub async fn list_topics(&self) -> Result<Vec<TopicInfo>, E> {
        Ok(self.metadata_call(&[], true).await?.topics)
    }

    async fn metadata_call(&self, names: &[String], linearizable: bool) -> Result<proto::MetadataResponse, E> {
        let r = self
            .call_any("read topic metadata", |mut c, left| {
                let req = proto::MetadataRequest {
                    topics: names.to_vec(),
                    linearizable,
                    timeout_ms: left.as_millis() as u32,
                };
                async move { c.metadata(timed(req, left)).await }
            })
            .await?;
        *self.nodes.write().expect("nodes lock") = r.nodes.iter().map(|m| (m.id, m.address.clone())).collect();
        let mut topics = self.topics.write().expect("topics lock");
        for t in &r.topics {
            topics.insert(t.name.clone(), t.clone());
        }
        Ok(r)
    }

    /// A topic's metadata and, per partition, the leader's high watermark,
    /// log end and log start.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicInfo, E> {
        self.call_any("describe the topic", |mut c, left| {
            let req = proto::DescribeTopicRequest { name: name.to_string(), timeout_ms: left.as_millis() as u32 };
            async move { c.describe_topic(timed(req, left)).await }
        })
        .await
    }

    /// A topic's metadata, from the cache unless `refresh`.
    pub async fn metadata(&self, name: &str, refresh: bool) -> Result<TopicInfo, E> {
        if !refresh {
            if let Some(t) = self.topics.read().expect("topics lock").get(name) {
                return Ok(t.clone());
            }
        }
        let mut r = self.metadata_call(&[name.to_string()], false).await?;
        r.topics.pop().ok_or_else(|| E::UnknownTopic(format!("topic {name:?} does not exist")))
    }

    /// The client address of the partition's leader, per the metadata.
    async fn leader_addr(&self, topic: &str, partition: u32, refresh: bool) -> Result<String, E> {
        let t = self.metadata(topic, refresh).await?;
        let Some(p) = t.partitions.get(partition as usize) else {
            return Err(E::InvalidArgument(format!(
                "topic {topic:?} has no partition {partition}: it has {}",
                t.partitions.len()
            )));
        };
        if p.leader == 0 {
            return Err(E::Unavailable(format!("{topic}/{partition} has no leader now")));
        }
        if !p.leader_address.is_empty() {
            return Ok(p.leader_address.clone());
        }
        self.nodes
            .read()
            .expect("nodes lock")
            .get(&p.leader)
            .cloned()
            .ok_or_else(|| E::Unavailable(format!("no address known for node {}", p.leader)))
    }

    /// A data call on the partition leader, re-routed while the leader
    /// moves, until `deadline`. Failures other than "not the leader" /
    /// "not reachable" come back classified.
    async fn call_leader<T, F, Fut>(&self, topic: &str, partition: u32, deadline: Instant, f: F) -> Result<T, Failure>
    where
        F: Fn(TopicsClient<Channel>, Duration) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let mut refresh = false;
        let mut last = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Failure::Retry(
                    last.unwrap_or_else(|| {
                        E::Unavailable(format!("no leader of {topic}/{partition} answered in time"))
                    }),
                ));
            }
            let addr = match self.leader_addr(topic, partition, refresh).await {
                Ok(a) => a,
                Err(e @ (E::UnknownTopic(_) | E::InvalidArgument(_))) => return Err(Failure::Fatal(e)),
                Err(e) => {
                    last = Some(e);
                    refresh = true;
                    tokio::time::sleep(Duration::from_millis(RETRY_PAUSE_MS).min(left)).await;
                    continue;
                }
            };
            let c = self.conn(&addr).map_err(Failure::Fatal)?;
            let left = deadline.saturating_duration_since(Instant::now());
            match crate::node::peers::call(left.as_millis() as u64 + 1, f(c, left)).await {
                Ok(r) => return Ok(r),
                Err(s) => match classify(s, &addr) {
                    Failure::NotLeader(e) | Failure::Retry(e) => {
                        last = Some(e);
                        refresh = true;
                        tokio::time::sleep(Duration::from_millis(RETRY_PAUSE_MS).min(left)).await;
                    }
                    other => return Err(other),
                },
            }
        }
    }

    /// One produce request (records in order, contiguous offsets), routed
    /// to the leader and re-routed while leadership moves. Not retried
    /// when its outcome is unknown: see [`Producer`] for that.
    #[allow(clippy::too_many_arguments)]
    pub async fn produce(
        &self,
        topic: &str,
        partition: u32,
        acks: Acks,
        producer_id: u64,
        base_sequence: u64,
        records: &[(Bytes, Bytes)],
        timeout: Duration,
    ) -> Result<ProduceResult, E> {
        self.produce_classified(topic, partition, acks, producer_id, base_sequence, records, timeout).await.map_err(
            |f| match f {
                Failure::Retry(e) | Failure::NotLeader(e) | Failure::Unknown(e) | Failure::Fatal(e) => e,
                Failure::OutOfOrder { error, .. } => error,
            },
        )
    }

    #[allow(clippy::too_many_arguments)]
    async fn produce_classified(
        &self,
        topic: &str,
        partition: u32,
        acks: Acks,
        producer_id: u64,
        base_sequence: u64,
        records: &[(Bytes, Bytes)],
        timeout: Duration,
    ) -> Result<ProduceResult, Failure> {
        let deadline = Instant::now() + timeout;
        let recs: Vec<proto::ProducerRecord> =
            records.iter().map(|(k, v)| proto::ProducerRecord { key: k.clone(), value: v.clone() }).collect();
        let r = self
            .call_leader(topic, partition, deadline, |mut c, left| {
                let req = proto::ProduceRequest {
                    topic: topic.to_string(),
                    partition,
                    acks: acks.to_proto() as i32,
                    producer_id,
                    base_sequence,
                    records: recs.clone(),
                    timeout_ms: left.as_millis().clamp(1, u32::MAX as u128) as u32,
                };
                async move { c.produce(timed(req, left)).await }
            })
            .await?;
        Ok(ProduceResult {
            partition,
            base_offset: (!r.offset_unknown).then_some(r.base_offset),
            duplicate: r.duplicate,
        })
    }

    /// Records of `topic`/`partition` from `offset` below the high
    /// watermark, waiting up to `max_wait` for some to arrive.
    pub async fn fetch(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: u32,
        max_wait: Duration,
    ) -> Result<FetchResult, E> {
        let deadline = Instant::now() + max_wait + self.metadata_timeout;
        let r = self
            .call_leader(topic, partition, deadline, |mut c, _left| {
                let req = proto::FetchRequest {
                    topic: topic.to_string(),
                    partition,
                    offset,
                    max_bytes,
                    max_wait_ms: max_wait.as_millis() as u32,
                };
                async move { c.fetch(timed(req, max_wait + DEFAULT_METADATA_TIMEOUT)).await }
            })
            .await
            .map_err(|f| match f {
                Failure::Retry(e) | Failure::NotLeader(e) | Failure::Unknown(e) | Failure::Fatal(e) => e,
                Failure::OutOfOrder { error, .. } => error,
            })?;
        Ok(FetchResult {
            records: r
                .records
                .into_iter()
                .map(|c| Record { offset: c.offset, key: c.key, value: c.value, timestamp_ms: c.timestamp_ms })
                .collect(),
            high_watermark: r.high_watermark,
            log_start_offset: r.log_start_offset,
            log_end_offset: r.log_end_offset,
            next_offset: r.next_offset,
        })
    }

    /// Joins `group` or renews the membership; returns this member's partitions.
    pub async fn group_heartbeat(
        &self,
        group: &str,
        member_id: &str,
        topics: &[String],
        session_timeout: Duration,
    ) -> Result<GroupState, E> {
        let header = self.header(self.metadata_timeout);
        let r = self
            .call_any("join the group", |mut c, left| {
                let req = proto::GroupHeartbeatRequest {
                    header,
                    group: group.to_string(),
                    member_id: member_id.to_string(),
                    topics: topics.to_vec(),
                    session_timeout_ms: session_timeout.as_millis() as u64,
                };
                async move { c.group_heartbeat(timed(req, left)).await }
            })
            .await?;
        Ok(GroupState {
            generation: r.generation,
            members: r.members,
            assignment: r.assignment.into_iter().map(|a| (a.topic, a.partitions)).collect(),
        })
    }

    pub async fn group_leave(&self, group: &str, member_id: &str) -> Result<(), E> {
        let header = self.header(self.metadata_timeout);
        self.call_any("leave the group", |mut c, left| {
            let req = proto::GroupLeaveRequest { header, group: group.to_string(), member_id: member_id.to_string() };
            async move { c.group_leave(timed(req, left)).await }
        })
        .await?;
        Ok(())
    }

    /// Commits offsets (the next offset to consume) for `group`. `member_id`
    /// empty and generation 0: only while the group has no members.
    pub async fn commit_offsets(
        &self,
        group: &str,
        member_id: &str,
        generation: u64,
        offsets: &[(String, u32, u64)],
    ) -> Result<(), E> {
        let header = self.header(self.metadata_timeout);
        let offsets: Vec<proto::CommittedOffset> = offsets
            .iter()
            .map(|(topic, partition, offset)| proto::CommittedOffset {
                topic: topic.clone(),
                partition: *partition,
                offset: *offset,
            })
            .collect();
        self.call_any("commit offsets", |mut c, left| {
            let req = proto::CommitOffsetsRequest {
                header,
                group: group.to_string(),
                member_id: member_id.to_string(),
                generation,
                offsets: offsets.clone(),
            };
            async move { c.commit_offsets(timed(req, left)).await }
        })
        .await?;
        Ok(())
    }

    /// The committed offsets of `group` for `topic`, by partition.
    pub async fn committed_offsets(&self, group: &str, topic: &str) -> Result<BTreeMap<u32, u64>, E> {
        let r = self
            .call_any("read committed offsets", |mut c, left| {
                let req = proto::FetchOffsetsRequest {
                    group: group.to_string(),
                    topic: topic.to_string(),
                    timeout_ms: left.as_millis() as u32,
                };
                async move { c.fetch_offsets(timed(req, left)).await }
            })
            .await?;
        Ok(r.offsets.into_iter().map(|o| (o.partition, o.offset)).collect())
    }
}

#[derive(Clone, Debug)]
pub struct ProducerOptions {
    pub acks: Acks,
    /// How long a record may take to be acknowledged, retries included.
    pub delivery_timeout: Duration,
    /// Deadline of one produce request.
    pub request_timeout: Duration,
    pub max_batch_records: usize,
    pub max_batch_bytes: usize,
}

impl Default for ProducerOptions {
    fn default() -> Self {
        ProducerOptions {
            acks: Acks::All,
            delivery_timeout: DEFAULT_DELIVERY_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_batch_records: DEFAULT_MAX_BATCH_RECORDS,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
        }
    }
}

type Waiter = oneshot::Sender<Result<RecordMetadata, E>>;

#[derive(Default)]
struct PartitionQueue {
    queue: VecDeque<((Bytes, Bytes), Waiter)>,
    /// A task is sending this partition's batches.
    sending: bool,
    next_sequence: u64,
}

struct ProducerInner {
    client: Arc<TopicClient>,
    topic: String,
    opts: ProducerOptions,
    producer_id: u64,
    partitions: u32,
    round_robin: AtomicU64,
    queues: Vec<Mutex<PartitionQueue>>,
}

/// An idempotent producer for one topic. Concurrent [`Producer::send`]s
/// to a partition are batched: one request in flight per partition, the
/// next batch gathering while it is. A batch is retried (same sequence
/// numbers) until acknowledged or the delivery timeout passes; records of a
/// partition are appended in the order they were sent. Cheap to clone.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<ProducerInner>,
}

impl Producer {
    pub async fn new(client: Arc<TopicClient>, topic: &str, opts: ProducerOptions) -> Result<Producer, E> {
        let t = client.metadata(topic, true).await?;
        let partitions = t.partitions.len() as u32;
        if partitions == 0 {
            return Err(E::UnknownTopic(format!("topic {topic:?} has no partitions")));
        }
        Ok(Producer {
            inner: Arc::new(ProducerInner {
                client,
                topic: topic.to_string(),
                opts,
                producer_id: rand::random::<u64>() >> 1 | 1,
                partitions,
                round_robin: AtomicU64::new(rand::random::<u32>() as u64),
                queues: (0..partitions).map(|_| Mutex::new(PartitionQueue::default())).collect(),
            }),
        })
    }

    pub fn partitions(&self) -> u32 {
        self.inner.partitions
    }

    pub fn producer_id(&self) -> u64 {
        self.inner.producer_id
    }

    /// The partition a record goes to: by key hash, or round-robin.
    pub fn partition_for(&self, key: Option<&[u8]>) -> u32 {
        match key {
            Some(k) if !k.is_empty() => partition_for_key(k, self.inner.partitions),
            _ => (self.inner.round_robin.fetch_add(1, Ordering::Relaxed) % self.inner.partitions as u64) as u32,
        }
    }

    /// Sends one record; returns its partition and offset once acknowledged.
    pub async fn send(&self, key: Option<&[u8]>, value: &[u8]) -> Result<RecordMetadata, E> {
        let partition = self.partition_for(key);
        self.send_to(partition, key, value).await
    }

    /// Sends one record to a chosen partition.
    pub async fn send_to(&self, partition: u32, key: Option<&[u8]>, value: &[u8]) -> Result<RecordMetadata, E> {
        let rx = self.enqueue(partition, key, value)?;
        rx.await.map_err(|_| E::Indeterminate("the producer stopped before an answer".into()))?
    }

    /// Queues one record and returns where its outcome will arrive
    /// (for callers that keep many records in flight).
    pub fn enqueue(
        &self,
        partition: u32,
        key: Option<&[u8]>,
        value: &[u8],
    ) -> Result<oneshot::Receiver<Result<RecordMetadata, E>>, E> {
        let inner = &self.inner;
        let Some(q) = inner.queues.get(partition as usize) else {
            return Err(E::InvalidArgument(format!(
                "topic {:?} has no partition {partition}: it has {}",
                inner.topic, inner.partitions
            )));
        };
        let (tx, rx) = oneshot::channel();
        let record = (Bytes::copy_from_slice(key.unwrap_or_default()), Bytes::copy_from_slice(value));
        let start = {
            let mut q = q.lock().expect("producer queue lock");
            q.queue.push_back((record, tx));
            !std::mem::replace(&mut q.sending, true)
        };
        if start {
            let me = self.inner.clone();
            tokio::spawn(async move { me.drain(partition).await });
        }
        Ok(rx)
    }
}

impl ProducerInner {
    /// Sends queued batches of `partition` until its queue is empty.
    async fn drain(self: Arc<Self>, partition: u32) {
        loop {
            let (batch, waiters, base_sequence) = {
                let mut q = self.queues[partition as usize].lock().expect("producer queue lock");
                if q.queue.is_empty() {
                    q.sending = false;
                    return;
                }
                let mut batch = Vec::new();
                let mut waiters = Vec::new();
                let mut bytes = 0usize;
                while let Some(((k, v), _)) = q.queue.front() {
                    let len = k.len() + v.len();
                    if !batch.is_empty()
                        && (batch.len() >= self.opts.max_batch_records || bytes + len > self.opts.max_batch_bytes)
                    {
                        break;
                    }
                    bytes += len;
                    let (rec, w) = q.queue.pop_front().expect("front exists");
                    batch.push(rec);
                    waiters.push(w);
                }
                let base = q.next_sequence;
                q.next_sequence += batch.len() as u64;
                (batch, waiters, base)
            };
            let result = self.send_batch(partition, base_sequence, &batch).await;
            for (i, w) in waiters.into_iter().enumerate() {
                let r = match &result {
                    Ok(base) => Ok(RecordMetadata { partition, offset: base.map(|b| b + i as u64) }),
                    Err(e) => Err(e.clone()),
                };
                let _ = w.send(r);
            }
        }
    }

    /// Sends one batch until acknowledged, refused, or out of time.
    /// A definite refusal of a retry says nothing about an earlier attempt
    /// whose outcome was unknown: then the batch's fate is unknown too.
    fn refused(&self, error: E, maybe_written: Option<E>) -> E {
        match maybe_written {
            None => error,
            Some(earlier) => E::Indeterminate(format!(
                "a retry was refused ({error}) after an attempt whose outcome is unknown ({earlier}); \
                 the records may or may not be in the log"
            )),
        }
    }

    async fn send_batch(
        &self,
        partition: u32,
        mut base_sequence: u64,
        batch: &[(Bytes, Bytes)],
    ) -> Result<Option<u64>, E> {
        let deadline = Instant::now() + self.opts.delivery_timeout;
        let mut maybe_written: Option<E> = None;
        let mut last: Option<E> = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(match (maybe_written, last) {
                    (Some(e), _) => E::Indeterminate(format!(
                        "not acknowledged within {} ms; the records may or may not be in the log ({e})",
                        self.opts.delivery_timeout.as_millis()
                    )),
                    (None, Some(e)) => e,
                    (None, None) => E::Unavailable("no attempt finished in time".into()),
                });
            }
            let t = left.min(self.opts.request_timeout);
            match self
                .client
                .produce_classified(&self.topic, partition, self.opts.acks, self.producer_id, base_sequence, batch, t)
                .await
            {
                Ok(r) => return Ok(r.base_offset),
                Err(Failure::OutOfOrder { expected, error }) => {
                    // Nothing of this batch was appended, and the leader
                    // continues from `expected` (records before it were
                    // lost, e.g. acks=1 across a leader change): renumber.
                    tracing::debug!(partition, base_sequence, expected, "producer: renumbering a batch");
                    if expected == base_sequence {
                        return Err(self.refused(error, maybe_written));
                    }
                    base_sequence = expected;
                    let mut q = self.queues[partition as usize].lock().expect("producer queue lock");
                    q.next_sequence = expected + batch.len() as u64;
                }
                Err(Failure::Fatal(e)) => return Err(self.refused(e, maybe_written)),
                Err(Failure::Retry(e)) | Err(Failure::NotLeader(e)) => {
                    last = Some(e);
                    tokio::time::sleep(Duration::from_millis(RETRY_PAUSE_MS).min(left)).await;
                }
                Err(Failure::Unknown(e)) => {
                    // The same sequence numbers make a retry safe.
                    last = Some(e.clone());
                    maybe_written = Some(e);
                    tokio::time::sleep(Duration::from_millis(RETRY_PAUSE_MS).min(left)).await;
                }
            }
        }
    }
}

/// Where a consumer without a committed offset starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartFrom {
    /// The log start.
    Earliest,
    /// The high watermark when the consumer starts.
    Latest,
}

#[derive(Clone, Debug)]
pub struct ConsumerOptions {
    /// Share partitions with other members of this group and commit offsets.
    pub group: Option<String>,
    pub start: StartFrom,
    /// Only these partitions (no group).
    pub partitions: Option<Vec<u32>>,
    pub session_timeout: Duration,
    pub heartbeat_interval: Duration,
    pub max_wait: Duration,
    pub max_bytes: u32,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        ConsumerOptions {
            group: None,
            start: StartFrom::Earliest,
            partitions: None,
            session_timeout: DEFAULT_SESSION_TIMEOUT,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            max_wait: DEFAULT_FETCH_WAIT,
            max_bytes: DEFAULT_FETCH_MAX_BYTES,
        }
    }
}

/// A consumed record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumedRecord {
    pub partition: u32,
    pub offset: u64,
    pub key: Bytes,
    pub value: Bytes,
    pub timestamp_ms: i64,
}

#[derive(Clone, Copy, Debug, Default)]
struct Position {
    next: u64,
    /// High watermark at the last fetch (None: not fetched yet).
    high_watermark: Option<u64>,
}

/// A consumer of one topic: all its partitions (or some), or a share of
/// them as a member of a consumer group, whose committed offsets it
/// resumes from and advances with [`Consumer::commit`].
pub struct Consumer {
    client: Arc<TopicClient>,
    topic: String,
    opts: ConsumerOptions,
    member_id: String,
    generation: u64,
    positions: BTreeMap<u32, Position>,
    last_heartbeat: Instant,
    partitions: u32,
}

impl Consumer {
    pub async fn new(client: Arc<TopicClient>, topic: &str, opts: ConsumerOptions) -> Result<Consumer, E> {
        let t = client.metadata(topic, true).await?;
        let partitions = t.partitions.len() as u32;
        if let Some(ps) = &opts.partitions {
            if let Some(bad) = ps.iter().find(|&&p| p >= partitions) {
                return Err(E::InvalidArgument(format!(
                    "topic {topic:?} has no partition {bad}: it has {partitions} (0-{})",
                    partitions.saturating_sub(1)
                )));
            }
        }
        let mut c = Consumer {
            client,
            topic: topic.to_string(),
            member_id: format!("member-{:016x}", rand::random::<u64>()),
            opts,
            generation: 0,
            positions: BTreeMap::new(),
            last_heartbeat: Instant::now(),
            partitions,
        };
        if c.opts.group.is_some() {
            c.heartbeat().await?;
        } else {
            let ps: Vec<u32> = c.opts.partitions.clone().unwrap_or_else(|| (0..partitions).collect());
            c.assign(ps).await?;
        }
        Ok(c)
    }

    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The partitions this consumer reads.
    pub fn assignment(&self) -> Vec<u32> {
        self.positions.keys().copied().collect()
    }

    /// The next offset to read, per assigned partition.
    pub fn positions(&self) -> BTreeMap<u32, u64> {
        self.positions.iter().map(|(&p, pos)| (p, pos.next)).collect()
    }

    /// Reads `partition` from `offset` next (it must be assigned).
    pub fn seek(&mut self, partition: u32, offset: u64) {
        if let Some(p) = self.positions.get_mut(&partition) {
            p.next = offset;
            p.high_watermark = None;
        }
    }

    /// Every assigned partition was fetched and read up to its high watermark.
    pub fn at_end(&self) -> bool {
        self.positions.values().all(|p| p.high_watermark.is_some_and(|hw| p.next >= hw))
    }

    async fn heartbeat(&mut self) -> Result<(), E> {
        let Some(group) = self.opts.group.clone() else { return Ok(()) };
        let g = self
            .client
            .group_heartbeat(&group, &self.member_id, std::slice::from_ref(&self.topic), self.opts.session_timeout)
            .await?;
        self.last_heartbeat = Instant::now();
        if g.generation != self.generation || self.positions.is_empty() {
            self.generation = g.generation;
            let mine = g.assignment.get(&self.topic).cloned().unwrap_or_default();
            tracing::debug!(group, generation = g.generation, partitions = ?mine, "consumer group assignment");
            self.assign(mine).await?;
        }
        Ok(())
    }

    /// Reads from `partitions` from now on: kept ones keep their position,
    /// new ones start at the group's committed offset or `opts.start`.
    async fn assign(&mut self, partitions: Vec<u32>) -> Result<(), E> {
        let committed = match &self.opts.group {
            Some(g) => self.client.committed_offsets(g, &self.topic).await?,
            None => BTreeMap::new(),
        };
        let mut next = BTreeMap::new();
        for p in partitions {
            let pos = match self.positions.get(&p) {
                Some(pos) => *pos,
                None => match committed.get(&p) {
                    Some(&o) => Position { next: o, high_watermark: None },
                    None => match self.opts.start {
                        StartFrom::Earliest => Position { next: 0, high_watermark: None },
                        StartFrom::Latest => {
                            let f = self.client.fetch(&self.topic, p, 0, 1, Duration::ZERO).await?;
                            Position { next: f.high_watermark, high_watermark: Some(f.high_watermark) }
                        }
                    },
                },
            };
            next.insert(p, pos);
        }
        self.positions = next;
        Ok(())
    }

    /// Fetches from every assigned partition (waiting up to `max_wait`
    /// for records); renews the group membership when due. Records of one
    /// partition come in offset order.
    pub async fn poll(&mut self) -> Result<Vec<ConsumedRecord>, E> {
        if self.opts.group.is_some() && self.last_heartbeat.elapsed() >= self.opts.heartbeat_interval {
            self.heartbeat().await?;
        }
        let fetches = self.positions.iter().map(|(&p, pos)| {
            let client = self.client.clone();
            let topic = self.topic.clone();
            let (offset, max_bytes, max_wait) = (pos.next, self.opts.max_bytes, self.opts.max_wait);
            async move { (p, client.fetch(&topic, p, offset, max_bytes, max_wait).await) }
        });
        let results = futures::future::join_all(fetches).await;
        let mut out = Vec::new();
        let mut first_error = None;
        for (p, r) in results {
            let Some(pos) = self.positions.get_mut(&p) else { continue };
            match r {
                Ok(f) => {
                    pos.next = f.next_offset;
                    pos.high_watermark = Some(f.high_watermark);
                    out.extend(f.records.into_iter().map(|r| ConsumedRecord {
                        partition: p,
                        offset: r.offset,
                        key: r.key,
                        value: r.value,
                        timestamp_ms: r.timestamp_ms,
                    }));
                }
                Err(E::OffsetOutOfRange { log_start, log_end, .. }) => {
                    // Past the log end (e.g. after an unclean election).
                    pos.next = match self.opts.start {
                        StartFrom::Earliest => log_start,
                        StartFrom::Latest => log_end,
                    };
                    pos.high_watermark = None;
                }
                Err(e @ (E::UnknownTopic(_) | E::InvalidArgument(_) | E::Config(_))) => return Err(e),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if out.is_empty() {
            if let Some(e) = first_error {
                return Err(e);
            }
        }
        Ok(out)
    }

    /// Commits the current positions (group consumers; a no-op otherwise).
    /// A stale generation rejoins the group and reports the error.
    pub async fn commit(&mut self) -> Result<(), E> {
        let Some(group) = self.opts.group.clone() else { return Ok(()) };
        if self.positions.is_empty() {
            return Ok(());
        }
        let offsets: Vec<(String, u32, u64)> =
            self.positions.iter().map(|(&p, pos)| (self.topic.clone(), p, pos.next)).collect();
        match self.client.commit_offsets(&group, &self.member_id, self.generation, &offsets).await {
            Err(e @ E::StaleGeneration(_)) => {
                self.heartbeat().await?;
                Err(e)
            }
            other => other,
        }
    }

    /// Leaves the group (its partitions go to the other members at once).
    pub async fn close(self) -> Result<(), E> {
        match &self.opts.group {
            Some(g) => self.client.group_leave(g, &self.member_id).await,
            None => Ok(()),
        }
    }

    pub fn partition_count(&self) -> u32 {
        self.partitions
    }
}
