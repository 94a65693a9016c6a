//! Read repair: after an eventual get, compare the key across replicas in
//! the background and push the newest cell to whoever is behind.
//!
//! Gets only enqueue the key (never wait); a bounded queue sheds repairs
//! under load rather than slowing reads. One task batches queued keys into
//! one `ReadCells` per peer, so the cost is one round trip per batch; a
//! batch waits [`REPAIR_LINGER_MS`] for more keys.
//!
//! Like Cassandra's `read_repair_chance`, only a share of gets
//! (`--read-repair-chance`, default 1: every get) queue their key: hot
//! keys are read far more often than they diverge, and anti-entropy
//! repairs what sampling skips.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use futures::future::join_all;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::NodeId;
use crate::metrics::{add, inc, Metrics};
use crate::node::peers::{call, request, Peers};
use crate::proto::peer::{CellsRequest, ReadCellsRequest};
use crate::store::{Cell, Store, WriteOp};
use crate::wire::{cell_from_peer, cell_to_peer};

pub const REPAIR_QUEUE_KEYS: usize = 4096;
pub const MAX_REPAIR_BATCH_KEYS: usize = 256;
pub const REPAIR_TIMEOUT_MS: u64 = 1_000;
/// How long the first queued key waits for others to share its round
/// (Kafka's `linger.ms` idea). Without it a busy node sent one small
/// `ReadCells` per peer per network round trip, and those RPCs cost the
/// peers more than the gets they repair.
pub const REPAIR_LINGER_MS: u64 = 10;

#[derive(Clone)]
pub struct ReadRepair {
    tx: mpsc::Sender<Bytes>,
    /// Share of gets that queue a repair, in [0, 1].
    chance: f64,
}

impl ReadRepair {
    pub fn start(
        store: Arc<Store>,
        peers: Arc<Peers>,
        metrics: Arc<Metrics>,
        cancel: CancellationToken,
        tracker: &TaskTracker,
        chance: f64,
    ) -> ReadRepair {
        assert!((0.0..=1.0).contains(&chance), "read repair chance {chance} outside [0, 1]");
        let (tx, rx) = mpsc::channel(REPAIR_QUEUE_KEYS);
        tracker.spawn(run(store, peers, metrics, cancel, rx));
        ReadRepair { tx, chance }
    }

    /// Asks for a repair of `key` (with the configured chance); dropped
    /// when the queue is full.
    pub fn enqueue(&self, key: Bytes) {
        if self.chance >= 1.0 || (self.chance > 0.0 && rand::random::<f64>() < self.chance) {
            let _ = self.tx.try_send(key);
        }
    }
}

async fn run(
    store: Arc<Store>,
    peers: Arc<Peers>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
    mut rx: mpsc::Receiver<Bytes>,
) {
    loop {
        let first = tokio::select! {
            _ = cancel.cancelled() => return,
            k = rx.recv() => match k { Some(k) => k, None => return },
        };
        // Linger without waking per key: every get's enqueue would
        // otherwise wake this task (a cross-thread wake-up per get).
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(std::time::Duration::from_millis(REPAIR_LINGER_MS)) => {}
        }
        let mut keys = BTreeSet::from([first]);
        while keys.len() < MAX_REPAIR_BATCH_KEYS {
            match rx.try_recv() {
                Ok(k) => {
                    keys.insert(k);
                }
                Err(_) => break,
            }
        }
        let keys: Vec<Bytes> = keys.into_iter().collect();
        if let Err(e) = repair(&store, &peers, &metrics, &keys).await {
            tracing::debug!(error = %e, "read repair failed");
        }
    }
}

/// Compares `keys` on every reachable replica and brings the stale ones up
/// to date. Unreachable peers are skipped (hints and anti-entropy cover them).
pub async fn repair(store: &Store, peers: &Peers, metrics: &Metrics, keys: &[Bytes]) -> Result<(), String> {
    inc(&metrics.read_repair_rounds);
    let ids = peers.ids();
    let replies = join_all(ids.iter().map(|&id| {
        let mut client = peers.client(id);
        let req = ReadCellsRequest { from_node: peers.self_id(), keys: keys.to_vec() };
        async move { (id, call(REPAIR_TIMEOUT_MS, client.read_cells(request(req, REPAIR_TIMEOUT_MS))).await) }
    }))
    .await;
    // Per key: what each replica holds.
    let mut views: BTreeMap<NodeId, Vec<Option<Cell>>> = BTreeMap::new();
    for (id, reply) in replies {
        let Ok(reply) = reply else { continue };
        let cells = reply.cells;
        if cells.len() != keys.len() {
            continue;
        }
        views.insert(
            id,
            cells.into_iter().map(|m| m.cell.filter(|_| m.present).and_then(cell_from_peer).map(|(_, c)| c)).collect(),
        );
    }
    let mut local_fix = Vec::new();
    let mut pushes: BTreeMap<NodeId, Vec<crate::proto::peer::Cell>> = BTreeMap::new();
    for (i, key) in keys.iter().enumerate() {
        let local = store.get_cell(key).map_err(|e| e.to_string())?;
        let newest = views.values().filter_map(|v| v[i].clone()).chain(local.clone()).reduce(Cell::merge);
        let Some(newest) = newest else { continue };
        if local.as_ref() != Some(&newest) {
            local_fix.push(WriteOp::Merge { key: key.clone(), cell: newest.clone() });
        }
        for (&id, view) in &views {
            if view[i].as_ref() != Some(&newest) {
                pushes.entry(id).or_default().push(cell_to_peer(key, &newest));
            }
        }
    }
    let fixed = local_fix.len() + pushes.values().map(Vec::len).sum::<usize>();
    if !local_fix.is_empty() {
        store.write(local_fix, true).await.map_err(|e| e.to_string())?;
    }
    join_all(pushes.into_iter().map(|(id, cells)| {
        let mut client = peers.client(id);
        let req = CellsRequest { from_node: peers.self_id(), cells };
        async move { call(REPAIR_TIMEOUT_MS, client.replicate(request(req, REPAIR_TIMEOUT_MS))).await }
    }))
    .await;
    if fixed > 0 {
        tracing::debug!(fixed, "read repair");
        add(&metrics.read_repair_cells_fixed, fixed as u64);
    }
    Ok(())
}
