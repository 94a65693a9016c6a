//! Per-peer batching of quorum messages.
//!
//! Many client operations run at once, each with its own [`Coordinator`]
//! sending one read or write per replica. Sent one by one that is four RPCs
//! per `set` and, on the peer, one write job (and fsync share) each. The mux
//! gives every peer a queue: whatever reads and writes accumulated while the
//! previous batch was in flight go out as one `ReadCells` and one
//! `Replicate` (one LWW merge batch, one fsync on the peer), and each answer
//! is routed back to its coordinator as an [`Input`]. Up to
//! [`MAX_IN_FLIGHT_BATCHES`] batches per peer are in flight, so a slow fsync
//! does not stall reads.
//!
//! [`Coordinator`]: super::Coordinator

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Input, Message, Phase};
use crate::clock::NodeId;
use crate::node::peers::{call, request, Peers};
use crate::proto::peer::{CellsRequest, ReadCellsRequest};
use crate::wire::{cell_from_peer, cell_to_peer};

/// Messages queued per peer; a full queue fails the message at once (the
/// coordinator counts it as that replica failing).
pub const PEER_QUEUE_MESSAGES: usize = 8192;
/// Messages per batch RPC at most.
pub const MAX_BATCH_MESSAGES: usize = 512;
/// Batches in flight per peer at most. Two keep a read moving while a
/// write batch waits for its fsync; more only made batches smaller (more
/// RPCs and peer fsyncs per operation): with 4, quorum set at 256 clients
/// did 9.7 k ops/s, with 2 15.3 k (docs/performance.md).
pub const MAX_IN_FLIGHT_BATCHES: usize = 2;
/// Longest a batch RPC may take, whatever its requests' deadlines.
pub const MAX_BATCH_TIMEOUT_MS: u64 = 10_000;

/// One message for one peer, answered on `reply`.
pub struct Outgoing {
    pub msg: Message,
    pub deadline: Instant,
    pub reply: mpsc::Sender<Input>,
}

pub struct Mux {
    queues: BTreeMap<NodeId, mpsc::Sender<Outgoing>>,
}

impl Mux {
    pub fn start(peers: Arc<Peers>, cancel: CancellationToken, tracker: &TaskTracker) -> Mux {
        let mut queues = BTreeMap::new();
        for id in peers.ids() {
            let (tx, rx) = mpsc::channel(PEER_QUEUE_MESSAGES);
            tracker.spawn(run(id, peers.clone(), rx, cancel.clone(), tracker.clone()));
            queues.insert(id, tx);
        }
        Mux { queues }
    }

    /// Queues `out` for `to`; if that is impossible the failure is
    /// reported to the coordinator right away.
    pub fn send(&self, to: NodeId, out: Outgoing) {
        let Some(q) = self.queues.get(&to) else {
            let _ = out.reply.try_send(failed(to, out.msg.phase(), format!("unknown peer {to}")));
            return;
        };
        if let Err(e) = q.try_send(out) {
            let out = match e {
                mpsc::error::TrySendError::Full(o) | mpsc::error::TrySendError::Closed(o) => o,
            };
            let _ = out.reply.try_send(failed(to, out.msg.phase(), "too many quorum messages queued".into()));
        }
    }
}

fn failed(from: NodeId, phase: Phase, reason: String) -> Input {
    Input::Failed { from, phase, reason }
}

async fn run(
    to: NodeId,
    peers: Arc<Peers>,
    mut rx: mpsc::Receiver<Outgoing>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT_BATCHES));
    loop {
        let permit = tokio::select! {
            _ = cancel.cancelled() => return,
            p = permits.clone().acquire_owned() => p.expect("semaphore never closed"),
        };
        let first = tokio::select! {
            _ = cancel.cancelled() => return,
            m = rx.recv() => match m { Some(m) => m, None => return },
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_MESSAGES {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let peers = peers.clone();
        tracker.spawn(async move {
            send_batch(to, &peers, batch).await;
            drop(permit);
        });
    }
}

async fn send_batch(to: NodeId, peers: &Peers, batch: Vec<Outgoing>) {
    let now = Instant::now();
    let mut reads: Vec<(Bytes, mpsc::Sender<Input>)> = Vec::new();
    let mut writes: Vec<(crate::proto::peer::Cell, mpsc::Sender<Input>)> = Vec::new();
    let mut timeout_ms = 1u64;
    for o in batch {
        if o.deadline <= now {
            continue;
        }
        timeout_ms = timeout_ms.max(o.deadline.duration_since(now).as_millis() as u64);
        match o.msg {
            Message::Read { key } => reads.push((key, o.reply)),
            Message::Write { key, cell } => writes.push((cell_to_peer(&key, &cell), o.reply)),
        }
    }
    let timeout_ms = timeout_ms.min(MAX_BATCH_TIMEOUT_MS);
    let me = peers.self_id();
    let read_rpc = async {
        if reads.is_empty() {
            return;
        }
        let mut client = peers.client(to);
        let req = ReadCellsRequest { from_node: me, keys: reads.iter().map(|(k, _)| k.clone()).collect() };
        match call(timeout_ms, client.read_cells(request(req, timeout_ms))).await {
            Ok(reply) if reply.cells.len() == reads.len() => {
                for (m, (_, tx)) in reply.cells.into_iter().zip(&reads) {
                    let cell = m.cell.filter(|_| m.present).and_then(cell_from_peer).map(|(_, c)| c);
                    let _ = tx.send(Input::ReadReply { from: to, cell }).await;
                }
            }
            Ok(_) => fail_all(to, Phase::Read, "malformed ReadCells reply", reads.iter().map(|(_, t)| t)).await,
            Err(s) => fail_all(to, Phase::Read, s.message(), reads.iter().map(|(_, t)| t)).await,
        }
    };
    let write_rpc = async {
        if writes.is_empty() {
            return;
        }
        let mut client = peers.client(to);
        let req = CellsRequest { from_node: me, cells: writes.iter().map(|(c, _)| c.clone()).collect() };
        match call(timeout_ms, client.replicate(request(req, timeout_ms))).await {
            Ok(_) => {
                for (_, tx) in &writes {
                    let _ = tx.send(Input::WriteAck { from: to }).await;
                }
            }
            Err(s) => fail_all(to, Phase::Write, s.message(), writes.iter().map(|(_, t)| t)).await,
        }
    };
    tokio::join!(read_rpc, write_rpc);
}

async fn fail_all<'a>(to: NodeId, phase: Phase, reason: &str, txs: impl Iterator<Item = &'a mpsc::Sender<Input>>) {
    for tx in txs {
        let _ = tx.send(failed(to, phase, reason.to_string())).await;
    }
}
