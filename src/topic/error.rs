//! Why a topic request failed, as facts: which partition, which node leads
//! it, which offsets or sequence numbers were expected. The node turns a
//! [`TopicError`] into a gRPC status (`node::topic_service::topic_status`,
//! see `proto/topics.proto`) whose message is its `Display` sentence; the
//! variant picks the status code and the `capkv-topic-error` tag.

use std::sync::Arc;

use crate::clock::NodeId;
use crate::levels::LevelError;
use crate::store::StoreError;

/// A partition as errors and logs name it: `topic/partition`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionName {
    pub topic: String,
    pub partition: u32,
}

impl PartitionName {
    pub fn new(topic: impl Into<String>, partition: u32) -> Self {
        PartitionName { topic: topic.into(), partition }
    }
}

impl std::fmt::Display for PartitionName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// Why a topic request failed.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("topic {topic:?} does not exist")]
    UnknownTopic { topic: String },
    /// A request no topic can satisfy; certainly nothing was done.
    #[error(transparent)]
    Invalid(#[from] InvalidRequest),
    /// Certainly nothing was written: `node` does not lead the partition;
    /// `leader` does (0: none now).
    #[error("{}", not_leader_message(.node, .partition, .leader, .reason))]
    NotLeader { node: NodeId, partition: PartitionName, leader: NodeId, reason: NotLeaderReason },
    /// acks=all refused before writing: the ISR is below min.insync.replicas.
    #[error(
        "not enough in-sync replicas for {partition}: {in_sync} of the ISR {isr:?} in sync, min.insync.replicas is \
         {min_insync}; nothing was written (acks=1 would be accepted)"
    )]
    NotEnoughReplicas { partition: PartitionName, in_sync: usize, isr: Vec<NodeId>, min_insync: usize },
    /// Appended on the leader, but the ISR fell below min.insync.replicas
    /// before the records committed: they may or may not survive.
    #[error(
        "the records of {partition} committed with the ISR {isr:?} below min.insync.replicas {min_insync}; they are \
         on fewer replicas than required"
    )]
    NotEnoughReplicasAfterAppend { partition: PartitionName, isr: Vec<NodeId>, min_insync: u32 },
    /// An idempotent producer's batch does not start at the next sequence
    /// number; nothing was written.
    #[error(
        "producer {producer_id:x} sent sequence {sequence} to {partition} but {expected} is expected next; nothing \
         was written"
    )]
    OutOfOrderSequence { partition: PartitionName, producer_id: u64, sequence: u64, expected: u64 },
    #[error("offset {offset} is beyond the log end {log_end} of {partition}")]
    OffsetOutOfRange { partition: PartitionName, offset: u64, log_start: u64, log_end: u64 },
    /// The outcome is unknown.
    #[error(transparent)]
    Indeterminate(IndeterminateReason),
    /// Certainly not done; retry later or elsewhere.
    #[error(transparent)]
    Unavailable(UnavailableReason),
    /// The Raft state machine refused a metadata command. `message` is its
    /// sentence, part of the replicated reply (and of the client's session,
    /// so a retried request reads the same words); only the kind travels
    /// as a code.
    #[error("{message}")]
    Refused { refusal: Refusal, message: String },
    /// The write of the batch holding the records failed; every request
    /// of the batch gets the same store error.
    #[error("storage I/O error: append failed: {source}")]
    AppendFailed { source: Arc<StoreError> },
    #[error(transparent)]
    Level(#[from] LevelError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where the refusal of a request to a partition this node does not lead
/// was decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotLeaderReason {
    /// Routing: this node hosts no leading replica of the partition.
    NoReplicaHere,
    /// This node's replica is not the leader.
    NotLeading,
    /// This node's replica was elected and is taking over in `leader_epoch`.
    TakingOver { leader_epoch: u64 },
}

fn not_leader_message(node: &NodeId, partition: &PartitionName, leader: &NodeId, reason: &NotLeaderReason) -> String {
    match (reason, *leader) {
        (NotLeaderReason::TakingOver { leader_epoch }, _) => {
            format!("node {node} is taking over leadership of {partition} (epoch {leader_epoch}); retry")
        }
        (NotLeaderReason::NoReplicaHere, 0) => format!("node {node} does not lead {partition}: it has no leader now"),
        (NotLeaderReason::NotLeading, 0) => format!("{partition} has no leader now; retry later"),
        (_, leader) => format!("node {node} does not lead {partition}; node {leader} does"),
    }
}

/// A request that no topic can satisfy.
#[derive(Debug, thiserror::Error)]
pub enum InvalidRequest {
    #[error("topic {topic:?} has no partition {partition}: it has {partitions} (0-{})", .partitions.saturating_sub(1))]
    NoSuchPartition { topic: String, partition: u32, partitions: usize },
    #[error("--partitions must be 1 to {max}, got {partitions}")]
    Partitions { partitions: u32, max: u32 },
    #[error("--replication-factor must be at least 1")]
    ReplicationFactorZero,
    #[error(
        "--min-insync {min_insync} exceeds the replication factor {replication_factor}: acks=all could never succeed"
    )]
    MinInsyncAboveReplicationFactor { min_insync: u32, replication_factor: u32 },
}

/// Why the outcome of a produce request is unknown: its records may or may
/// not be (or stay) in the log.
#[derive(Debug, thiserror::Error)]
pub enum IndeterminateReason {
    #[error("the append was abandoned (the replica stopped); the records may or may not be written")]
    AppendAbandoned,
    #[error("the append did not finish within {waited_ms} ms; the records may or may not be written")]
    AppendNotFinished { waited_ms: u64 },
    #[error("the partition replica stopped before the records committed")]
    StoppedBeforeCommit,
    #[error(
        "the records were appended to {partition} but did not reach every in-sync replica within {waited_ms} ms; \
         they may still commit"
    )]
    NotCommittedWithin { partition: PartitionName, waited_ms: u64 },
    /// The records were appended in `leader_epoch`, which this node no
    /// longer leads (the partition is at `current_epoch`).
    #[error(
        "this node no longer leads {partition} in leader epoch {leader_epoch}, where the records were appended (the \
         partition is at epoch {current_epoch}); they may or may not survive"
    )]
    NoLongerLeads { partition: PartitionName, leader_epoch: u64, current_epoch: u64 },
    #[error("leadership moved before the records committed; they may or may not survive")]
    LeadershipMoved,
    #[error("the partition replica stopped")]
    ReplicaStopped,
}

/// Why a request was certainly not done.
#[derive(Debug, thiserror::Error)]
pub enum UnavailableReason {
    /// A produce request met a stopped replica before it was queued.
    #[error("the partition replica stopped; nothing was written")]
    StoppedBeforeAppend,
    #[error("the append queue of {partition} stayed full for {waited_ms} ms; nothing was written")]
    AppendQueueFull { partition: PartitionName, waited_ms: u64 },
    /// A consumer fetch met a stopped replica.
    #[error("the partition replica stopped")]
    ReplicaStopped,
}

/// What the state machine refused a metadata command for (its reply code,
/// `TopicErrorCode` in `proto/rsm_topic.proto`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    UnknownTopic,
    TopicExists,
    Invalid,
    /// The compare-and-set lost: the partition changed since it was read.
    StaleEpoch,
    /// The member is not in the group's current generation.
    StaleGeneration,
    /// The partition is being reassigned already.
    ReassignmentInProgress,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_built_from_the_facts() {
        // Issue 20: the variants hold facts; the sentences are the ones
        // clients saw before (tests/topics.rs and docs/topics.md quote
        // parts of them).
        let p = PartitionName::new("t", 0);
        let e = TopicError::NotEnoughReplicas { partition: p.clone(), in_sync: 1, isr: vec![1, 2, 3], min_insync: 2 };
        assert_eq!(
            e.to_string(),
            "not enough in-sync replicas for t/0: 1 of the ISR [1, 2, 3] in sync, min.insync.replicas is 2; nothing \
             was written (acks=1 would be accepted)"
        );
        let e = TopicError::OutOfOrderSequence { partition: p.clone(), producer_id: 255, sequence: 5, expected: 3 };
        assert_eq!(e.to_string(), "producer ff sent sequence 5 to t/0 but 3 is expected next; nothing was written");
        let not_leader =
            |leader, reason| TopicError::NotLeader { node: 1, partition: p.clone(), leader, reason }.to_string();
        assert_eq!(not_leader(2, NotLeaderReason::NoReplicaHere), "node 1 does not lead t/0; node 2 does");
        assert_eq!(not_leader(0, NotLeaderReason::NoReplicaHere), "node 1 does not lead t/0: it has no leader now");
        assert_eq!(not_leader(2, NotLeaderReason::NotLeading), "node 1 does not lead t/0; node 2 does");
        assert_eq!(not_leader(0, NotLeaderReason::NotLeading), "t/0 has no leader now; retry later");
        assert_eq!(
            not_leader(1, NotLeaderReason::TakingOver { leader_epoch: 4 }),
            "node 1 is taking over leadership of t/0 (epoch 4); retry"
        );
        let e = TopicError::from(InvalidRequest::NoSuchPartition { topic: "t".into(), partition: 5, partitions: 3 });
        assert_eq!(e.to_string(), "topic \"t\" has no partition 5: it has 3 (0-2)");
        assert_eq!(TopicError::UnknownTopic { topic: "nope".into() }.to_string(), "topic \"nope\" does not exist");
    }
}
