//! The plain data of the topic API: topic settings, acks, and what
//! produce, fetch and group calls return.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::proto::{self};

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

    pub(super) fn to_proto(self) -> proto::Acks {
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
