//! Why the replicated state machine could not take or answer a request,
//! with what the node knew (who it was, which term, how long it waited),
//! and whether the request may have taken effect. `levels::LevelError::Raft`
//! carries it to the service, which picks the gRPC status from
//! [`RaftError::is_indeterminate`].

/// A refusal or failure of the Raft group, as seen by one node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RaftError {
    /// No leader is known: nothing was proposed or read.
    #[error(
        "no Raft leader known to node {node} (term {term}): an election is in progress or a majority of the nodes is \
         unreachable"
    )]
    NoLeader { node: u32, term: u64 },
    /// raft-rs dropped the proposal (e.g. a leader transfer): not applied.
    #[error("proposal dropped by Raft ({reason}); no Raft leader known to node {node} (term {term})")]
    Dropped { reason: String, node: u32, term: u64 },
    /// A bound on this node's pending work was reached: not applied.
    #[error("too many linearizable {what} pending on this node (at most {max}); retry later")]
    TooManyPending { what: &'static str, max: usize },
    /// The driver's queue is full or the driver is gone: nothing was proposed.
    #[error("the linearizable level is overloaded or stopped; nothing was proposed")]
    Overloaded,
    /// The driver stopped while a read waited: nothing was read.
    #[error("the Raft driver stopped")]
    Stopped,
    /// The read index was not confirmed in time: nothing was read.
    #[error("no read index within {waited_ms} ms: the Raft leader is not reachable from this node")]
    NoReadIndex { waited_ms: u64 },
    /// Leadership changed before a read index was confirmed: nothing was read.
    #[error("Raft leadership changed before the read index was confirmed; retry")]
    ReadLeadershipChanged,
    /// The client's session is full: not applied (the state machine's words).
    #[error("{0}")]
    SessionBusy(String),
    /// Leadership changed while the write was in flight: it may or may not apply.
    #[error(
        "Raft leadership changed (term {term}) while the write was in flight; it may or may not be applied: retry \
         with the same request id"
    )]
    WriteLeadershipChanged { term: u64 },
    /// The write was not applied in time: it may still be.
    #[error(
        "the write was not applied within {waited_ms} ms; it may still be (retry with the same request id to find out)"
    )]
    NotAppliedWithin { waited_ms: u64 },
    /// The driver stopped after the write was handed to it: it may still apply.
    #[error("the Raft driver stopped before the write was applied")]
    StoppedBeforeApplied,
}

impl RaftError {
    /// True when the request may have taken effect (a write handed to Raft
    /// whose outcome this node does not know); false when it certainly did
    /// not, so retrying anywhere is safe.
    pub fn is_indeterminate(&self) -> bool {
        match self {
            RaftError::WriteLeadershipChanged { .. }
            | RaftError::NotAppliedWithin { .. }
            | RaftError::StoppedBeforeApplied => true,
            RaftError::NoLeader { .. }
            | RaftError::Dropped { .. }
            | RaftError::TooManyPending { .. }
            | RaftError::Overloaded
            | RaftError::Stopped
            | RaftError::NoReadIndex { .. }
            | RaftError::ReadLeadershipChanged
            | RaftError::SessionBusy(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_writes_handed_to_raft_are_indeterminate() {
        assert!(RaftError::NotAppliedWithin { waited_ms: 5 }.is_indeterminate());
        assert!(RaftError::WriteLeadershipChanged { term: 3 }.is_indeterminate());
        assert!(!RaftError::NoLeader { node: 1, term: 2 }.is_indeterminate());
        assert!(!RaftError::NoReadIndex { waited_ms: 5 }.is_indeterminate());
        let m = RaftError::NoLeader { node: 2, term: 7 }.to_string();
        assert!(m.contains("node 2") && m.contains("term 7"), "{m}");
    }
}
