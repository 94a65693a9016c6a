//! Raft messages between nodes, over the peer gRPC service.
//!
//! One task per peer drains a bounded queue into one long-lived `Raft`
//! stream, sending what accumulated as one batch (batching under load, one
//! message when idle). A stream instead of an RPC per batch: no per-batch
//! HTTP/2 stream, headers and reply, and no waiting for the reply before the
//! next batch (a follower's heartbeat answer, on which every linearizable
//! read waits, goes out at once). Raft tolerates loss, so a full queue drops
//! messages and a broken stream loses what was in it; either way Raft is
//! told the peer is unreachable and retransmits. A peer that stops reading
//! (paused, cut off) is noticed by the channel's HTTP/2 keep-alive, which
//! breaks the stream; the task then reopens it. Snapshot messages go
//! through their own task that streams the snapshot file in chunks and
//! reports the outcome back to Raft.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use protobuf::Message as PbMessage;
use raft::eraftpb::{Message, MessageType};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::snapshot::{Snapshots, CHUNK_BYTES};
use crate::clock::NodeId;
use crate::node::peers::{call, request, Peers};
use crate::proto::peer::{RaftBatch, SnapshotChunk};

/// Messages waiting per peer; beyond this they are dropped (Raft resends).
pub const PEER_QUEUE_MESSAGES: usize = 4096;
/// Raft messages sent to one peer in one `RaftBatch` at most.
pub const MAX_SEND_BATCH_MESSAGES: usize = 256;
/// Approximate bytes of one `RaftBatch` before it is cut.
pub const MAX_SEND_BATCH_BYTES: usize = 8 * 1024 * 1024;
/// Batches waiting to go into a peer's stream; beyond this they are
/// dropped (the peer is not reading: Raft resends).
pub const STREAM_QUEUE_BATCHES: usize = 16;
pub const SNAPSHOT_RPC_TIMEOUT_MS: u64 = 120_000;
/// Pause after a stream broke, so a dead peer does not spin the task.
pub const FAILURE_PAUSE_MS: u64 = 50;

/// Set by the driver while this node is catching up after losing its log;
/// every batch sent then says so (see `raft_node::Driver::step`).
#[derive(Default)]
pub struct LostLog {
    pub lost: std::sync::atomic::AtomicBool,
    pub last_index: std::sync::atomic::AtomicU64,
}

/// What the transport tells the Raft driver.
#[derive(Debug)]
pub enum TransportEvent {
    Unreachable(u64),
    SnapshotSent { to: u64, ok: bool },
}

pub struct Transport {
    queues: BTreeMap<u64, mpsc::Sender<Message>>,
    peers: Arc<Peers>,
    snapshots: Arc<Snapshots>,
    events: mpsc::Sender<TransportEvent>,
    lost_log: Arc<LostLog>,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

/// Raft messages and signals arriving from peers.
#[derive(Debug)]
pub enum Inbound {
    Message(Message),
    /// The peer lost its log and holds entries only up to `last_index`.
    LostLog {
        from: u64,
        last_index: u64,
    },
}

impl Transport {
    pub fn start(
        peers: Arc<Peers>,
        snapshots: Arc<Snapshots>,
        events: mpsc::Sender<TransportEvent>,
        lost_log: Arc<LostLog>,
        cancel: CancellationToken,
        tracker: &TaskTracker,
    ) -> Transport {
        let mut t =
            Transport { queues: BTreeMap::new(), peers, snapshots, events, lost_log, tracker: tracker.clone(), cancel };
        for id in t.peers.ids() {
            t.open(id as u64);
        }
        t
    }

    /// The member set the transport sends to.
    pub fn peers(&self) -> &Arc<Peers> {
        &self.peers
    }

    /// Starts the send loop to member `to`; `None` when `to` is not a member.
    fn open(&mut self, to: u64) -> Option<&mpsc::Sender<Message>> {
        if !self.peers.contains(to as NodeId) || to == self.peers.self_id() as u64 {
            return None;
        }
        let (tx, rx) = mpsc::channel(PEER_QUEUE_MESSAGES);
        self.tracker.spawn(send_loop(
            to as NodeId,
            self.peers.clone(),
            rx,
            self.events.clone(),
            self.lost_log.clone(),
            self.cancel.clone(),
        ));
        self.queues.insert(to, tx);
        self.queues.get(&to)
    }

    /// Queues `msgs` for their peers. A member added since the last call
    /// gets its send loop here; a removed member's loop has ended, and its
    /// messages are dropped.
    pub fn send(&mut self, msgs: Vec<Message>) {
        for m in msgs {
            let to = m.to;
            if m.get_msg_type() == MessageType::MsgSnapshot {
                self.tracker.spawn(send_snapshot(
                    to,
                    m,
                    self.peers.clone(),
                    self.snapshots.clone(),
                    self.events.clone(),
                    self.cancel.clone(),
                ));
                continue;
            }
            if self.queues.get(&to).is_none_or(|q| q.is_closed()) {
                self.queues.remove(&to);
                if self.open(to).is_none() {
                    tracing::debug!(to, "raft message for a node that is not a member dropped");
                    continue;
                }
            }
            let q = self.queues.get(&to).expect("queue opened above");
            if q.try_send(m).is_err() {
                let _ = self.events.try_send(TransportEvent::Unreachable(to));
            }
        }
    }
}

async fn send_loop(
    to: NodeId,
    peers: Arc<Peers>,
    mut rx: mpsc::Receiver<Message>,
    events: mpsc::Sender<TransportEvent>,
    lost_log: Arc<LostLog>,
    cancel: CancellationToken,
) {
    loop {
        // A member that was removed gets no more messages.
        let Some(mut client) = peers.client(to) else {
            tracing::debug!(to, "raft send loop ends: no longer a member");
            return;
        };
        // An idle link holds no stream: open one for the first message.
        let first = tokio::select! {
            _ = cancel.cancelled() => return,
            m = rx.recv() => match m { Some(m) => m, None => return },
        };
        let (stream_tx, stream_rx) = mpsc::channel::<RaftBatch>(STREAM_QUEUE_BATCHES);
        let mut rpc = std::pin::pin!(client.raft(tonic::Request::new(ReceiverStream::new(stream_rx))));
        let mut next = Some(first);
        let why = loop {
            let m = match next.take() {
                Some(m) => m,
                None => tokio::select! {
                    _ = cancel.cancelled() => return,
                    r = &mut rpc => break match r {
                        Ok(_) => "the peer ended the stream".to_string(),
                        Err(s) => {
                            if crate::node::peers::is_removed_status(&s) {
                                peers.mark_removed(format!("node {to} refused its Raft messages: {}", s.message()));
                            }
                            s.message().to_string()
                        }
                    },
                    m = rx.recv() => match m { Some(m) => m, None => return },
                },
            };
            match stream_tx.try_send(batch_from(m, &mut rx, &peers, &lost_log)) {
                Ok(()) => {}
                // The peer does not keep up (or is paused): drop, Raft resends.
                Err(mpsc::error::TrySendError::Full(_)) => {
                    let _ = events.try_send(TransportEvent::Unreachable(to as u64));
                }
                Err(mpsc::error::TrySendError::Closed(_)) => break "the stream closed".to_string(),
            }
        };
        // Whatever was in the broken stream may be lost: Raft must resend.
        tracing::trace!(to, error = %why, "raft stream ended");
        let _ = events.try_send(TransportEvent::Unreachable(to as u64));
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(FAILURE_PAUSE_MS)) => {}
        }
    }
}

/// `first` and whatever else is queued, up to the batch limits.
fn batch_from(first: Message, rx: &mut mpsc::Receiver<Message>, peers: &Peers, lost_log: &LostLog) -> RaftBatch {
    use std::sync::atomic::Ordering;
    let encode = |m: Message| Bytes::from(m.write_to_bytes().expect("encode raft message"));
    let mut messages = vec![encode(first)];
    let mut bytes = messages[0].len();
    while messages.len() < MAX_SEND_BATCH_MESSAGES && bytes < MAX_SEND_BATCH_BYTES {
        match rx.try_recv() {
            Ok(m) => {
                let b = encode(m);
                bytes += b.len();
                messages.push(b);
            }
            Err(_) => break,
        }
    }
    RaftBatch {
        from_node: peers.self_id(),
        messages,
        lost_log: lost_log.lost.load(Ordering::SeqCst),
        log_last_index: lost_log.last_index.load(Ordering::SeqCst),
    }
}

async fn send_snapshot(
    to: u64,
    msg: Message,
    peers: Arc<Peers>,
    snapshots: Arc<Snapshots>,
    events: mpsc::Sender<TransportEvent>,
    cancel: CancellationToken,
) {
    let ok = tokio::select! {
        _ = cancel.cancelled() => false,
        r = stream_snapshot(to as NodeId, msg, &peers, &snapshots) => match r {
            Ok(bytes) => {
                tracing::info!(to, bytes, "snapshot sent");
                true
            }
            Err(e) => {
                tracing::warn!(to, error = %e, "snapshot send failed");
                false
            }
        },
    };
    let _ = events.send(TransportEvent::SnapshotSent { to, ok }).await;
}

async fn stream_snapshot(to: NodeId, msg: Message, peers: &Peers, snapshots: &Snapshots) -> Result<u64, String> {
    let name = String::from_utf8(msg.get_snapshot().get_data().to_vec()).map_err(|e| e.to_string())?;
    let path = snapshots.file(&name).map_err(|e| e.to_string())?;
    let mut file = tokio::fs::File::open(&path).await.map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let header = Bytes::from(msg.write_to_bytes().map_err(|e| e.to_string())?);
    let from = peers.self_id();
    let (tx, rx) = mpsc::channel::<SnapshotChunk>(4);
    let reader = async move {
        let mut first = true;
        let mut total = 0u64;
        loop {
            let mut buf = vec![0u8; CHUNK_BYTES];
            let mut n = 0;
            while n < CHUNK_BYTES {
                let r = file.read(&mut buf[n..]).await.map_err(|e| e.to_string())?;
                if r == 0 {
                    break;
                }
                n += r;
            }
            buf.truncate(n);
            total += n as u64;
            let last = n < CHUNK_BYTES;
            let chunk = SnapshotChunk {
                from_node: from,
                message: if first { header.clone() } else { Bytes::new() },
                data: Bytes::from(buf),
                last,
            };
            first = false;
            if tx.send(chunk).await.is_err() {
                return Err("snapshot stream closed by the receiver".to_string());
            }
            if last {
                return Ok(total);
            }
        }
    };
    let mut client = peers.client(to).ok_or_else(|| format!("node {to} is not a member"))?;
    let rpc = call(SNAPSHOT_RPC_TIMEOUT_MS, client.snapshot(request(ReceiverStream::new(rx), SNAPSHOT_RPC_TIMEOUT_MS)));
    let (sent, reply) = tokio::join!(reader, rpc);
    reply.map_err(|s| s.message().to_string())?;
    sent
}
