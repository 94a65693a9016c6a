//! The kill nemesis: kill -9 nodes, then restart them on the same data.
//!
//! A crash without any chance to flush tests that an acknowledged write was
//! really durable (capkv fsyncs before it acknowledges) and that a node
//! rejoins and catches up (hinted handoff, anti-entropy, Raft log).

use std::collections::BTreeSet;

use super::NemesisError;
use crate::cluster::{Cluster, NodeId};

/// kill -9 every node in `nodes`.
pub fn start(cluster: &mut Cluster, nodes: &BTreeSet<NodeId>) -> Result<(), NemesisError> {
    for &id in nodes {
        cluster.kill(id)?;
    }
    Ok(())
}

/// Restarts every node in `nodes` that is not running, waiting until each
/// answers.
pub async fn heal(cluster: &mut Cluster, nodes: &BTreeSet<NodeId>) -> Result<(), NemesisError> {
    for &id in nodes {
        cluster.restart(id).await?;
    }
    Ok(())
}
