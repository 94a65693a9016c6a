//! Checks of what peers send, before any handler acts on it.
//!
//! The peer services (`Peer`, `TopicPeer`) are served on the client port and
//! nothing authenticates the caller (issue 19, item 8). These checks are not
//! authentication — whoever reaches the port can still claim a member's id
//! — but they keep malformed or hostile input away from the code that
//! trusts it: the clock (stamps it must never overflow on), the writer
//! (cells), Raft (messages naming their sender) and the snapshot dir (file
//! names). A refusal is an INVALID_ARGUMENT status naming the problem: the
//! request fails, never the node.

use raft::eraftpb::{Message, MessageType};
use tonic::Status;

use super::config::MAX_KEY_BYTES;
use crate::clock::{Clock, NodeId};
use crate::proto::peer::Cell;

/// `from` must be another member of the cluster (`is_member`: the current
/// member set, which changes as members are added and removed): requests
/// from unknown nodes, or claiming to come from the receiver itself, are
/// refused.
pub fn check_peer(is_member: impl Fn(NodeId) -> bool, me: NodeId, from: NodeId) -> Result<(), Status> {
    if from == me {
        return Err(Status::invalid_argument(format!("from_node {from} is this node itself, not a peer")));
    }
    if !is_member(from) {
        return Err(Status::invalid_argument(format!("from_node {from} is not a member of this cluster")));
    }
    Ok(())
}

/// Cells sent for an LWW merge: keys as a client may write them, stamps
/// within the clock's bound (see [`Clock::check_peer_stamp`]).
pub fn check_cells(clock: &Clock, cells: &[Cell]) -> Result<(), Status> {
    for c in cells {
        if c.key.is_empty() || c.key.len() > MAX_KEY_BYTES {
            return Err(Status::invalid_argument(format!(
                "a cell key of {} bytes; keys are 1 to {MAX_KEY_BYTES} bytes",
                c.key.len()
            )));
        }
        clock
            .check_peer_stamp(c.hlc)
            .map_err(|e| Status::invalid_argument(format!("cell of key {:?}: {e}", String::from_utf8_lossy(&c.key))))?;
    }
    Ok(())
}

/// A stamp sent on its own (a ping): 0 means none.
pub fn check_stamp(clock: &Clock, hlc: u64) -> Result<(), Status> {
    clock.check_peer_stamp(hlc).map_err(|e| Status::invalid_argument(e.to_string()))
}

/// A Raft message on the `Raft` stream from `from` to `me`. Snapshot
/// messages never travel there (the transport sends them on the `Snapshot`
/// RPC, whose receiver names the file itself): one arriving there would
/// make this node install whatever file its data names.
pub fn check_raft_message(m: &Message, from: NodeId, me: NodeId) -> Result<(), Status> {
    check_addresses(m, from, me)?;
    if m.get_msg_type() == MessageType::MsgSnapshot {
        return Err(Status::invalid_argument(
            "a snapshot message on the Raft stream; snapshots go on the Snapshot RPC",
        ));
    }
    Ok(())
}

/// The header of a `Snapshot` stream: a snapshot message from `from` to `me`.
pub fn check_snapshot_header(m: &Message, from: NodeId, me: NodeId) -> Result<(), Status> {
    check_addresses(m, from, me)?;
    if m.get_msg_type() != MessageType::MsgSnapshot {
        return Err(Status::invalid_argument(format!(
            "a snapshot stream whose header is a {:?}, not a snapshot message",
            m.get_msg_type()
        )));
    }
    Ok(())
}

fn check_addresses(m: &Message, from: NodeId, me: NodeId) -> Result<(), Status> {
    if m.from != u64::from(from) || m.to != u64::from(me) {
        return Err(Status::invalid_argument(format!(
            "a Raft message from {} to {} on a stream from node {from} to node {me}",
            m.from, m.to
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::clock::{hlc_from_physical_ms, MAX_PEER_STAMP_AHEAD_MS};
    use bytes::Bytes;
    use tonic::Code;

    fn members() -> BTreeMap<NodeId, String> {
        (1..=3).map(|id| (id, format!("127.0.0.1:{}", 7000 + id))).collect()
    }

    fn cell(key: &[u8], hlc: u64) -> Cell {
        Cell {
            key: Bytes::copy_from_slice(key),
            value: Bytes::new(),
            tombstone: false,
            hlc,
            node_id: 2,
            origin: 1,
            rmw: 0,
            applied_at: 0,
        }
    }

    fn code(r: Result<(), Status>) -> Option<Code> {
        r.err().map(|s| s.code())
    }

    #[test]
    fn only_other_members_are_peers() {
        assert_eq!(code(check_peer(|id| members().contains_key(&id), 1, 2)), None);
        assert_eq!(code(check_peer(|id| members().contains_key(&id), 1, 1)), Some(Code::InvalidArgument));
        assert_eq!(code(check_peer(|id| members().contains_key(&id), 1, 99)), Some(Code::InvalidArgument));
        assert_eq!(code(check_peer(|id| members().contains_key(&id), 1, 0)), Some(Code::InvalidArgument));
    }

    #[test]
    fn cells_need_a_client_key_and_a_stamp_within_bounds() {
        let clock = Clock::new(1, 500);
        let now = hlc_from_physical_ms(clock.wall_ms());
        assert_eq!(code(check_cells(&clock, &[cell(b"k", now), cell(b"k2", 1)])), None);
        assert_eq!(code(check_cells(&clock, &[cell(b"k", now), cell(b"", now)])), Some(Code::InvalidArgument));
        assert_eq!(code(check_cells(&clock, &[cell(&[b'x'; MAX_KEY_BYTES + 1], now)])), Some(Code::InvalidArgument));
        assert_eq!(code(check_cells(&clock, &[cell(b"k", u64::MAX)])), Some(Code::InvalidArgument));
        let too_far = hlc_from_physical_ms(clock.wall_ms() + MAX_PEER_STAMP_AHEAD_MS + 60_000);
        assert_eq!(code(check_cells(&clock, &[cell(b"k", too_far)])), Some(Code::InvalidArgument));
    }

    fn message(t: MessageType, from: u64, to: u64) -> Message {
        let mut m = Message::default();
        m.set_msg_type(t);
        m.from = from;
        m.to = to;
        m
    }

    #[test]
    fn raft_messages_name_their_stream_and_are_never_snapshots() {
        assert_eq!(code(check_raft_message(&message(MessageType::MsgAppend, 2, 1), 2, 1)), None);
        assert_eq!(code(check_raft_message(&message(MessageType::MsgAppend, 3, 1), 2, 1)), Some(Code::InvalidArgument));
        assert_eq!(code(check_raft_message(&message(MessageType::MsgAppend, 2, 3), 2, 1)), Some(Code::InvalidArgument));
        assert_eq!(
            code(check_raft_message(&message(MessageType::MsgSnapshot, 2, 1), 2, 1)),
            Some(Code::InvalidArgument)
        );
        assert_eq!(code(check_snapshot_header(&message(MessageType::MsgSnapshot, 2, 1), 2, 1)), None);
        assert_eq!(
            code(check_snapshot_header(&message(MessageType::MsgAppend, 2, 1), 2, 1)),
            Some(Code::InvalidArgument)
        );
    }
}
