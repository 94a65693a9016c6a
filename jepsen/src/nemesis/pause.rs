//! The pause nemesis: SIGSTOP nodes, then SIGCONT them.
//!
//! A paused process keeps its sockets open but answers nothing: peers and
//! clients see timeouts rather than refused connections, the case where a
//! client cannot know whether its write was applied (`info`). On SIGCONT
//! the node carries on with stale timers and leases, as after a long GC
//! pause.

use std::collections::BTreeSet;

use super::NemesisError;
use crate::cluster::{Cluster, NodeId};

/// SIGSTOP every node in `nodes`.
pub fn start(cluster: &mut Cluster, nodes: &BTreeSet<NodeId>) -> Result<(), NemesisError> {
    for &id in nodes {
        cluster.pause(id)?;
    }
    Ok(())
}

/// SIGCONT every node in `nodes` that is paused.
pub fn heal(cluster: &mut Cluster, nodes: &BTreeSet<NodeId>) -> Result<(), NemesisError> {
    for &id in nodes {
        cluster.resume(id)?;
    }
    Ok(())
}
