//! The tombstone GC task: one pass every [`pass_interval_ms`] on the Raft
//! leader (one proposer, so the purges are not proposed once per node).
//!
//! A pass: scan the next cells for tombstones past the grace period
//! (at most [`GC_SCAN_CELLS_MAX`] cells, [`GC_BATCH_KEYS`] tombstones), ask
//! this node and every peer whether they cover each one (`GcCheck`), and
//! propose a `Purge` of those every replica covers ([`rule::plan`]). The
//! purge itself happens when the command is applied, on every node.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::rule::{self, pass_interval_ms, GC_BATCH_KEYS, GC_SCAN_CELLS_MAX};
use crate::clock::Version;
use crate::levels::LevelError;
use crate::metrics::{add, inc, Metrics};
use crate::node::peers::{call, request, Peers};
use crate::proto::peer::{GcCheckRequest, KeyVersion};
use crate::proto::rsm;
use crate::rsm::Rsm;
use crate::store::{Store, StoreError};

/// Deadline of one `GcCheck` and of the `Purge` proposal.
pub const GC_RPC_TIMEOUT_MS: u64 = 5_000;

/// `kv serve` settings of the GC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GcSettings {
    /// `--gc-grace`: how old a tombstone must be before it is considered.
    pub grace_ms: u64,
    /// TEST ONLY (`--unsafe-gc-skip-replica-check`): purge without asking
    /// the replicas (the negative control).
    pub skip_replica_check: bool,
}

/// Why a pass stopped early (logged; the next pass starts over).
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error("tombstone scan: {0}")]
    Store(#[from] StoreError),
    #[error("tombstone scan task: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("purge proposal: {0}")]
    Propose(#[from] LevelError),
}

/// Starts the periodic GC task.
#[allow(clippy::too_many_arguments)]
pub fn start(
    store: Arc<Store>,
    peers: Arc<Peers>,
    rsm: Arc<Rsm>,
    metrics: Arc<Metrics>,
    settings: GcSettings,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) {
    let interval = Duration::from_millis(pass_interval_ms(settings.grace_ms));
    tracker.spawn(async move {
        let mut cursor = Bytes::new();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            if rsm.leader_id() != peers.self_id() as u64 {
                continue;
            }
            match run_pass(&store, &peers, &rsm, &metrics, settings, &mut cursor).await {
                Ok(0) => {}
                Ok(purged) => tracing::info!(purged, "tombstone GC: purge applied"),
                Err(e) => tracing::debug!(error = %e, "tombstone GC pass failed"),
            }
        }
    });
}

/// One pass from `cursor` (advanced); returns how many tombstones the
/// applied `Purge` named.
pub async fn run_pass(
    store: &Arc<Store>,
    peers: &Peers,
    rsm: &Rsm,
    metrics: &Metrics,
    settings: GcSettings,
    cursor: &mut Bytes,
) -> Result<usize, GcError> {
    inc(&metrics.gc_passes);
    let now_ms = store.clock().wall_ms();
    let candidates = {
        let (store, after) = (store.clone(), cursor.clone());
        let grace_ms = settings.grace_ms;
        let (found, next) = crate::rt::spawn_blocking(move || {
            store.scan_tombstones(&after, GC_SCAN_CELLS_MAX, GC_BATCH_KEYS, |v| rule::past_grace(v, now_ms, grace_ms))
        })
        .await??;
        *cursor = next.unwrap_or_default();
        found
    };
    if candidates.is_empty() {
        return Ok(0);
    }
    let local = candidates.iter().map(|(k, v)| store.gc_covers(k, *v)).collect::<Result<Vec<bool>, _>>()?;
    let answers = if settings.skip_replica_check { Vec::new() } else { ask_peers(peers, &candidates).await };
    let plan = rule::plan(&candidates, &local, &answers, settings.skip_replica_check);
    add(&metrics.gc_tombstones_blocked, plan.blocked as u64);
    if plan.purge.is_empty() {
        tracing::debug!(blocked = plan.blocked, "tombstone GC: no tombstone covered by every replica");
        return Ok(0);
    }
    let n = plan.purge.len();
    let entries = plan
        .purge
        .into_iter()
        .map(|(key, v)| rsm::PurgeEntry { key, hlc: v.hlc, node_id: v.node_id, rmw: v.rmw })
        .collect();
    add(&metrics.gc_purges_proposed, n as u64);
    rsm.purge(entries, Duration::from_millis(GC_RPC_TIMEOUT_MS)).await?;
    Ok(n)
}

/// Every peer's `GcCheck` answers, in `peers.ids()` order (`None`: no
/// answer, or an answer of the wrong length).
async fn ask_peers(peers: &Peers, candidates: &[(Bytes, Version)]) -> Vec<Option<Vec<bool>>> {
    let tombstones: Vec<KeyVersion> = candidates
        .iter()
        .map(|(k, v)| KeyVersion { key: k.clone(), hlc: v.hlc, node_id: v.node_id, tombstone: true, rmw: v.rmw })
        .collect();
    join_all(peers.ids().into_iter().map(|id| {
        let client = peers.client(id);
        let req = GcCheckRequest { from_node: peers.self_id(), tombstones: tombstones.clone() };
        async move {
            // A member removed since `ids()` answers nothing: no purge this pass.
            let mut client = client?;
            match call(GC_RPC_TIMEOUT_MS, client.gc_check(request(req, GC_RPC_TIMEOUT_MS))).await {
                Ok(r) if r.covered.len() == candidates.len() => Some(r.covered),
                Ok(r) => {
                    tracing::debug!(peer = id, answers = r.covered.len(), "tombstone GC: short GcCheck answer");
                    None
                }
                Err(s) => {
                    tracing::debug!(peer = id, error = %s.message(), "tombstone GC: peer did not answer");
                    None
                }
            }
        }
    }))
    .await
}
