//! capkv's wire contract, shared by the node (crate `capkv`) and the client
//! library (crate `capkv-client`): the generated gRPC code, the names of the
//! metadata headers both sides read, the consistency [`Level`], the cell
//! [`Version`], the channel helpers every connection uses, and the key →
//! partition hash that producers and the node must agree on.
//!
//! It holds no server code, so an application that only talks to capkv
//! compiles neither RocksDB nor Raft.

pub mod channel;
pub mod headers;
pub mod level;
pub mod limits;
pub mod partition;
pub mod version;

/// Generated gRPC types for the client API (`proto/capkv.proto`, `proto/topics.proto`).
pub mod proto {
    tonic::include_proto!("capkv.v1");

    /// Generated gRPC types for node-to-node traffic (`proto/peer.proto`, `proto/topic_peer.proto`).
    pub mod peer {
        tonic::include_proto!("capkv.peer.v1");
    }

    /// The replicated state machine's commands and stored values (`proto/rsm.proto`, `proto/rsm_topic.proto`).
    pub mod rsm {
        tonic::include_proto!("capkv.rsm.v1");
    }
}

pub use level::{Level, UnknownLevel};
pub use version::{NodeId, Version};
