//! Background replication of eventual writes, with hinted handoff.
//!
//! Every eventual write is stored together with one hint per peer (same
//! batch, same fsync). One task per peer then delivers it:
//!
//! * **live**: the write is also put on the peer's bounded in-memory queue;
//!   the task sends queued cells in batches and clears their hints.
//! * **replay**: after a failed send, a full queue, or at start-up, the task
//!   ignores the queue and sends what the `hints` family holds for that peer
//!   until a scan from the start finds nothing, backing off while the peer
//!   does not answer.
//!
//! The peers are the current members (`node::peers`): a node added later
//! gets a task from then on, a removed one loses its task and its hints.
//!
//! Hints are cleared only if they still hold the delivered version, so a
//! newer write is never dropped. Delivery is at-least-once; the receiver's
//! LWW merge makes duplicates harmless. With hinted handoff disabled the
//! queue is best effort and anti-entropy repairs what it drops.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::NodeId;
use crate::metrics::{add, inc, Metrics};
use crate::node::config::{MAX_CONFIGURABLE_VALUE_BYTES, MAX_KEY_BYTES};
use crate::node::peer_batch::{cell_bytes, PEER_CELL_OVERHEAD_BYTES};
use crate::node::peers::{call, request, Peers, MAX_PEER_MESSAGE_BYTES};
use crate::proto::peer::CellsRequest;
use crate::store::{Cell, Store, WriteOp};
use crate::wire::cell_to_peer;

/// Cells waiting in memory per peer; beyond this the hints carry them.
pub const PEER_QUEUE_CELLS: usize = 16 * 1024;
/// Cells per replication RPC (live batches and hint replay pages).
pub const MAX_REPLICATION_BATCH_CELLS: usize = 512;
/// Payload bytes per replication RPC, live or replayed (a single larger
/// cell still goes alone). A live batch may pass it by its last cell, so
/// the cap plus the largest cell must fit in one peer message.
pub const MAX_REPLICATION_BATCH_BYTES: usize = 4 * 1024 * 1024;
const _: () = assert!(
    MAX_REPLICATION_BATCH_BYTES + MAX_CONFIGURABLE_VALUE_BYTES + MAX_KEY_BYTES + PEER_CELL_OVERHEAD_BYTES
        < MAX_PEER_MESSAGE_BYTES
);
pub const REPLICATE_TIMEOUT_MS: u64 = 2_000;
pub const RETRY_MIN_MS: u64 = 100;
pub const RETRY_MAX_MS: u64 = 1_000;
/// Safety net: look for undelivered hints this often even without a failure.
pub const HINT_SWEEP_INTERVAL_MS: u64 = 30_000;

struct PeerQueue {
    tx: mpsc::Sender<(Bytes, Cell)>,
    replay: Arc<AtomicBool>,
    wake: Arc<Notify>,
    /// Ends this peer's task when the peer stops being a member.
    stop: CancellationToken,
}

/// What starting a peer's task needs.
struct Spawner {
    store: Arc<Store>,
    peers: Arc<Peers>,
    metrics: Arc<Metrics>,
    hinted_handoff: bool,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

pub struct Replication {
    /// One queue and task per other member; follows the member set.
    queues: RwLock<BTreeMap<NodeId, PeerQueue>>,
    spawner: Spawner,
}

impl Replication {
    pub fn start(
        store: Arc<Store>,
        peers: Arc<Peers>,
        metrics: Arc<Metrics>,
        hinted_handoff: bool,
        cancel: CancellationToken,
        tracker: &TaskTracker,
    ) -> Arc<Replication> {
        let spawner = Spawner { store, peers, metrics, hinted_handoff, cancel, tracker: tracker.clone() };
        let r = Arc::new(Replication { queues: RwLock::new(BTreeMap::new()), spawner });
        r.follow(r.spawner.peers.ids());
        tracker.spawn(r.clone().follow_members(r.spawner.peers.changes()));
        r
    }

    /// Starts a task for each member in `ids` without one, ends the tasks
    /// of nodes not in it; returns the nodes that went.
    fn follow(&self, ids: Vec<NodeId>) -> Vec<NodeId> {
        let mut queues = self.queues.write().expect("replication queues");
        let gone: Vec<NodeId> = queues.keys().copied().filter(|p| !ids.contains(p)).collect();
        for p in &gone {
            if let Some(q) = queues.remove(p) {
                q.stop.cancel();
            }
        }
        for peer in ids {
            if queues.contains_key(&peer) {
                continue;
            }
            let sp = &self.spawner;
            let (tx, rx) = mpsc::channel(PEER_QUEUE_CELLS);
            // Hints left from before a restart are delivered first.
            let replay = Arc::new(AtomicBool::new(sp.hinted_handoff));
            let wake = Arc::new(Notify::new());
            let stop = sp.cancel.child_token();
            let task = PeerTask {
                peer,
                self_id: sp.peers.self_id(),
                peers: sp.peers.clone(),
                store: sp.store.clone(),
                metrics: sp.metrics.clone(),
                hinted_handoff: sp.hinted_handoff,
                replay: replay.clone(),
                wake: wake.clone(),
                cancel: stop.clone(),
            };
            sp.tracker.spawn(task.run(rx));
            queues.insert(peer, PeerQueue { tx, replay, wake, stop });
        }
        gone
    }

    /// Follows membership changes (`kv cluster add/remove`): a new member
    /// gets a queue and a task from now on (anti-entropy brings it what was
    /// written before); a removed one's task ends and its hints are
    /// deleted, since it will never take them.
    async fn follow_members(self: Arc<Self>, mut changes: tokio::sync::watch::Receiver<u64>) {
        let sp = &self.spawner;
        // The set may have changed between `start` and now: sync first.
        loop {
            let ids = sp.peers.ids();
            let gone = self.follow(ids.clone());
            if sp.hinted_handoff {
                match sp.store.set_hint_peers(ids).await {
                    Ok(dropped) if !dropped.is_empty() => {
                        tracing::info!(nodes = ?dropped, "dropped the hints of nodes that are no longer members")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, nodes = ?gone, "could not drop the hints of removed members"),
                }
            }
            tokio::select! {
                _ = sp.cancel.cancelled() => return,
                r = changes.changed() => if r.is_err() { return },
            }
        }
    }

    /// Queues a freshly written cell for every peer. Never blocks: a full
    /// queue switches that peer to replay from the hints.
    pub fn enqueue(&self, key: Bytes, cell: Cell) {
        for q in self.queues.read().expect("replication queues").values() {
            if q.tx.try_send((key.clone(), cell.clone())).is_err() {
                q.replay.store(true, Ordering::SeqCst);
                q.wake.notify_one();
            }
        }
    }
}

struct PeerTask {
    peer: NodeId,
    self_id: NodeId,
    peers: Arc<Peers>,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    hinted_handoff: bool,
    replay: Arc<AtomicBool>,
    wake: Arc<Notify>,
    cancel: CancellationToken,
}

impl PeerTask {
    async fn run(self, mut rx: mpsc::Receiver<(Bytes, Cell)>) {
        let mut backoff_ms = RETRY_MIN_MS;
        let mut cursor: Option<Bytes> = None;
        loop {
            if self.cancel.is_cancelled() {
                return;
            }
            if self.hinted_handoff && self.replay.load(Ordering::SeqCst) {
                // The hints cover everything queued: drop the queue.
                while rx.try_recv().is_ok() {}
                let from_start = cursor.is_none();
                match self.replay_page(cursor.as_deref().unwrap_or(b"")).await {
                    Ok(Some(last)) => {
                        cursor = Some(last);
                        backoff_ms = RETRY_MIN_MS;
                    }
                    Ok(None) if from_start => {
                        tracing::debug!(peer = self.peer, "hint replay done");
                        self.replay.store(false, Ordering::SeqCst);
                    }
                    // Reached the end: one more pass from the start catches
                    // hints written behind the cursor meanwhile.
                    Ok(None) => cursor = None,
                    Err(e) => {
                        tracing::debug!(peer = self.peer, error = %e, backoff_ms, "hint replay failed");
                        if !self.pause(backoff_ms).await {
                            return;
                        }
                        backoff_ms = (backoff_ms * 2).min(RETRY_MAX_MS);
                    }
                }
                continue;
            }
            cursor = None;
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(HINT_SWEEP_INTERVAL_MS)) => {
                    if self.hinted_handoff && self.store.count_hints(self.peer, 1).unwrap_or(0) > 0 {
                        self.replay.store(true, Ordering::SeqCst);
                    }
                }
                first = rx.recv() => {
                    let Some(first) = first else { return };
                    let mut bytes = cell_bytes(first.0.len(), first.1.encoded_len());
                    let mut batch = vec![first];
                    while batch.len() < MAX_REPLICATION_BATCH_CELLS && bytes < MAX_REPLICATION_BATCH_BYTES {
                        match rx.try_recv() {
                            Ok(item) => {
                                bytes += cell_bytes(item.0.len(), item.1.encoded_len());
                                batch.push(item);
                            }
                            Err(_) => break,
                        }
                    }
                    if let Err(e) = self.deliver(&batch).await {
                        inc(&self.metrics.replication_failures);
                        tracing::debug!(peer = self.peer, error = %e, cells = batch.len(), "live replication failed");
                        if self.hinted_handoff {
                            self.replay.store(true, Ordering::SeqCst);
                        }
                        if !self.pause(backoff_ms).await {
                            return;
                        }
                        backoff_ms = (backoff_ms * 2).min(RETRY_MAX_MS);
                    } else {
                        backoff_ms = RETRY_MIN_MS;
                    }
                }
            }
        }
    }

    /// Sleeps unless cancelled; false when cancelled.
    async fn pause(&self, ms: u64) -> bool {
        tokio::select! {
            _ = self.cancel.cancelled() => false,
            _ = tokio::time::sleep(Duration::from_millis(ms)) => true,
        }
    }

    /// Sends one page of hints after `after` (capped by count and bytes, so
    /// it fits in one peer message whatever the values' sizes); the last key
    /// sent, or `None` when there was nothing.
    async fn replay_page(&self, after: &[u8]) -> Result<Option<Bytes>, String> {
        let store = self.store.clone();
        let (peer, after_owned) = (self.peer, after.to_vec());
        let hints = crate::rt::spawn_blocking(move || {
            store.scan_hints(peer, &after_owned, MAX_REPLICATION_BATCH_CELLS, MAX_REPLICATION_BATCH_BYTES)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        let Some(last) = hints.last().map(|(k, _)| k.clone()) else { return Ok(None) };
        let n = hints.len() as u64;
        self.deliver(&hints).await?;
        add(&self.metrics.hints_delivered, n);
        Ok(Some(last))
    }

    /// Sends cells to the peer and clears their hints once it acknowledged.
    async fn deliver(&self, cells: &[(Bytes, Cell)]) -> Result<(), String> {
        let req =
            CellsRequest { from_node: self.self_id, cells: cells.iter().map(|(k, c)| cell_to_peer(k, c)).collect() };
        let mut client = self.peers.client(self.peer).ok_or_else(|| format!("node {} is not a member", self.peer))?;
        call(REPLICATE_TIMEOUT_MS, client.replicate(request(req, REPLICATE_TIMEOUT_MS)))
            .await
            .map_err(|s| format!("{}: {}", s.code(), s.message()))?;
        inc(&self.metrics.replication_batches);
        add(&self.metrics.replication_cells, cells.len() as u64);
        if self.hinted_handoff {
            let ops = cells
                .iter()
                .map(|(k, c)| WriteOp::ClearHint { peer: self.peer, key: k.clone(), version: c.version })
                .collect();
            // Not synced: a hint that reappears after a crash is re-sent, harmlessly.
            self.store.write(ops, false).await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}
