//! capkv: a replicated key-value store whose consistency level is chosen per
//! request (eventual, quorum, linearizable), plus a replicated topic log.
//!
//! See `docs/architecture.md` for the map of modules.

pub mod clock;
pub mod level;
pub mod levels;
pub mod store;

/// Generated gRPC types for the client API (`proto/capkv.proto`).
pub mod proto {
    tonic::include_proto!("capkv.v1");

    /// Generated gRPC types for node-to-node traffic (`proto/peer.proto`).
    pub mod peer {
        tonic::include_proto!("capkv.peer.v1");
    }
}

pub use clock::{NodeId, Version};
pub use level::Level;
