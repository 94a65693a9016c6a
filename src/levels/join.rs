//! The quorum level as clients see it: ABD get/set/del (`levels::quorum`)
//! plus compare-and-set through consensus (`levels::linear`'s CAS, which
//! reads a majority, orders the swap in Raft and writes the result back to
//! a majority). A read/write register alone cannot compare-and-set; with
//! the CAS ordered by Raft and its version a carstamp (`Version::rmw`),
//! quorum get/set/del and CAS at any level stay linearizable together
//! (docs/consistency.md, "One keyspace"). So quorum CAS needs a Raft leader
//! and a majority, and fails with `UNAVAILABLE` without them, like every
//! quorum operation without a majority.

use std::sync::Arc;

use bytes::Bytes;

use super::linear::Linear;
use super::quorum::Quorum;
use super::{Call, CasReply, KvLevel, LevelError};
use crate::clock::Version;
use crate::level::Level;
use crate::metrics::{inc, Metrics};
use crate::store::Cell;

pub struct QuorumLevel {
    abd: Arc<Quorum>,
    linear: Arc<Linear>,
    metrics: Arc<Metrics>,
}

impl QuorumLevel {
    pub fn new(abd: Arc<Quorum>, linear: Arc<Linear>, metrics: Arc<Metrics>) -> QuorumLevel {
        QuorumLevel { abd, linear, metrics }
    }

    /// The ABD replica set this node coordinates with.
    pub fn replica_config(&self) -> crate::levels::quorum::ReplicaConfig {
        self.abd.replica_config()
    }
}

impl KvLevel for QuorumLevel {
    const LEVEL: Level = Level::Quorum;

    async fn get(&self, key: Bytes, call: Call) -> Result<Option<Cell>, LevelError> {
        self.abd.get(key, call.timeout).await
    }

    async fn write(&self, key: Bytes, value: Option<Bytes>, call: Call) -> Result<Version, LevelError> {
        self.abd.write(key, value, call.timeout).await
    }

    async fn cas(
        &self,
        key: Bytes,
        expected: Option<Bytes>,
        new_value: Bytes,
        call: Call,
    ) -> Result<CasReply, LevelError> {
        inc(&self.metrics.quorum_cas);
        self.linear.cas(call.caller, key, expected, new_value, call.timeout).await
    }
}
