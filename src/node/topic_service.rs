//! The client-facing `Topics` gRPC service: validation, then the topic
//! layer (`crate::topic`). Errors follow `proto/topics.proto`: a status
//! with one sentence, plus `capkv-topic-error` naming the condition, and
//! `capkv-retry: safe` when certainly nothing was written.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

use super::config::MAX_KEY_BYTES;
use super::service::{level_status, retry_safe, DEADLINE_MARGIN_MS, MAX_REQUEST_TIMEOUT_MS};
use super::NodeState;
use crate::proto::rsm::{self, topic_op, TopicMeta};
use crate::proto::topics_server::Topics as TopicsApi;
use crate::proto::*;
use crate::rsm::state_machine::topic_meta as meta;
use crate::rsm::Caller;
use crate::topic::{self, Offsets, Refusal, TopicError};

/// Largest Topics request or reply, in bytes.
pub const MAX_TOPIC_REQUEST_BYTES: usize = 64 * 1024 * 1024;
/// Records in one produce request at most.
pub const MAX_PRODUCE_RECORDS: usize = 100_000;
/// Key + value bytes in one produce request at most.
pub const MAX_PRODUCE_BYTES: usize = 32 * 1024 * 1024;
pub const DEFAULT_FETCH_MAX_BYTES: usize = 1024 * 1024;
pub const MAX_FETCH_MAX_BYTES: usize = 16 * 1024 * 1024;

pub use capkv_proto::headers::{
    EXPECTED_SEQUENCE_HEADER, LEADER_HEADER, LOG_END_HEADER, LOG_START_HEADER, TOPIC_ERROR_HEADER,
};

pub struct TopicService {
    node: Arc<NodeState>,
}

fn tag(mut s: Status, code: &'static str) -> Status {
    s.metadata_mut().insert(TOPIC_ERROR_HEADER, MetadataValue::from_static(code));
    s
}

fn with_number(mut s: Status, header: &'static str, n: u64) -> Status {
    s.metadata_mut().insert(header, n.to_string().parse().expect("digits are ascii"));
    s
}

/// The gRPC status for a topic error (see `proto/topics.proto`): the
/// error's sentence, a code and tag per kind, and the numbers a client acts
/// on in headers.
pub fn topic_status(e: TopicError) -> Status {
    let message = e.to_string();
    match e {
        TopicError::UnknownTopic { .. } | TopicError::Refused { refusal: Refusal::UnknownTopic, .. } => {
            tag(Status::not_found(message), "unknown-topic")
        }
        TopicError::Refused { refusal: Refusal::TopicExists, .. } => {
            tag(Status::already_exists(message), "topic-exists")
        }
        TopicError::Invalid(_) | TopicError::Refused { refusal: Refusal::Invalid, .. } => {
            tag(Status::invalid_argument(message), "invalid")
        }
        TopicError::NotLeader { leader, .. } => {
            with_number(tag(retry_safe(Status::unavailable(message)), "not-leader"), LEADER_HEADER, leader as u64)
        }
        TopicError::NotEnoughReplicas { .. } => tag(Status::failed_precondition(message), "not-enough-replicas"),
        TopicError::NotEnoughReplicasAfterAppend { .. } => {
            tag(Status::unavailable(message), "not-enough-replicas-after-append")
        }
        TopicError::OutOfOrderSequence { expected, .. } => with_number(
            tag(Status::failed_precondition(message), "out-of-order-sequence"),
            EXPECTED_SEQUENCE_HEADER,
            expected,
        ),
        TopicError::Refused { refusal: Refusal::StaleGeneration, .. } => {
            tag(Status::failed_precondition(message), "stale-generation")
        }
        TopicError::Refused { refusal: Refusal::ReassignmentInProgress, .. } => {
            tag(Status::failed_precondition(message), "reassignment-in-progress")
        }
        TopicError::OffsetOutOfRange { log_start, log_end, .. } => with_number(
            with_number(tag(Status::out_of_range(message), "offset-out-of-range"), LOG_START_HEADER, log_start),
            LOG_END_HEADER,
            log_end,
        ),
        TopicError::Indeterminate(_) => tag(Status::deadline_exceeded(message), "indeterminate"),
        // A lost epoch compare-and-set: nothing changed, retry.
        TopicError::Unavailable(_) | TopicError::Refused { refusal: Refusal::StaleEpoch, .. } => {
            tag(retry_safe(Status::unavailable(message)), "unavailable")
        }
        TopicError::Level(e) => level_status(e),
        TopicError::AppendFailed { .. } | TopicError::Store(_) => Status::internal(message),
    }
}

fn settings_of(c: &rsm::TopicConfig, partitions: u32) -> TopicSettings {
    TopicSettings {
        partitions,
        replication_factor: c.replication_factor,
        min_insync_replicas: c.min_insync_replicas,
        unclean_leader_election: c.unclean_leader_election,
        retention_ms: c.retention_ms,
        retention_bytes: c.retention_bytes,
        replica_lag_time_max_ms: c.replica_lag_time_max_ms,
    }
}

impl TopicService {
    pub fn new(node: Arc<NodeState>) -> Self {
        TopicService { node }
    }

    /// The deadline a request gets (0: the node's default), answered a
    /// little early so refusals arrive as refusals (as in `service.rs`).
    fn timeout(&self, ms: u32) -> Duration {
        let ms = match ms {
            0 => self.node.cfg.request_timeout_ms,
            t => (t as u64).min(MAX_REQUEST_TIMEOUT_MS),
        };
        Duration::from_millis(ms - (ms / 10).min(DEADLINE_MARGIN_MS))
    }

    fn header(&self, h: Option<&RequestHeader>) -> (Caller, Duration) {
        match h {
            Some(h) => (
                Caller { client_id: h.client_id, request_id: h.request_id, ack_below: h.ack_below },
                self.timeout(h.timeout_ms),
            ),
            None => (Caller::default(), self.timeout(0)),
        }
    }

    fn info(&self, t: &TopicMeta, offsets: Option<&[Option<Offsets>]>) -> TopicInfo {
        Self::info_with(&self.node.topics.members(), t, offsets)
    }

    /// `info` with the members' client addresses already read.
    fn info_with(members: &BTreeMap<u32, String>, t: &TopicMeta, offsets: Option<&[Option<Offsets>]>) -> TopicInfo {
        TopicInfo {
            name: t.name.clone(),
            id: t.id,
            settings: Some(settings_of(&t.config.unwrap_or_default(), t.partitions.len() as u32)),
            partitions: t
                .partitions
                .iter()
                .map(|p| {
                    let o = offsets.and_then(|o| o.get(p.id as usize).cloned().flatten());
                    PartitionInfo {
                        id: p.id,
                        leader: p.leader,
                        leader_address: members.get(&p.leader).cloned().unwrap_or_default(),
                        replicas: p.replicas.clone(),
                        isr: p.isr.clone(),
                        leader_epoch: p.leader_epoch,
                        partition_epoch: p.partition_epoch,
                        high_watermark: o.as_ref().map_or(0, |o| o.high_watermark),
                        log_end_offset: o.as_ref().map_or(0, |o| o.log_end_offset),
                        log_start_offset: o.as_ref().map_or(0, |o| o.log_start_offset),
                        offsets_known: o.is_some(),
                        adding_replicas: p.adding_replicas.clone(),
                        removing_replicas: p.removing_replicas.clone(),
                    }
                })
                .collect(),
        }
    }

    fn check_topic_name(name: &str) -> Result<(), Status> {
        meta::validate_name("topic", name).map_err(|m| tag(Status::invalid_argument(m), "invalid"))
    }
}

fn acks_of(a: i32) -> Result<Acks, Status> {
    match Acks::try_from(a) {
        Ok(Acks::Unspecified) | Err(_) => {
            Err(Status::invalid_argument(format!("acks {a} is not valid: expected NONE (1), LEADER (2) or ALL (3)")))
        }
        Ok(a) => Ok(a),
    }
}

#[tonic::async_trait]
impl TopicsApi for TopicService {
    async fn create_topic(&self, req: Request<CreateTopicRequest>) -> Result<Response<TopicInfo>, Status> {
        let req = req.into_inner();
        let (caller, timeout) = self.header(req.header.as_ref());
        Self::check_topic_name(&req.name)?;
        let s = req.settings.unwrap_or_default();
        let config = topic::topic_config(
            s.partitions,
            s.replication_factor,
            s.min_insync_replicas,
            s.unclean_leader_election,
            s.retention_ms,
            s.retention_bytes,
            s.replica_lag_time_max_ms,
        )
        .map_err(topic_status)?;
        // Replicas go on the current members (joined nodes included).
        let nodes: Vec<u32> = self.node.topics.members().into_keys().collect();
        if config.replication_factor as usize > nodes.len() {
            return Err(tag(
                Status::invalid_argument(format!(
                    "--replication-factor {} exceeds the {} members of the cluster",
                    config.replication_factor,
                    nodes.len()
                )),
                "invalid",
            ));
        }
        let op = topic_op::Op::Create(rsm::CreateTopic {
            name: req.name.clone(),
            partitions: s.partitions,
            config: Some(config),
            nodes,
        });
        let r = self.node.topics.propose(caller, op, timeout).await.map_err(topic_status)?;
        let t = r.topic.ok_or_else(|| Status::internal("create reply without the topic"))?;
        Ok(Response::new(self.info(&t, None)))
    }

    async fn delete_topic(&self, req: Request<DeleteTopicRequest>) -> Result<Response<DeleteTopicResponse>, Status> {
        let req = req.into_inner();
        let (caller, timeout) = self.header(req.header.as_ref());
        Self::check_topic_name(&req.name)?;
        let op = topic_op::Op::Delete(rsm::DeleteTopic { name: req.name });
        self.node.topics.propose(caller, op, timeout).await.map_err(topic_status)?;
        Ok(Response::new(DeleteTopicResponse {}))
    }

    async fn reassign_partition(&self, req: Request<ReassignPartitionRequest>) -> Result<Response<TopicInfo>, Status> {
        let req = req.into_inner();
        let (caller, timeout) = self.header(req.header.as_ref());
        Self::check_topic_name(&req.topic)?;
        let op = topic_op::Op::Reassign(rsm::ReassignPartition {
            topic: req.topic,
            partition: req.partition,
            replicas: req.replicas,
            // Targets must be current members (refused otherwise).
            nodes: self.node.topics.members().into_keys().collect(),
        });
        let r = self.node.topics.propose(caller, op, timeout).await.map_err(topic_status)?;
        let t = r.topic.ok_or_else(|| Status::internal("reassign reply without the topic"))?;
        Ok(Response::new(self.info(&t, None)))
    }

    async fn metadata(&self, req: Request<MetadataRequest>) -> Result<Response<MetadataResponse>, Status> {
        let req = req.into_inner();
        let timeout = self.timeout(req.timeout_ms);
        let topics = self.node.topics.metadata(&req.topics, req.linearizable, timeout).await.map_err(topic_status)?;
        let members = self.node.topics.members();
        Ok(Response::new(MetadataResponse {
            topics: topics.iter().map(|t| Self::info_with(&members, t, None)).collect(),
            nodes: members.into_iter().map(|(id, address)| Member { id, address }).collect(),
        }))
    }

    async fn describe_topic(&self, req: Request<DescribeTopicRequest>) -> Result<Response<TopicInfo>, Status> {
        let req = req.into_inner();
        let timeout = self.timeout(req.timeout_ms);
        Self::check_topic_name(&req.name)?;
        let t = self
            .node
            .topics
            .metadata(std::slice::from_ref(&req.name), true, timeout)
            .await
            .map_err(topic_status)?
            .pop()
            .ok_or_else(|| Status::internal("no topic in the reply"))?;
        let offsets = self.node.topics.offsets(&t).await;
        Ok(Response::new(self.info(&t, Some(&offsets))))
    }

    async fn produce(&self, req: Request<ProduceRequest>) -> Result<Response<ProduceResponse>, Status> {
        let req = req.into_inner();
        let timeout = self.timeout(req.timeout_ms);
        let acks = acks_of(req.acks)?;
        if req.records.is_empty() || req.records.len() > MAX_PRODUCE_RECORDS {
            return Err(Status::invalid_argument(format!(
                "a produce request carries 1 to {MAX_PRODUCE_RECORDS} records, got {}",
                req.records.len()
            )));
        }
        super::service::room(&self.node)?;
        let max_value = self.node.cfg.max_value_bytes;
        let mut bytes = 0usize;
        for r in &req.records {
            if r.key.len() > MAX_KEY_BYTES {
                return Err(Status::invalid_argument(format!(
                    "a key is {} bytes; the limit is {MAX_KEY_BYTES}",
                    r.key.len()
                )));
            }
            if r.value.len() > max_value {
                return Err(Status::invalid_argument(format!(
                    "a value is {} bytes; this node's limit is {max_value} (kv serve --max-value-bytes)",
                    r.value.len()
                )));
            }
            bytes += r.key.len() + r.value.len();
        }
        if bytes > MAX_PRODUCE_BYTES {
            return Err(Status::invalid_argument(format!(
                "a produce request carries {bytes} bytes; at most {MAX_PRODUCE_BYTES}"
            )));
        }
        let m = &self.node.metrics;
        crate::metrics::inc(&m.topic_produce_requests);
        let records = req.records.len() as u64;
        let p = self
            .node
            .topics
            .leader_partition(&req.topic, req.partition, timeout)
            .await
            .inspect_err(|_| crate::metrics::inc(&m.topic_produce_errors))
            .map_err(topic_status)?;
        let a = p
            .produce(acks, req.producer_id, req.base_sequence, req.records, timeout)
            .await
            .inspect_err(|_| crate::metrics::inc(&m.topic_produce_errors))
            .map_err(topic_status)?;
        crate::metrics::add(&m.topic_produce_records, records);
        Ok(Response::new(ProduceResponse {
            partition: req.partition,
            base_offset: a.base_offset.unwrap_or(0),
            duplicate: a.duplicate,
            offset_unknown: a.base_offset.is_none(),
        }))
    }

    async fn fetch(&self, req: Request<FetchRequest>) -> Result<Response<FetchResponse>, Status> {
        let req = req.into_inner();
        let timeout = self.timeout(0);
        let m = &self.node.metrics;
        crate::metrics::inc(&m.topic_fetch_requests);
        let p = self
            .node
            .topics
            .leader_partition(&req.topic, req.partition, timeout)
            .await
            .inspect_err(|_| crate::metrics::inc(&m.topic_fetch_errors))
            .map_err(topic_status)?;
        let max_bytes = match req.max_bytes {
            0 => DEFAULT_FETCH_MAX_BYTES,
            b => (b as usize).min(MAX_FETCH_MAX_BYTES),
        };
        let f = p
            .consumer_fetch(req.offset, max_bytes, Duration::from_millis(req.max_wait_ms as u64))
            .await
            .inspect_err(|_| crate::metrics::inc(&m.topic_fetch_errors))
            .map_err(topic_status)?;
        crate::metrics::add(&m.topic_fetch_records, f.records.len() as u64);
        Ok(Response::new(FetchResponse {
            records: f.records,
            high_watermark: f.high_watermark,
            log_start_offset: f.log_start_offset,
            log_end_offset: f.log_end_offset,
            next_offset: f.next_offset,
        }))
    }

    async fn group_heartbeat(
        &self,
        req: Request<GroupHeartbeatRequest>,
    ) -> Result<Response<GroupHeartbeatResponse>, Status> {
        let req = req.into_inner();
        let (caller, timeout) = self.header(req.header.as_ref());
        let op = topic_op::Op::Heartbeat(rsm::GroupHeartbeat {
            group: req.group,
            member_id: req.member_id,
            topics: req.topics,
            session_timeout_ms: req.session_timeout_ms,
        });
        let r = self.node.topics.propose(caller, op, timeout).await.map_err(topic_status)?;
        let g = r.group.unwrap_or_default();
        Ok(Response::new(GroupHeartbeatResponse {
            generation: g.generation,
            members: g.members,
            assignment: g
                .assignment
                .into_iter()
                .map(|a| TopicPartitions { topic: a.topic, partitions: a.partitions })
                .collect(),
        }))
    }

    async fn group_leave(&self, req: Request<GroupLeaveRequest>) -> Result<Response<GroupLeaveResponse>, Status> {
        let req = req.into_inner();
        let (caller, timeout) = self.header(req.header.as_ref());
        let op = topic_op::Op::Leave(rsm::GroupLeave { group: req.group, member_id: req.member_id });
        self.node.topics.propose(caller, op, timeout).await.map_err(topic_status)?;
        Ok(Response::new(GroupLeaveResponse {}))
    }

    async fn commit_offsets(
        &self,
        req: Request<CommitOffsetsRequest>,
    ) -> Result<Response<CommitOffsetsResponse>, Status> {
        let req = req.into_inner();
        let (caller, timeout) = self.header(req.header.as_ref());
        let op = topic_op::Op::Commit(rsm::CommitOffsets {
            group: req.group,
            member_id: req.member_id,
            generation: req.generation,
            offsets: req
                .offsets
                .into_iter()
                .map(|o| rsm::OffsetEntry { topic: o.topic, partition: o.partition, offset: o.offset })
                .collect(),
        });
        self.node.topics.propose(caller, op, timeout).await.map_err(topic_status)?;
        Ok(Response::new(CommitOffsetsResponse {}))
    }

    async fn fetch_offsets(&self, req: Request<FetchOffsetsRequest>) -> Result<Response<FetchOffsetsResponse>, Status> {
        let req = req.into_inner();
        let timeout = self.timeout(req.timeout_ms);
        meta::validate_name("group", &req.group).map_err(Status::invalid_argument)?;
        let offsets = self.node.topics.committed(&req.group, &req.topic, timeout).await.map_err(topic_status)?;
        Ok(Response::new(FetchOffsetsResponse {
            offsets: offsets
                .into_iter()
                .map(|(partition, offset)| CommittedOffset { topic: req.topic.clone(), partition, offset })
                .collect(),
        }))
    }
}
