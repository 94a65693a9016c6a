//! Names of the gRPC metadata headers that carry protocol information next
//! to a message. The node sets them and the client reads them, so both
//! sides take the names from here.

/// On an error: the request was not applied anywhere, so the client may
/// retry it on another node even if it is not idempotent.
pub const RETRY_SAFE_HEADER: &str = "capkv-retry";
/// On a linearizable reply: the address of the Raft leader the answering
/// node knows of. Clients send their next linearizable requests there,
/// which spares the hop through a follower.
pub const RAFT_LEADER_HEADER: &str = "capkv-raft-leader";
/// On a topic error: its machine-readable code (`unknown-topic`,
/// `not-leader`, ...; see `proto/topics.proto`).
pub const TOPIC_ERROR_HEADER: &str = "capkv-topic-error";
/// On a not-leader topic error: the node id of the partition leader the
/// answering node knows of.
pub const LEADER_HEADER: &str = "capkv-leader";
/// On an out-of-sequence produce: the sequence number the leader expected.
pub const EXPECTED_SEQUENCE_HEADER: &str = "capkv-expected-sequence";
/// On an out-of-range fetch: the partition's first retained offset.
pub const LOG_START_HEADER: &str = "capkv-log-start";
/// On an out-of-range fetch: the partition's log end offset.
pub const LOG_END_HEADER: &str = "capkv-log-end";
