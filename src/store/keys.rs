//! Key layouts of the column families that are not keyed by user key alone.

use crate::clock::NodeId;

/// Column families of a node's RocksDB (DESIGN §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cf {
    /// User key → LWW cell.
    Cells,
    /// Raft state machine: linearizable values and client sessions.
    Rsm,
    RaftLog,
    RaftState,
    TopicData,
    TopicMeta,
    /// (peer id, user key) → cell the peer has not acknowledged yet.
    Hints,
    /// Node-local metadata (stamp reservation, cluster id, ...).
    Meta,
}

impl Cf {
    pub const ALL: [Cf; 8] =
        [Cf::Cells, Cf::Rsm, Cf::RaftLog, Cf::RaftState, Cf::TopicData, Cf::TopicMeta, Cf::Hints, Cf::Meta];

    pub fn name(self) -> &'static str {
        match self {
            Cf::Cells => "cells",
            Cf::Rsm => "rsm",
            Cf::RaftLog => "raft_log",
            Cf::RaftState => "raft_state",
            Cf::TopicData => "topic_data",
            Cf::TopicMeta => "topic_meta",
            Cf::Hints => "hints",
            Cf::Meta => "meta",
        }
    }
}

/// `hints` key: peer id (big-endian, so one peer's hints are contiguous) + user key.
pub fn hint_key(peer: NodeId, user_key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + user_key.len());
    k.extend_from_slice(&peer.to_be_bytes());
    k.extend_from_slice(user_key);
    k
}

pub fn hint_prefix(peer: NodeId) -> [u8; 4] {
    peer.to_be_bytes()
}

/// Splits a `hints` key into (peer, user key).
pub fn split_hint_key(k: &[u8]) -> Option<(NodeId, &[u8])> {
    if k.len() < 4 {
        return None;
    }
    let peer = NodeId::from_be_bytes(k[..4].try_into().ok()?);
    Some((peer, &k[4..]))
}

/// `meta` key of the persisted HLC stamp reservation.
pub const META_HLC_RESERVED: &[u8] = b"hlc_reserved";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hint_keys_round_trip_and_group_by_peer() {
        let k = hint_key(7, b"abc");
        assert_eq!(split_hint_key(&k), Some((7, &b"abc"[..])));
        assert!(k.starts_with(&hint_prefix(7)));
        assert!(hint_key(1, b"zzz") < hint_key(2, b""));
    }
}
