//! The three consistency levels, each behind one narrow interface; the node
//! routes a request to the module for its level. Nothing in one level knows
//! about another.

pub mod eventual;
pub mod linear;
pub mod quorum;

use crate::store::StoreError;

/// Why a level could not serve a request. The node turns these into gRPC
/// statuses with the same sentence.
#[derive(Debug, thiserror::Error)]
pub enum LevelError {
    /// Definitely not applied; retrying elsewhere is safe (no quorum, no leader).
    #[error("{0}")]
    Unavailable(String),
    /// A write whose fate is unknown (it may or may not have taken effect).
    #[error("{0}")]
    Indeterminate(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unimplemented(String),
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
