//! Cluster membership in the replicated state machine: who the members are
//! and where they are reached.
//!
//! Why it exists: Raft's own configuration (`ConfState`) knows member ids
//! only. Every node, including one that joins later or catches up by
//! snapshot, must also know each member's client and peer addresses, and
//! they must agree. So every Raft configuration change carries the member's
//! record in its context ([`MemberChange`]), and applying the change writes
//! that record here (key `m/member/` + id). The records travel in
//! snapshots with the rest of the `rsm` family.
//!
//! What it promises:
//! * Applying a change is pure and deterministic: the writes depend on the
//!   change and its context only ([`change_ops`]).
//! * A removed member keeps a record with `removed = true`: its id is never
//!   taken again, so a node that returns with stale data can only join under
//!   a new id (see [`check_new_id`]).
//! * Members listed by the start-up configuration (`--cluster`) need no
//!   record; a record, when present, overrides them ([`merge_into`]).

use std::collections::BTreeMap;

use prost::Message;
use raft::eraftpb::{ConfChangeType, ConfChangeV2};

use super::{ApplyError, RsmRead};
use crate::clock::NodeId;
use crate::proto::rsm::{MemberChange, MemberRecord};
use crate::store::{Cf, StoreError, WriteOp};

pub const MEMBER_PREFIX: &[u8] = b"m/member/";

/// Records read at most (every member ever added, removed ones included).
pub const MAX_MEMBER_RECORDS: usize = 4096;

pub fn member_key(id: NodeId) -> Vec<u8> {
    let mut k = MEMBER_PREFIX.to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// Every member record, by id.
pub fn read_all(view: &impl RsmRead) -> Result<BTreeMap<NodeId, MemberRecord>, ApplyError> {
    let mut out = BTreeMap::new();
    for (k, v) in view.scan(MEMBER_PREFIX, MEMBER_PREFIX, MAX_MEMBER_RECORDS)? {
        let rec =
            MemberRecord::decode(v.as_slice()).map_err(|e| ApplyError::Corrupt(format!("member record {k:?}: {e}")))?;
        out.insert(rec.id, rec);
    }
    Ok(out)
}

/// The peer addresses of the current members: the start-up configuration
/// `configured` with the records applied over it (a record replaces an
/// address, a removal drops the member).
pub fn merge_into(
    configured: &BTreeMap<NodeId, String>,
    records: &BTreeMap<NodeId, MemberRecord>,
) -> BTreeMap<NodeId, String> {
    let mut out = configured.clone();
    for (&id, r) in records {
        if r.removed {
            out.remove(&id);
        } else {
            out.insert(id, r.peer_address.clone());
        }
    }
    out
}

/// Why a new member cannot take `id`.
pub fn check_new_id(id: NodeId, records: &BTreeMap<NodeId, MemberRecord>) -> Result<(), &'static str> {
    if id == 0 {
        return Err("node id 0 is reserved");
    }
    match records.get(&id) {
        Some(r) if r.removed => Err("that id belonged to a removed member; a node that rejoins takes a new id"),
        _ => Ok(()),
    }
}

/// What applying the configuration change `cc` with context `ctx` writes to
/// the `rsm` family: the member's record for an addition, a removal marker
/// for a removal. A change without a context (not proposed by capkv) writes
/// nothing.
pub fn change_ops(cc: &ConfChangeV2, ctx: Option<&MemberChange>) -> Vec<WriteOp> {
    let Some(member) = ctx.and_then(|c| c.member.as_ref()) else {
        return Vec::new();
    };
    let mut ops = Vec::new();
    for ch in &cc.changes {
        if ch.node_id != member.id as u64 {
            continue;
        }
        let rec = match ch.get_change_type() {
            ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                MemberRecord { removed: false, ..member.clone() }
            }
            ConfChangeType::RemoveNode => MemberRecord { removed: true, ..member.clone() },
        };
        ops.push(WriteOp::Put { cf: Cf::Rsm, key: member_key(rec.id), value: rec.encode_to_vec() });
    }
    ops
}

/// The context of a change, if it has one capkv can read.
pub fn decode_context(context: &[u8]) -> Result<Option<MemberChange>, StoreError> {
    if context.is_empty() {
        return Ok(None);
    }
    MemberChange::decode(context)
        .map(Some)
        .map_err(|e| StoreError::Malformed { what: "member change context", source: e.into() })
}

#[cfg(test)]
mod tests {
    use raft::eraftpb::ConfChangeSingle;

    use super::*;
    use crate::rsm::state_machine::MemRsm;

    fn rec(id: NodeId) -> MemberRecord {
        MemberRecord {
            id,
            client_address: format!("127.0.0.1:{}", 7000 + id),
            peer_address: format!("127.0.0.1:{}", 8000 + id),
            removed: false,
        }
    }

    fn cc(kind: ConfChangeType, id: NodeId) -> ConfChangeV2 {
        let mut single = ConfChangeSingle::default();
        single.set_change_type(kind);
        single.node_id = id as u64;
        let mut cc = ConfChangeV2::default();
        cc.set_changes(vec![single].into());
        cc
    }

    fn apply(mem: &mut MemRsm, ops: Vec<WriteOp>) {
        for op in ops {
            match op {
                WriteOp::Put { cf: Cf::Rsm, key, value } => {
                    mem.0.insert(key, value);
                }
                other => panic!("unexpected op {other:?}"),
            }
        }
    }

    #[test]
    fn additions_write_records_and_removals_keep_the_id_taken() {
        let mut mem = MemRsm::default();
        let ctx = MemberChange { change_id: 7, member: Some(rec(4)) };
        apply(&mut mem, change_ops(&cc(ConfChangeType::AddLearnerNode, 4), Some(&ctx)));
        apply(&mut mem, change_ops(&cc(ConfChangeType::AddNode, 4), Some(&ctx)));
        let records = read_all(&mem).unwrap();
        assert_eq!(records.get(&4), Some(&rec(4)));
        assert!(check_new_id(4, &records).is_ok(), "a promotion re-adds the same member");

        let configured: BTreeMap<NodeId, String> = (1..=3).map(|i| (i, format!("127.0.0.1:{}", 8000 + i))).collect();
        let merged = merge_into(&configured, &records);
        assert_eq!(merged.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3, 4]);

        let ctx = MemberChange { change_id: 9, member: Some(rec(1)) };
        apply(&mut mem, change_ops(&cc(ConfChangeType::RemoveNode, 1), Some(&ctx)));
        let records = read_all(&mem).unwrap();
        assert!(records[&1].removed);
        assert!(check_new_id(1, &records).is_err(), "a removed id is never reused");
        assert_eq!(merge_into(&configured, &records).keys().copied().collect::<Vec<_>>(), vec![2, 3, 4]);
    }

    #[test]
    fn changes_without_context_write_nothing() {
        assert!(change_ops(&cc(ConfChangeType::AddNode, 4), None).is_empty());
        let other = MemberChange { change_id: 1, member: Some(rec(5)) };
        assert!(change_ops(&cc(ConfChangeType::AddNode, 4), Some(&other)).is_empty(), "context about another node");
        assert_eq!(decode_context(&[]).unwrap(), None);
        assert!(decode_context(&[0xff, 0xff, 0xff]).is_err());
    }
}
