//! [`TopicClient`]: metadata (create, describe, delete topics) and the
//! single-request produce / fetch / group calls, each routed to the
//! partition leader found in cached metadata.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tonic::Status;

use super::error::*;
use super::types::*;
use super::TopicClientError as E;
use super::*;
use crate::proto::topics_client::TopicsClient;
use crate::proto::{self, RequestHeader, TopicInfo};
use crate::{timed, MAX_ENDPOINTS, MAX_MESSAGE_BYTES};

pub struct TopicClient {
    endpoints: Vec<String>,
    /// Attaches the client's token (if any) to every call.
    bearer: crate::auth::Bearer,
    dialer: capkv_proto::channel::TcpDialer,
    conns: Mutex<HashMap<String, TopicsClient<crate::auth::Conn>>>,
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
        TopicClient::new_with_token(endpoints, None)
    }

    /// A client for `endpoints` that sends `token` (when given) as a bearer
    /// token with every call, for nodes that check tokens.
    pub fn new_with_token<S: AsRef<str>>(
        endpoints: &[S],
        token: Option<&str>,
    ) -> Result<TopicClient, TopicClientError> {
        let opts = crate::ConnectOptions { token: token.map(str::to_string), tls: None };
        TopicClient::connect(endpoints, &opts)
    }

    /// A client for `endpoints` with a token and/or TLS (`opts`).
    pub fn connect<S: AsRef<str>>(
        endpoints: &[S],
        opts: &crate::ConnectOptions,
    ) -> Result<TopicClient, TopicClientError> {
        let bearer = crate::auth::Bearer::new(opts.token.as_deref()).map_err(E::Config)?;
        if endpoints.is_empty() {
            return Err(E::Config("no endpoints given: pass --endpoints HOST:PORT,... or set KV_ENDPOINTS".into()));
        }
        if endpoints.len() > MAX_ENDPOINTS {
            return Err(E::Config(format!("{} endpoints given; at most {MAX_ENDPOINTS}", endpoints.len())));
        }
        let mut eps = Vec::new();
        for e in endpoints {
            let addr = e.as_ref().trim().trim_start_matches("http://").to_string();
            capkv_proto::channel::validate_host_port(&addr).map_err(|m| E::Config(format!("invalid endpoint: {m}")))?;
            eps.push(addr);
        }
        Ok(TopicClient {
            endpoints: eps,
            bearer,
            dialer: opts.dialer(),
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

    fn conn(&self, addr: &str) -> Result<TopicsClient<crate::auth::Conn>, E> {
        let mut conns = self.conns.lock().expect("conns lock");
        if let Some(c) = conns.get(addr) {
            return Ok(c.clone());
        }
        let ch = capkv_proto::channel::Dialer::channel(&self.dialer, addr).map_err(E::Config)?;
        let c = TopicsClient::with_interceptor(ch, self.bearer.clone())
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
        F: Fn(TopicsClient<crate::auth::Conn>, Duration) -> Fut,
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
                match capkv_proto::channel::call(attempt.as_millis() as u64 + 1, f(c, attempt)).await {
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

    /// Moves the replicas of `topic`/`partition` to `replicas` (node ids,
    /// preferred leader first; needs the admin role when nodes check
    /// tokens). Returns the topic as the reassignment started: the new
    /// replicas join and catch up, and the ones left out are removed once
    /// every target replica is in the ISR, leadership moving first if the
    /// leader is removed; [`Self::describe_topic`] shows the progress
    /// (`adding_replicas`, `removing_replicas`). Refused with
    /// [`TopicClientError::ReassignmentInProgress`] while a reassignment of
    /// the partition is under way, and with `InvalidArgument` for an
    /// unknown partition or node, a repeated node, or fewer replicas than
    /// `min.insync.replicas`.
    pub async fn reassign_partition(&self, topic: &str, partition: u32, replicas: &[u32]) -> Result<TopicInfo, E> {
        let header = self.header(self.metadata_timeout);
        let t = self
            .call_any("reassign the partition", |mut c, left| {
                let req = proto::ReassignPartitionRequest {
                    header: header.map(|h| RequestHeader { timeout_ms: left.as_millis() as u32, ..h }),
                    topic: topic.to_string(),
                    partition,
                    replicas: replicas.to_vec(),
                };
                async move { c.reassign_partition(timed(req, left)).await }
            })
            .await?;
        self.topics.write().expect("topics lock").insert(topic.to_string(), t.clone());
        Ok(t)
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
        F: Fn(TopicsClient<crate::auth::Conn>, Duration) -> Fut,
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
            match capkv_proto::channel::call(left.as_millis() as u64 + 1, f(c, left)).await {
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
    pub(super) async fn produce_classified(
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
