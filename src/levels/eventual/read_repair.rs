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
//!
//! For the same reason a key compared less than [`REPAIR_KEY_INTERVAL_MS`]
//! ago is not compared again: a hot key read thousands of times a second
//! costs one comparison per second, not one per get. Every key that is read
//! is still compared within that interval.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use futures::future::join_all;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::NodeId;
use crate::metrics::{add, inc, Metrics};
use crate::node::peer_batch::{cell_bytes, chunks_within, read_keys_per_request};
use crate::node::peers::{call, request, Peers};
use crate::proto::peer::{CellsRequest, ReadCellsRequest};
use crate::store::{Cell, Store, WriteOp};
use crate::wire::{cell_from_peer, cell_to_peer};

pub const REPAIR_QUEUE_KEYS: usize = 4096;
/// Keys compared per round at most; fewer when values may be large (see
/// [`MAX_REPAIR_READ_REPLY_BYTES`]).
pub const MAX_REPAIR_BATCH_KEYS: usize = 256;
/// Bytes of the answer to one `ReadCells` of a round, counting every value
/// at the largest accepted size (see [`read_keys_per_request`]).
pub const MAX_REPAIR_READ_REPLY_BYTES: usize = 32 * 1024 * 1024;
/// Bytes of cells pushed to one peer per `Replicate` at most (a larger cell
/// goes alone).
pub const MAX_REPAIR_PUSH_BATCH_BYTES: usize = 16 * 1024 * 1024;
pub const REPAIR_TIMEOUT_MS: u64 = 1_000;
/// How long the first queued key waits for others to share its round
/// (Kafka's `linger.ms` idea). Without it a busy node sent one small
/// `ReadCells` per peer per network round trip, and those RPCs cost the
/// peers more than the gets they repair. With hot keys skipped for
/// [`REPAIR_KEY_INTERVAL_MS`], 10 ms still made ~50 rounds a second of a
/// few keys each on a busy node; 100 ms makes ~8, and a background repair
/// loses nothing by starting 0.1 s later.
pub const REPAIR_LINGER_MS: u64 = 100;
/// A key compared this recently is not compared again.
pub const REPAIR_KEY_INTERVAL_MS: u64 = 1_000;
/// Memory for remembering recently compared keys (key bytes plus
/// [`RECENT_KEY_OVERHEAD_BYTES`] each), at most.
pub const MAX_RECENT_KEYS_BYTES: usize = 4 * 1024 * 1024;
const RECENT_KEY_OVERHEAD_BYTES: usize = 64;

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
        max_value_bytes: usize,
    ) -> ReadRepair {
        assert!((0.0..=1.0).contains(&chance), "read repair chance {chance} outside [0, 1]");
        let (tx, rx) = mpsc::channel(REPAIR_QUEUE_KEYS);
        let batch_keys = read_keys_per_request(max_value_bytes, MAX_REPAIR_READ_REPLY_BYTES, MAX_REPAIR_BATCH_KEYS);
        tracker.spawn(run(store, peers, metrics, cancel, rx, batch_keys));
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

/// The keys compared within the last `interval`, bounded in bytes.
struct RecentKeys {
    at: HashMap<Bytes, Instant>,
    bytes: usize,
    interval: Duration,
    max_bytes: usize,
}

impl RecentKeys {
    fn new(interval: Duration, max_bytes: usize) -> Self {
        RecentKeys { at: HashMap::new(), bytes: 0, interval, max_bytes }
    }

    fn is_recent(&self, key: &Bytes, now: Instant) -> bool {
        self.at.get(key).is_some_and(|&t| now.saturating_duration_since(t) < self.interval)
    }

    /// Remembers `keys` as compared at `now`. When full, forgets the keys
    /// compared before the interval, and everything if that is not enough.
    fn mark(&mut self, keys: &[Bytes], now: Instant) {
        let cost = |k: &Bytes| k.len() + RECENT_KEY_OVERHEAD_BYTES;
        let adding: usize = keys.iter().map(cost).sum();
        if self.bytes + adding > self.max_bytes {
            let interval = self.interval;
            self.at.retain(|_, t| now.saturating_duration_since(*t) < interval);
            self.bytes = self.at.keys().map(cost).sum();
            if self.bytes + adding > self.max_bytes {
                self.at.clear();
                self.bytes = 0;
            }
        }
        for k in keys {
            if self.at.insert(k.clone(), now).is_none() {
                self.bytes += cost(k);
            }
        }
        assert!(self.bytes <= self.max_bytes.max(adding), "recent keys over their byte bound");
    }
}

async fn run(
    store: Arc<Store>,
    peers: Arc<Peers>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
    mut rx: mpsc::Receiver<Bytes>,
    batch_keys: usize,
) {
    let mut recent = RecentKeys::new(Duration::from_millis(REPAIR_KEY_INTERVAL_MS), MAX_RECENT_KEYS_BYTES);
    loop {
        let first = tokio::select! {
            _ = cancel.cancelled() => return,
            k = rx.recv() => match k { Some(k) => k, None => return },
        };
        if recent.is_recent(&first, Instant::now()) {
            inc(&metrics.read_repair_keys_recent);
            continue;
        }
        // Linger without waking per key: every get's enqueue would
        // otherwise wake this task (a cross-thread wake-up per get).
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(REPAIR_LINGER_MS)) => {}
        }
        let now = Instant::now();
        let mut keys = BTreeSet::from([first]);
        let mut skipped = 0u64;
        // Bounded: at most a queue's worth of keys per round.
        for _ in 0..REPAIR_QUEUE_KEYS {
            if keys.len() >= batch_keys {
                break;
            }
            match rx.try_recv() {
                Ok(k) if recent.is_recent(&k, now) => skipped += 1,
                Ok(k) => {
                    keys.insert(k);
                }
                Err(_) => break,
            }
        }
        add(&metrics.read_repair_keys_recent, skipped);
        let keys: Vec<Bytes> = keys.into_iter().collect();
        recent.mark(&keys, now);
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
    let replies = join_all(ids.iter().filter_map(|&id| {
        let mut client = peers.client(id)?;
        let req = ReadCellsRequest { from_node: peers.self_id(), keys: keys.to_vec() };
        Some(async move { (id, call(REPAIR_TIMEOUT_MS, client.read_cells(request(req, REPAIR_TIMEOUT_MS))).await) })
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
    join_all(pushes.into_iter().filter_map(|(id, cells)| {
        let mut client = peers.client(id)?;
        let me = peers.self_id();
        Some(async move {
            let size = |c: &crate::proto::peer::Cell| cell_bytes(c.key.len(), c.value.len());
            for chunk in chunks_within(&cells, MAX_REPAIR_BATCH_KEYS, MAX_REPAIR_PUSH_BATCH_BYTES, size) {
                let req = CellsRequest { from_node: me, cells: chunk.to_vec() };
                if call(REPAIR_TIMEOUT_MS, client.replicate(request(req, REPAIR_TIMEOUT_MS))).await.is_err() {
                    break;
                }
            }
        })
    }))
    .await;
    if fixed > 0 {
        tracing::debug!(fixed, "read repair");
        add(&metrics.read_repair_cells_fixed, fixed as u64);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_recent_for_one_interval() {
        let t0 = Instant::now();
        let mut r = RecentKeys::new(Duration::from_millis(1_000), 1 << 20);
        let k = Bytes::from_static(b"k");
        assert!(!r.is_recent(&k, t0));
        r.mark(std::slice::from_ref(&k), t0);
        assert!(r.is_recent(&k, t0 + Duration::from_millis(999)));
        assert!(!r.is_recent(&k, t0 + Duration::from_millis(1_000)));
        assert!(!r.is_recent(&Bytes::from_static(b"other"), t0));
    }

    #[test]
    fn a_full_memory_forgets_old_keys_first_then_everything() {
        let t0 = Instant::now();
        let key = |i: u32| Bytes::from(format!("key-{i:04}"));
        let each = key(0).len() + RECENT_KEY_OVERHEAD_BYTES;
        let mut r = RecentKeys::new(Duration::from_millis(1_000), 10 * each);
        r.mark(&(0..6).map(key).collect::<Vec<_>>(), t0);
        let later = t0 + Duration::from_millis(1_500);
        r.mark(&(6..10).map(key).collect::<Vec<_>>(), later);
        assert_eq!(r.at.len(), 10);
        // Full: the six keys of t0 are past the interval and make room.
        r.mark(&[key(10)], later);
        assert_eq!(r.at.len(), 5);
        assert!(r.is_recent(&key(9), later) && !r.is_recent(&key(0), later));
        // Full of recent keys: all are forgotten rather than exceed the bound.
        r.mark(&(11..16).map(key).collect::<Vec<_>>(), later);
        assert_eq!(r.at.len(), 10);
        r.mark(&[key(16)], later);
        assert_eq!(r.at.len(), 1);
        assert!(r.bytes <= 10 * each);
    }
}
