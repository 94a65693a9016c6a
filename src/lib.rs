//! capkv: a replicated key-value store whose consistency level is chosen per
//! request (eventual, quorum, linearizable), plus a replicated topic log.
//!
//! Map (see `docs/architecture.md`):
//! * [`store`]: one RocksDB per node, LWW cells, group-commit writer;
//! * [`clock`]: hybrid logical clock and versions;
//! * [`rsm`]: the replicated state machine over Raft (KV and topic metadata commands);
//! * [`levels`]: one module per consistency level;
//! * [`node`]: process wiring and gRPC services;
//! * [`topic`]: the partitioned, replicated topic log (ISR replication);
//! * [`client`]: the gRPC client library;
//! * [`bench`]: the load generator behind `kv bench`;
//! * [`cli`]: the `kv` command line.

pub mod bench;
pub mod cli;
pub mod client;
pub mod clock;
pub mod level;
pub mod levels;
pub mod metrics;
pub mod node;
pub mod rsm;
pub mod store;
pub mod topic;
pub mod wire;

/// Generated gRPC types for the client API (`proto/capkv.proto`).
pub mod proto {
    tonic::include_proto!("capkv.v1");

    /// Generated gRPC types for node-to-node traffic (`proto/peer.proto`).
    pub mod peer {
        tonic::include_proto!("capkv.peer.v1");
    }

    /// The linearizable state machine's commands and stored values (`proto/rsm.proto`).
    pub mod rsm {
        tonic::include_proto!("capkv.rsm.v1");
    }
}

pub use clock::{NodeId, Version};
pub use level::Level;
