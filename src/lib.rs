//! capkv: a replicated key-value store whose consistency level is chosen per
//! request (eventual, quorum, linearizable), plus a replicated topic log.
//!
//! Map (see `docs/architecture.md`):
//! * [`store`]: one RocksDB per node, LWW cells, group-commit writer;
//! * [`clock`]: hybrid logical clock and versions;
//! * [`rsm`]: the replicated state machine over Raft (KV and topic metadata commands);
//! * [`levels`]: one module per consistency level;
//! * [`node`]: process wiring and gRPC services;
//! * [`rt`]: where blocking work runs (a pool, or in place when simulated);
//! * [`topic`]: the partitioned, replicated topic log (ISR replication);
//! * [`client`]: the gRPC client library;
//! * [`bench`]: the load generator behind `kv bench`;
//! * [`cli`]: the `kv` command line.

pub mod bench;
pub mod cli;
/// The client library is its own crate (`capkv-client`, no server code);
/// re-exported so paths stay `capkv::client::…`.
pub use capkv_client as client;
pub mod clock;
pub use capkv_proto::level;
pub mod levels;
pub mod metrics;
pub mod node;
pub mod rsm;
pub mod rt;
pub mod sim;
pub mod store;
pub mod tombstone_gc;
pub mod topic;
pub mod wire;

/// The wire contract (generated gRPC code) lives in `capkv-proto`, shared
/// with the client library; re-exported so paths stay `capkv::proto::…`.
pub use capkv_proto::proto;

pub use clock::{NodeId, Version};
pub use level::Level;
