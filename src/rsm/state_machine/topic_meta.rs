//! The topic metadata command family (DESIGN §6): topics, partition
//! assignment, leaders, ISR, epochs and consumer-group offsets. What
//! applying a [`TopicOp`] does is pure and deterministic: it reads and
//! writes through the applier's overlay ([`MetaKv`]), so its writes join
//! the batch like every other command's, at the entry's log time. The key
//! layout lives here too, under the `t` prefix of the `rsm` column family
//! (so Raft snapshots carry it); the topic layer (`topic/`) reads it and
//! proposes these commands, and this module never calls back into it.
//!
//! * Topics: `t n NAME` → [`TopicMeta`] (all partitions in one value, so
//!   no apply ever scans), `t d ID` → name, `t i` → next topic id,
//!   `t c` → number of topics.
//! * `t v` → metadata version, bumped by every change to a topic; nodes
//!   poll it to know when to reload.
//! * Groups: `t g NAME` → [`GroupMeta`]; committed offsets
//!   `t o LEN16 GROUP TOPIC_ID PARTITION` → offset (u64, big-endian).
//! * [`assign`]: the placements the state machine computes (replicas of a
//!   new topic's partitions, partitions of a group's members).
//! * [`reassign`]: moving a partition's replicas (start, and completion
//!   once every target replica is in the ISR).
//!
//! Partition changes are compare-and-set on (partition epoch, leader
//! epoch) — Kafka's AlterPartition — and a leader change bumps the leader
//! epoch, so a replica that acts only in the epoch it read can never act
//! as leader next to another one. A new leader must come from the ISR
//! unless the topic allows unclean election. Group members expire by *log
//! time* (the entry's HLC stamp), never by a local clock.

pub mod assign;
pub mod reassign;

use std::collections::BTreeMap;

use prost::Message;

use super::{Applier, ApplyError, RsmRead};
use crate::clock::hlc_physical_ms;
use crate::proto::rsm::{
    self, reply, topic_op, AlterPartition, CommitOffsets, CreateTopic, DeleteTopic, GroupHeartbeat, GroupLeave,
    GroupMember, GroupMeta, GroupReply, PartitionMeta, TopicAssignment, TopicErrorCode, TopicMeta, TopicOp, TopicReply,
};
use crate::store::StoreError;

pub const PREFIX: u8 = b't';
pub const KEY_VERSION: &[u8] = b"tv";
pub const KEY_NEXT_ID: &[u8] = b"ti";
pub const KEY_TOPIC_COUNT: &[u8] = b"tc";
pub const TOPIC_PREFIX: &[u8] = b"tn";
pub const TOPIC_ID_PREFIX: &[u8] = b"td";
pub const GROUP_PREFIX: &[u8] = b"tg";
pub const OFFSET_PREFIX: &[u8] = b"to";

/// Longest topic or group name, in bytes (Kafka's limit for topics).
pub const MAX_NAME_BYTES: usize = 249;
pub const MAX_PARTITIONS: u32 = 1024;
/// Topics per cluster at most (nodes reload them all on a change).
pub const MAX_TOPICS: usize = 10_000;
pub const MAX_GROUP_MEMBERS: usize = 1_000;
pub const MAX_SUBSCRIBED_TOPICS: usize = 100;
pub const MIN_SESSION_TIMEOUT_MS: u64 = 500;
pub const MAX_SESSION_TIMEOUT_MS: u64 = 300_000;
pub const DEFAULT_SESSION_TIMEOUT_MS: u64 = 10_000;

/// Read-modify-write access to the `rsm` family during one apply.
pub trait MetaKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>);
    fn delete(&mut self, key: Vec<u8>);
}

impl<R: RsmRead> Applier<'_, R> {
    pub(super) fn topic_meta(&mut self, batch: &rsm::Batch, op: &TopicOp) -> Result<reply::Result, ApplyError> {
        // Log time: the largest stamp applied so far (set by `apply`).
        let log_time = self.max_stamp.unwrap_or(batch.stamp);
        Ok(reply::Result::Topic(apply(self, log_time, op)?))
    }
}

/// Topic metadata reads and writes through the same overlay as every other
/// command of the batch.
impl<R: RsmRead> MetaKv for Applier<'_, R> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Applier::get(self, key)
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        Applier::put(self, key, value)
    }

    fn delete(&mut self, key: Vec<u8>) {
        Applier::delete(self, key)
    }
}

pub fn topic_key(name: &str) -> Vec<u8> {
    let mut k = TOPIC_PREFIX.to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

pub fn topic_id_key(id: u64) -> Vec<u8> {
    let mut k = TOPIC_ID_PREFIX.to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

pub fn group_key(group: &str) -> Vec<u8> {
    let mut k = GROUP_PREFIX.to_vec();
    k.extend_from_slice(group.as_bytes());
    k
}

pub fn offset_key(group: &str, topic_id: u64, partition: u32) -> Vec<u8> {
    let mut k = OFFSET_PREFIX.to_vec();
    k.extend_from_slice(&(group.len() as u16).to_be_bytes());
    k.extend_from_slice(group.as_bytes());
    k.extend_from_slice(&topic_id.to_be_bytes());
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

pub fn decode_u64(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.try_into().ok()?))
}

/// Checks a topic or group name: 1-249 bytes of `[A-Za-z0-9._-]`.
pub fn validate_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(format!("{what} name must be 1 to {MAX_NAME_BYTES} bytes, got {}", name.len()));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(format!("{what} name {name:?} contains {c:?}: use letters, digits, '.', '_' and '-'"));
    }
    Ok(())
}

fn reply(code: TopicErrorCode, message: impl Into<String>) -> TopicReply {
    TopicReply { code: code as i32, message: message.into(), topic: None, group: None }
}

fn ok_topic(t: TopicMeta) -> TopicReply {
    TopicReply { code: TopicErrorCode::TopicOk as i32, message: String::new(), topic: Some(t), group: None }
}

fn decode<M: Message + Default>(b: &[u8], what: &'static str) -> Result<M, StoreError> {
    M::decode(b).map_err(|e| StoreError::Malformed { what, source: e.into() })
}

pub fn load_topic(kv: &impl MetaKv, name: &str) -> Result<Option<TopicMeta>, StoreError> {
    kv.get(&topic_key(name))?.map(|b| decode(&b, "topic")).transpose()
}

fn load_group(kv: &impl MetaKv, group: &str) -> Result<GroupMeta, StoreError> {
    Ok(match kv.get(&group_key(group))? {
        Some(b) => decode(&b, "group")?,
        None => GroupMeta { name: group.to_string(), generation: 0, members: Vec::new() },
    })
}

fn bump_version(kv: &mut impl MetaKv) -> Result<(), StoreError> {
    let v = kv.get(KEY_VERSION)?.and_then(|b| decode_u64(&b)).unwrap_or(0);
    kv.put(KEY_VERSION.to_vec(), (v + 1).to_be_bytes().to_vec());
    Ok(())
}

fn save_topic(kv: &mut impl MetaKv, t: &TopicMeta) -> Result<(), StoreError> {
    kv.put(topic_key(&t.name), t.encode_to_vec());
    bump_version(kv)
}

/// Applies one topic command at log time `log_time` (an HLC stamp).
pub fn apply(kv: &mut impl MetaKv, log_time: u64, op: &TopicOp) -> Result<TopicReply, StoreError> {
    match &op.op {
        Some(topic_op::Op::Create(c)) => create(kv, log_time, c),
        Some(topic_op::Op::Delete(d)) => delete(kv, d),
        Some(topic_op::Op::Alter(a)) => alter(kv, a),
        Some(topic_op::Op::Heartbeat(h)) => heartbeat(kv, log_time, h),
        Some(topic_op::Op::Leave(l)) => leave(kv, log_time, l),
        Some(topic_op::Op::Commit(c)) => commit(kv, log_time, c),
        Some(topic_op::Op::Reassign(r)) => reassign::start(kv, r),
        Some(topic_op::Op::CompleteReassignment(c)) => reassign::complete(kv, c),
        None => Ok(reply(TopicErrorCode::Invalid, "empty topic command")),
    }
}

fn create(kv: &mut impl MetaKv, log_time: u64, c: &CreateTopic) -> Result<TopicReply, StoreError> {
    if let Err(m) = validate_name("topic", &c.name) {
        return Ok(reply(TopicErrorCode::Invalid, m));
    }
    let cfg = c.config.unwrap_or_default();
    let mut nodes = c.nodes.clone();
    nodes.sort_unstable();
    nodes.dedup();
    let rf = cfg.replication_factor as usize;
    if c.partitions == 0 || c.partitions > MAX_PARTITIONS {
        return Ok(reply(
            TopicErrorCode::Invalid,
            format!("partitions must be 1 to {MAX_PARTITIONS}, got {}", c.partitions),
        ));
    }
    if nodes.is_empty() || nodes.contains(&0) {
        return Ok(reply(TopicErrorCode::Invalid, "the node list is empty or names node 0"));
    }
    if rf == 0 || rf > nodes.len() {
        return Ok(reply(
            TopicErrorCode::Invalid,
            format!("replication factor {rf} is impossible: the cluster has {} nodes", nodes.len()),
        ));
    }
    if cfg.min_insync_replicas == 0 || cfg.min_insync_replicas as usize > rf {
        return Ok(reply(
            TopicErrorCode::Invalid,
            format!("min.insync.replicas {} must be 1 to the replication factor {rf}", cfg.min_insync_replicas),
        ));
    }
    if let Some(existing) = load_topic(kv, &c.name)? {
        let mut r = reply(TopicErrorCode::TopicExists, format!("topic {:?} already exists", c.name));
        r.topic = Some(existing);
        return Ok(r);
    }
    let count = kv.get(KEY_TOPIC_COUNT)?.and_then(|b| decode_u64(&b)).unwrap_or(0);
    if count >= MAX_TOPICS as u64 {
        return Ok(reply(TopicErrorCode::Invalid, format!("the cluster has {count} topics, the most it supports")));
    }
    kv.put(KEY_TOPIC_COUNT.to_vec(), (count + 1).to_be_bytes().to_vec());
    let id = kv.get(KEY_NEXT_ID)?.and_then(|b| decode_u64(&b)).unwrap_or(1);
    kv.put(KEY_NEXT_ID.to_vec(), (id + 1).to_be_bytes().to_vec());
    let partitions = assign::replica_assignment(id, c.partitions, rf, &nodes)
        .into_iter()
        .enumerate()
        .map(|(p, replicas)| PartitionMeta {
            id: p as u32,
            leader: replicas[0],
            isr: replicas.clone(),
            replicas,
            leader_epoch: 1,
            partition_epoch: 1,
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
        })
        .collect();
    let t = TopicMeta { name: c.name.clone(), id, config: Some(cfg), partitions, created_stamp: log_time };
    kv.put(topic_id_key(id), c.name.as_bytes().to_vec());
    save_topic(kv, &t)?;
    Ok(ok_topic(t))
}

fn delete(kv: &mut impl MetaKv, d: &DeleteTopic) -> Result<TopicReply, StoreError> {
    let Some(t) = load_topic(kv, &d.name)? else {
        return Ok(reply(TopicErrorCode::UnknownTopic, format!("topic {:?} does not exist", d.name)));
    };
    kv.delete(topic_key(&t.name));
    kv.delete(topic_id_key(t.id));
    let count = kv.get(KEY_TOPIC_COUNT)?.and_then(|b| decode_u64(&b)).unwrap_or(1);
    kv.put(KEY_TOPIC_COUNT.to_vec(), count.saturating_sub(1).to_be_bytes().to_vec());
    bump_version(kv)?;
    Ok(ok_topic(t))
}

fn alter(kv: &mut impl MetaKv, a: &AlterPartition) -> Result<TopicReply, StoreError> {
    let Some(name) = kv.get(&topic_id_key(a.topic_id))? else {
        return Ok(reply(TopicErrorCode::UnknownTopic, format!("topic id {} does not exist", a.topic_id)));
    };
    let name = String::from_utf8_lossy(&name).into_owned();
    let Some(mut t) = load_topic(kv, &name)? else {
        return Ok(reply(TopicErrorCode::UnknownTopic, format!("topic {name:?} does not exist")));
    };
    let unclean = t.config.as_ref().is_some_and(|c| c.unclean_leader_election);
    let Some(p) = t.partitions.get_mut(a.partition as usize) else {
        return Ok(reply(TopicErrorCode::Invalid, format!("topic {name:?} has no partition {}", a.partition)));
    };
    if p.partition_epoch != a.expected_partition_epoch || p.leader_epoch != a.expected_leader_epoch {
        let mut r = reply(
            TopicErrorCode::StaleEpoch,
            format!(
                "partition {name}/{} is at partition epoch {} and leader epoch {}, not {} and {}",
                a.partition, p.partition_epoch, p.leader_epoch, a.expected_partition_epoch, a.expected_leader_epoch
            ),
        );
        r.topic = Some(t);
        return Ok(r);
    }
    let mut isr = a.isr.clone();
    isr.sort_unstable();
    isr.dedup();
    let valid = !isr.is_empty()
        && isr.len() == a.isr.len()
        && isr.iter().all(|r| p.replicas.contains(r))
        && (a.leader == 0 || (p.replicas.contains(&a.leader) && isr.contains(&a.leader)));
    if !valid {
        return Ok(reply(
            TopicErrorCode::Invalid,
            format!("leader {} with ISR {:?} is not valid for replicas {:?}", a.leader, a.isr, p.replicas),
        ));
    }
    let leader_changes = a.leader != p.leader;
    if leader_changes && a.leader != 0 && !p.isr.contains(&a.leader) && !unclean {
        return Ok(reply(
            TopicErrorCode::Invalid,
            format!(
                "node {} is not in the ISR {:?} and topic {name:?} does not allow unclean leader election",
                a.leader, p.isr
            ),
        ));
    }
    if leader_changes {
        p.leader = a.leader;
        p.leader_epoch += 1;
    }
    p.isr = a.isr.clone();
    p.partition_epoch += 1;
    save_topic(kv, &t)?;
    Ok(ok_topic(t))
}

fn session_ms(requested: u64) -> u64 {
    if requested == 0 {
        DEFAULT_SESSION_TIMEOUT_MS
    } else {
        requested.clamp(MIN_SESSION_TIMEOUT_MS, MAX_SESSION_TIMEOUT_MS)
    }
}

/// Drops members whose session ran out at log time `log_time`; bumps the
/// generation if any did. Returns whether the group changed.
fn expire(g: &mut GroupMeta, log_time: u64) -> bool {
    let now_ms = hlc_physical_ms(log_time);
    let before = g.members.len();
    g.members.retain(|m| hlc_physical_ms(m.last_seen_stamp) + m.session_timeout_ms as i64 >= now_ms);
    if g.members.len() != before {
        g.generation += 1;
        true
    } else {
        false
    }
}

fn save_group(kv: &mut impl MetaKv, g: &GroupMeta) {
    if g.members.is_empty() && g.generation == 0 {
        kv.delete(group_key(&g.name));
    } else {
        kv.put(group_key(&g.name), g.encode_to_vec());
    }
}

/// Each member's partitions in the group's current state.
fn assignment(kv: &impl MetaKv, g: &GroupMeta) -> Result<BTreeMap<String, BTreeMap<String, Vec<u32>>>, StoreError> {
    let mut counts = BTreeMap::new();
    for m in &g.members {
        for t in &m.topics {
            if counts.contains_key(t) {
                continue;
            }
            if let Some(meta) = load_topic(kv, t)? {
                counts.insert(t.clone(), meta.partitions.len() as u32);
            }
        }
    }
    let members: Vec<(String, Vec<String>)> = g.members.iter().map(|m| (m.id.clone(), m.topics.clone())).collect();
    Ok(assign::group_assignment(&members, &counts))
}

fn heartbeat(kv: &mut impl MetaKv, log_time: u64, h: &GroupHeartbeat) -> Result<TopicReply, StoreError> {
    if let Err(m) = validate_name("group", &h.group) {
        return Ok(reply(TopicErrorCode::Invalid, m));
    }
    if h.member_id.is_empty() || h.member_id.len() > MAX_NAME_BYTES {
        return Ok(reply(TopicErrorCode::Invalid, "member id must be 1 to 249 bytes"));
    }
    if h.topics.is_empty() || h.topics.len() > MAX_SUBSCRIBED_TOPICS {
        return Ok(reply(TopicErrorCode::Invalid, format!("subscribe to 1 to {MAX_SUBSCRIBED_TOPICS} topics")));
    }
    for t in &h.topics {
        if load_topic(kv, t)?.is_none() {
            return Ok(reply(TopicErrorCode::UnknownTopic, format!("topic {t:?} does not exist")));
        }
    }
    let mut g = load_group(kv, &h.group)?;
    expire(&mut g, log_time);
    let mut topics = h.topics.clone();
    topics.sort();
    topics.dedup();
    let session_timeout_ms = session_ms(h.session_timeout_ms);
    match g.members.iter_mut().find(|m| m.id == h.member_id) {
        Some(m) => {
            m.last_seen_stamp = log_time;
            m.session_timeout_ms = session_timeout_ms;
            if m.topics != topics {
                m.topics = topics;
                g.generation += 1;
            }
        }
        None => {
            if g.members.len() >= MAX_GROUP_MEMBERS {
                return Ok(reply(
                    TopicErrorCode::Invalid,
                    format!("group {:?} has {MAX_GROUP_MEMBERS} members", g.name),
                ));
            }
            g.members.push(GroupMember {
                id: h.member_id.clone(),
                topics,
                last_seen_stamp: log_time,
                session_timeout_ms,
            });
            g.members.sort_by(|a, b| a.id.cmp(&b.id));
            g.generation += 1;
        }
    }
    let mut mine = assignment(kv, &g)?.remove(&h.member_id).unwrap_or_default();
    save_group(kv, &g);
    let group = GroupReply {
        generation: g.generation,
        members: g.members.iter().map(|m| m.id.clone()).collect(),
        assignment: std::mem::take(&mut mine)
            .into_iter()
            .map(|(topic, partitions)| TopicAssignment { topic, partitions })
            .collect(),
    };
    Ok(TopicReply { code: TopicErrorCode::TopicOk as i32, message: String::new(), topic: None, group: Some(group) })
}

fn leave(kv: &mut impl MetaKv, log_time: u64, l: &GroupLeave) -> Result<TopicReply, StoreError> {
    let mut g = load_group(kv, &l.group)?;
    let mut changed = expire(&mut g, log_time);
    let before = g.members.len();
    g.members.retain(|m| m.id != l.member_id);
    if g.members.len() != before {
        g.generation += 1;
        changed = true;
    }
    if changed {
        save_group(kv, &g);
    }
    Ok(TopicReply {
        code: TopicErrorCode::TopicOk as i32,
        message: String::new(),
        topic: None,
        group: Some(GroupReply {
            generation: g.generation,
            members: g.members.iter().map(|m| m.id.clone()).collect(),
            assignment: vec![],
        }),
    })
}

fn commit(kv: &mut impl MetaKv, log_time: u64, c: &CommitOffsets) -> Result<TopicReply, StoreError> {
    if let Err(m) = validate_name("group", &c.group) {
        return Ok(reply(TopicErrorCode::Invalid, m));
    }
    let mut g = load_group(kv, &c.group)?;
    if expire(&mut g, log_time) {
        save_group(kv, &g);
    }
    let owned = if c.member_id.is_empty() {
        if !g.members.is_empty() {
            return Ok(reply(
                TopicErrorCode::StaleGeneration,
                format!("group {:?} has active members; commit as a member of its current generation", c.group),
            ));
        }
        None
    } else {
        if c.generation != g.generation || !g.members.iter().any(|m| m.id == c.member_id) {
            return Ok(reply(
                TopicErrorCode::StaleGeneration,
                format!(
                    "member {:?} is not in generation {} of group {:?} (current generation {}): rejoin the group",
                    c.member_id, c.generation, c.group, g.generation
                ),
            ));
        }
        Some(assignment(kv, &g)?.remove(&c.member_id).unwrap_or_default())
    };
    let mut writes = Vec::with_capacity(c.offsets.len());
    for o in &c.offsets {
        let Some(t) = load_topic(kv, &o.topic)? else {
            return Ok(reply(TopicErrorCode::UnknownTopic, format!("topic {:?} does not exist", o.topic)));
        };
        if o.partition as usize >= t.partitions.len() {
            return Ok(reply(
                TopicErrorCode::Invalid,
                format!("topic {:?} has no partition {} (it has {})", o.topic, o.partition, t.partitions.len()),
            ));
        }
        if let Some(owned) = &owned {
            if !owned.get(&o.topic).is_some_and(|ps| ps.contains(&o.partition)) {
                return Ok(reply(
                    TopicErrorCode::StaleGeneration,
                    format!(
                        "partition {}/{} is not assigned to member {:?}: rejoin the group",
                        o.topic, o.partition, c.member_id
                    ),
                ));
            }
        }
        writes.push((offset_key(&c.group, t.id, o.partition), o.offset));
    }
    for (k, v) in writes {
        kv.put(k, v.to_be_bytes().to_vec());
    }
    Ok(reply(TopicErrorCode::TopicOk, ""))
}

#[cfg(test)]
mod tests;
