//! The three consistency levels, each behind one narrow interface
//! ([`KvLevel`]); the node routes a request to the module for its level in
//! one place (`node::router`). All three read and write the same cells (one
//! keyspace). The only link between levels is the *join* of the quorum and
//! linearizable orders: `linear` uses the quorum shell for a majority read
//! before each proposal and a write-back after it, and [`join`] gives the
//! quorum level its CAS through `linear` (docs/consistency.md).
//!
//! Adding a level: a module here implementing [`KvLevel`], a variant of
//! [`crate::Level`] (in `capkv-proto`, with its wire number in
//! `proto/capkv.proto`), and one arm in each match of `node::router` — the
//! compiler lists every place that must change (the cell format's origin
//! bits assert at compile time that the level still fits).

pub mod eventual;
pub mod join;
#[cfg(test)]
mod join_sim;
pub mod linear;
pub mod quorum;

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;

use crate::clock::Version;
use crate::level::Level;
use crate::store::{Cell, StoreError};

pub use linear::Caller;

/// What a level is told about a request besides its operation.
#[derive(Clone, Copy, Debug)]
pub struct Call {
    /// How long the level may work on it (the client's deadline, less a margin).
    pub timeout: Duration,
    /// The client session ids (exactly-once retries where the level has them).
    pub caller: Caller,
}

/// The narrow interface of a consistency level: one key's get, write
/// (`None` deletes) and compare-and-set. Tombstones come back from `get` as
/// such (callers treat them as absent). A level that cannot do an operation
/// answers [`LevelError::Refused`] with the reason.
pub trait KvLevel: Send + Sync {
    const LEVEL: Level;

    fn get(&self, key: Bytes, call: Call) -> impl Future<Output = Result<Option<Cell>, LevelError>> + Send;

    fn write(
        &self,
        key: Bytes,
        value: Option<Bytes>,
        call: Call,
    ) -> impl Future<Output = Result<Version, LevelError>> + Send;

    fn cas(
        &self,
        key: Bytes,
        expected: Option<Bytes>,
        new_value: Bytes,
        call: Call,
    ) -> impl Future<Output = Result<CasReply, LevelError>> + Send;
}

/// Why a level could not serve a request. The node turns these into gRPC
/// statuses with the same sentence.
#[derive(Debug, thiserror::Error)]
pub enum LevelError {
    /// A quorum operation could not start (its replica set cannot form a
    /// majority): nothing was sent, retrying elsewhere is safe.
    #[error("quorum operation not started: {0}")]
    NotStarted(#[from] quorum::core::ReplicaSetError),
    /// A linearizable get found a cell only the state machine had and could
    /// not write it back to a majority before answering: nothing was
    /// returned, retrying is safe.
    #[error("linearizable get: {source}")]
    GetNotWrittenBack { source: Box<LevelError> },
    /// A quorum phase without a majority: who answered, how many were
    /// needed, and whether a write may have taken effect.
    #[error(transparent)]
    Quorum(#[from] quorum::QuorumError),
    /// The Raft group could not take or answer the request (no leader,
    /// overloaded, a write whose outcome is unknown, ...).
    #[error(transparent)]
    Raft(#[from] crate::rsm::RaftError),
    /// A command applied through Raft (its effect is in the state machine)
    /// whose result did not reach a majority's cells before the deadline:
    /// the client cannot know whether later quorum reads see it yet.
    #[error("applied through Raft at version {version}, but not yet written back to a majority of replicas: {source}")]
    NotWrittenBack { version: Version, source: Box<LevelError> },
    /// The state machine answered a command with a reply of another kind
    /// (`None`: no result at all); the command's fate is unknown.
    #[error("unexpected reply to a {command} from the state machine: {reply}")]
    UnexpectedReply { command: &'static str, reply: String },
    /// The state machine refused the command; `reason` is its own sentence,
    /// replicated with the log (and kept with the client's session).
    #[error("{reason}")]
    Refused { reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The reply to a compare-and-set at any level.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CasReply {
    pub swapped: bool,
    /// The cell after the op: the new one when swapped, otherwise the one that
    /// failed the comparison (`None` = absent).
    pub current: Option<crate::store::Cell>,
}
