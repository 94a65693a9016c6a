//! Anti-entropy: replicas converge even when hints were lost.
//!
//! Every `anti_entropy_interval_ms` the node runs one round with the next
//! peer (round robin):
//! 1. exchange per-bucket digests ([`crate::store::digest`]) and keep the
//!    buckets that differ ([`differing_buckets`]);
//! 2. list (key, version) of those buckets on both sides, window by window
//!    in key order, and [`reconcile`] each window: keys where we are newer
//!    are pushed, keys where the peer is newer are pulled;
//! 3. push with `Replicate`, pull with `ReadCells` + a local LWW merge.
//!
//! The comparison logic is pure (tested below); [`run_round`] is the I/O.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::{NodeId, Version};
use crate::metrics::{add, inc, Metrics};
use crate::node::peer_batch::{cell_bytes, read_keys_per_request, ByteBudget};
use crate::node::peers::{call, request, Peers};
use crate::proto::peer::{CellsRequest, DigestRequest, ListBucketsRequest, ReadCellsRequest};
use crate::store::{Store, WriteOp, BUCKETS};
use crate::wire::{cell_from_peer, cell_to_peer};

/// Entries listed per page on each side.
pub const LIST_PAGE_ENTRIES: usize = 2_000;
/// Keys moved per RPC at most.
pub const TRANSFER_BATCH_KEYS: usize = 256;
/// Bytes of cells pushed per `Replicate` at most (a larger cell goes alone).
pub const MAX_AE_PUSH_BATCH_BYTES: usize = 16 * 1024 * 1024;
/// Bytes of the answer to one pulling `ReadCells`, counting every value at
/// the largest accepted size (see [`read_keys_per_request`]).
pub const MAX_AE_PULL_REPLY_BYTES: usize = 32 * 1024 * 1024;
/// Keys examined per round at most; the rest waits for the next round.
pub const MAX_KEYS_PER_ROUND: usize = 200_000;
pub const AE_RPC_TIMEOUT_MS: u64 = 5_000;

/// (key, version, tombstone) as listed by a replica, in key order.
pub type Entry = crate::store::KeyVersion;

/// Buckets whose digests differ.
pub fn differing_buckets(local: &[u64], remote: &[u64]) -> Vec<u32> {
    assert_eq!(local.len(), remote.len(), "digest vectors of different sizes");
    (0..local.len()).filter(|&i| local[i] != remote[i]).map(|i| i as u32).collect()
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Diff {
    /// Keys where the local replica is newer (or the peer lacks them).
    pub push: Vec<Bytes>,
    /// Keys where the peer is newer (or we lack them).
    pub pull: Vec<Bytes>,
}

/// Merge-joins two key-ordered listings of the same key window.
pub fn reconcile(local: &[Entry], remote: &[Entry]) -> Diff {
    let mut d = Diff::default();
    let (mut i, mut j) = (0, 0);
    while i < local.len() || j < remote.len() {
        match (local.get(i), remote.get(j)) {
            (Some(l), Some(r)) if l.0 == r.0 => {
                // Same version ⇒ same content; for the (never expected)
                // tie a live value beats a tombstone, as in Cell::merge.
                match (l.1, !l.2).cmp(&(r.1, !r.2)) {
                    std::cmp::Ordering::Greater => d.push.push(l.0.clone()),
                    std::cmp::Ordering::Less => d.pull.push(r.0.clone()),
                    std::cmp::Ordering::Equal => {}
                }
                i += 1;
                j += 1;
            }
            (Some(l), Some(r)) if l.0 < r.0 => {
                d.push.push(l.0.clone());
                i += 1;
            }
            (Some(_), Some(r)) => {
                d.pull.push(r.0.clone());
                j += 1;
            }
            (Some(l), None) => {
                d.push.push(l.0.clone());
                i += 1;
            }
            (None, Some(r)) => {
                d.pull.push(r.0.clone());
                j += 1;
            }
            (None, None) => unreachable!(),
        }
    }
    d
}

/// The end of the window both listings fully cover: entries up to and
/// including the returned key can be reconciled. `None` = everything.
pub fn window_end<'a>(
    local: &'a [Entry],
    local_more: bool,
    remote: &'a [Entry],
    remote_more: bool,
) -> Option<&'a Bytes> {
    let l = local_more.then(|| local.last().map(|e| &e.0)).flatten();
    let r = remote_more.then(|| remote.last().map(|e| &e.0)).flatten();
    match (l, r) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

pub fn start(
    store: Arc<Store>,
    peers: Arc<Peers>,
    metrics: Arc<Metrics>,
    interval_ms: u64,
    max_value_bytes: usize,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) {
    tracker.spawn(async move {
        let ids = peers.ids();
        let mut next = 0usize;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(interval_ms)) => {}
            }
            if ids.is_empty() {
                continue;
            }
            let peer = ids[next % ids.len()];
            next += 1;
            match run_round(&store, &peers, &metrics, peer, max_value_bytes).await {
                Ok((pushed, pulled)) if pushed + pulled > 0 => {
                    tracing::info!(peer, pushed, pulled, "anti-entropy repaired cells");
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(peer, error = %e, "anti-entropy round failed"),
            }
        }
    });
}

/// One anti-entropy round with `peer`; returns (cells pushed, cells pulled).
/// `max_value_bytes` (the cluster's `--max-value-bytes`) bounds the keys
/// pulled per request.
pub async fn run_round(
    store: &Arc<Store>,
    peers: &Peers,
    metrics: &Metrics,
    peer: NodeId,
    max_value_bytes: usize,
) -> Result<(usize, usize), String> {
    inc(&metrics.anti_entropy_rounds);
    let me = peers.self_id();
    let mut client = peers.client(peer).ok_or_else(|| format!("node {peer} is not a member"))?;
    let remote = call(
        AE_RPC_TIMEOUT_MS,
        client.digest(request(DigestRequest { from_node: me, bucket_count: BUCKETS }, AE_RPC_TIMEOUT_MS)),
    )
    .await
    .map_err(|s| s.message().to_string())?
    .digests;
    let local = store.digests();
    if remote.len() != local.len() {
        return Err(format!("peer {peer} sent {} digests, expected {}", remote.len(), local.len()));
    }
    let buckets = differing_buckets(&local, &remote);
    if buckets.is_empty() {
        return Ok((0, 0));
    }
    let (mut pushed, mut pulled, mut examined) = (0, 0, 0);
    let mut after = Bytes::new();
    loop {
        let (l, l_more) = {
            let (store, b, a) = (store.clone(), buckets.clone(), after.clone());
            crate::rt::spawn_blocking(move || store.list_buckets(&b, &a, LIST_PAGE_ENTRIES))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?
        };
        let list = ListBucketsRequest {
            from_node: me,
            bucket_count: BUCKETS,
            buckets: buckets.clone(),
            after_key: after.clone(),
            limit: LIST_PAGE_ENTRIES as u32,
        };
        let page = call(AE_RPC_TIMEOUT_MS, client.list_buckets(request(list, AE_RPC_TIMEOUT_MS)))
            .await
            .map_err(|s| s.message().to_string())?;
        let r: Vec<Entry> = page
            .entries
            .into_iter()
            .map(|e| (e.key, Version { hlc: e.hlc, node_id: e.node_id, rmw: e.rmw }, e.tombstone))
            .collect();
        let end = window_end(&l, l_more, &r, page.more).cloned();
        let within = |e: &&Entry| end.as_ref().is_none_or(|end| e.0 <= *end);
        let lw: Vec<Entry> = l.iter().filter(within).cloned().collect();
        let rw: Vec<Entry> = r.iter().filter(within).cloned().collect();
        examined += lw.len().max(rw.len());
        let diff = reconcile(&lw, &rw);
        pushed += push(store, &mut client, me, &diff.push).await?;
        pulled += pull(store, &mut client, me, &diff.pull, max_value_bytes).await?;
        match end {
            Some(end) if examined < MAX_KEYS_PER_ROUND => after = end,
            _ => break,
        }
    }
    add(&metrics.anti_entropy_cells_pushed, pushed as u64);
    add(&metrics.anti_entropy_cells_pulled, pulled as u64);
    Ok((pushed, pulled))
}

type PeerClient = crate::proto::peer::peer_client::PeerClient<tonic::transport::Channel>;

/// Pushes the cells of `keys` in batches capped by count and bytes.
async fn push(store: &Store, client: &mut PeerClient, me: NodeId, keys: &[Bytes]) -> Result<usize, String> {
    let mut n = 0;
    let mut cells = Vec::new();
    let mut budget = ByteBudget::new(TRANSFER_BATCH_KEYS, MAX_AE_PUSH_BATCH_BYTES);
    for k in keys {
        let Some(c) = store.get_cell(k).map_err(|e| e.to_string())? else { continue };
        let bytes = cell_bytes(k.len(), c.value.as_ref().map_or(0, |v| v.len()));
        if !budget.admits(bytes) {
            n += send_cells(client, me, std::mem::take(&mut cells)).await?;
            budget = ByteBudget::new(TRANSFER_BATCH_KEYS, MAX_AE_PUSH_BATCH_BYTES);
        }
        budget.add(bytes);
        cells.push(cell_to_peer(k, &c));
    }
    if !cells.is_empty() {
        n += send_cells(client, me, cells).await?;
    }
    Ok(n)
}

async fn send_cells(
    client: &mut PeerClient,
    me: NodeId,
    cells: Vec<crate::proto::peer::Cell>,
) -> Result<usize, String> {
    let n = cells.len();
    call(AE_RPC_TIMEOUT_MS, client.replicate(request(CellsRequest { from_node: me, cells }, AE_RPC_TIMEOUT_MS)))
        .await
        .map_err(|s| s.message().to_string())?;
    Ok(n)
}

/// Pulls the cells of `keys`, as many keys per request as fit an answer of
/// values of `max_value_bytes` each.
async fn pull(
    store: &Store,
    client: &mut PeerClient,
    me: NodeId,
    keys: &[Bytes],
    max_value_bytes: usize,
) -> Result<usize, String> {
    let mut n = 0;
    let keys_per_request = read_keys_per_request(max_value_bytes, MAX_AE_PULL_REPLY_BYTES, TRANSFER_BATCH_KEYS);
    for chunk in keys.chunks(keys_per_request) {
        let read = ReadCellsRequest { from_node: me, keys: chunk.to_vec() };
        let reply = call(AE_RPC_TIMEOUT_MS, client.read_cells(request(read, AE_RPC_TIMEOUT_MS)))
            .await
            .map_err(|s| s.message().to_string())?;
        let ops: Vec<WriteOp> = reply
            .cells
            .into_iter()
            .filter(|m| m.present)
            .filter_map(|m| m.cell.and_then(cell_from_peer))
            .map(|(key, cell)| WriteOp::Merge { key, cell })
            .collect();
        n += ops.len();
        if !ops.is_empty() {
            store.write(ops, true).await.map_err(|e| e.to_string())?;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(k: &str, hlc: u64) -> Entry {
        (Bytes::copy_from_slice(k.as_bytes()), Version::new(hlc, 1), false)
    }

    fn keys(v: &[Bytes]) -> Vec<&str> {
        v.iter().map(|k| std::str::from_utf8(k).unwrap()).collect()
    }

    #[test]
    fn reconcile_pushes_newer_and_missing_pulls_the_rest() {
        let local = [e("a", 5), e("b", 1), e("d", 3), e("f", 1)];
        let remote = [e("a", 5), e("b", 2), e("c", 1), e("d", 2), e("g", 1)];
        let d = reconcile(&local, &remote);
        assert_eq!(keys(&d.push), vec!["d", "f"]);
        assert_eq!(keys(&d.pull), vec!["b", "c", "g"]);
    }

    #[test]
    fn equal_version_tie_breaks_like_cell_merge() {
        // Whatever reconcile asks to move must be what the receiver's merge keeps.
        use crate::level::Level;
        use crate::store::Cell;
        let v = Version::new(3, 1);
        let live_cell = Cell::value(Bytes::from_static(b"x"), v, Level::Eventual);
        let dead_cell = Cell::tombstone(v, Level::Eventual);
        assert_eq!(live_cell.clone().merge(dead_cell), live_cell);
        let live = (Bytes::from_static(b"k"), v, false);
        let dead = (Bytes::from_static(b"k"), v, true);
        assert_eq!(keys(&reconcile(std::slice::from_ref(&live), std::slice::from_ref(&dead)).push), vec!["k"]);
        assert_eq!(keys(&reconcile(&[dead], &[live]).pull), vec!["k"]);
    }

    #[test]
    fn window_ends_at_the_shorter_listing() {
        let l = [e("a", 1), e("c", 1)];
        let r = [e("b", 1), e("d", 1)];
        assert_eq!(window_end(&l, true, &r, true).map(|k| &k[..]), Some(&b"c"[..]));
        assert_eq!(window_end(&l, false, &r, true).map(|k| &k[..]), Some(&b"d"[..]));
        assert_eq!(window_end(&l, false, &r, false), None);
    }

    #[test]
    fn differing_buckets_lists_exactly_the_changed_ones() {
        assert_eq!(differing_buckets(&[1, 2, 3, 4], &[1, 9, 3, 8]), vec![1, 3]);
    }
}
