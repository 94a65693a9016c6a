//! Running whole nodes inside one process, for tests: an in-memory network
//! with per-link faults ([`net`]) and a cluster of real nodes on it
//! ([`cluster`]). Nodes get their wall clock and their connections from a
//! [`crate::node::NodeEnv`], so nothing here is global and any number of
//! nodes share a process.

pub mod cluster;
pub mod net;
