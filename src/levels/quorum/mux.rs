//! Per-peer batching of quorum messages.
//!
//! Many client operations run at once, each with its own [`Coordinator`]
//! sending one read or write per replica. Sent one by one that is four RPCs
//! per `set` and, on the peer, one write job (and fsync share) each. The mux
//! gives every peer a queue and one long-lived `Quorum` stream: whatever
//! reads and writes accumulated while earlier requests were out go as one
//! read request and one write request (one LWW merge batch, one fsync on the
//! peer), and each answer, matched by request id, is routed back to its
//! coordinator as an [`Input`]. The peer answers reads at once and writes
//! when durable, so a slow fsync does not stall reads. A stream instead of
//! an RPC per batch saves the per-call HTTP/2 stream, headers and task
//! hand-offs on both sides. When the stream breaks, every request in it
//! fails (the coordinator counts that replica as failed) and it is reopened.
//!
//! [`Coordinator`]: super::Coordinator

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Input, Message, Phase, ReplicaConfig};
use crate::clock::NodeId;
use crate::node::peer_batch::{cell_bytes, read_keys_per_request, ByteBudget};
use crate::node::peers::Peers;
use crate::proto::peer::{
    self as peer_proto, quorum_request, CellsRequest, QuorumReply, QuorumRequest, ReadCellsRequest,
};
use crate::wire::{cell_from_peer, cell_to_peer, config_from_peer, config_to_peer};

/// Messages queued per peer; a full queue fails the message at once (the
/// coordinator counts it as that replica failing).
pub const PEER_QUEUE_MESSAGES: usize = 8192;
/// Messages per turn (one read and one write request) at most.
pub const MAX_PEER_BATCH_MESSAGES: usize = 512;
/// Bytes of cells in one write request at most (a larger cell goes alone),
/// so that a request fits in one peer message whatever the values' sizes.
pub const MAX_QUORUM_WRITE_BATCH_BYTES: usize = 16 * 1024 * 1024;
/// Bytes of the answer to one read request, counting every value at the
/// largest accepted size: this bounds the keys per read request (see
/// [`read_keys_per_request`]). An answer over the peer message limit would
/// break the stream and fail every request in it.
pub const MAX_QUORUM_READ_REPLY_BYTES: usize = 32 * 1024 * 1024;

/// One message for one peer, sent in configuration `config` (the
/// coordinator's), answered on `reply`.
pub struct Outgoing {
    pub msg: Message,
    pub config: Arc<ReplicaConfig>,
    pub deadline: Instant,
    pub reply: mpsc::Sender<Input>,
}

pub struct Mux {
    /// One queue (and task) per peer, opened at the first message to it:
    /// members that join later get one too.
    queues: Mutex<BTreeMap<NodeId, mpsc::Sender<Outgoing>>>,
    peers: Arc<Peers>,
    read_keys: usize,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl Mux {
    /// `max_value_bytes` is the cluster's `--max-value-bytes`: it bounds
    /// how many keys one read request may name.
    pub fn start(peers: Arc<Peers>, max_value_bytes: usize, cancel: CancellationToken, tracker: &TaskTracker) -> Mux {
        let read_keys = read_keys_per_request(max_value_bytes, MAX_QUORUM_READ_REPLY_BYTES, MAX_PEER_BATCH_MESSAGES);
        Mux { queues: Mutex::new(BTreeMap::new()), peers, read_keys, cancel, tracker: tracker.clone() }
    }

    /// Queues `out` for `to`; if that is impossible the failure is
    /// reported to the coordinator right away.
    pub fn send(&self, to: NodeId, out: Outgoing) {
        let queue = {
            let mut queues = self.queues.lock().expect("mux queues lock");
            let open = queues.get(&to).filter(|q| !q.is_closed()).cloned();
            match open {
                Some(q) => Some(q),
                None if self.peers.client(to).is_some() => {
                    let (tx, rx) = mpsc::channel(PEER_QUEUE_MESSAGES);
                    self.tracker.spawn(run(to, self.peers.clone(), rx, self.read_keys, self.cancel.clone()));
                    queues.insert(to, tx.clone());
                    Some(tx)
                }
                None => None,
            }
        };
        let Some(q) = queue else {
            let input = failed(to, out.msg.phase(), out.config.epoch, format!("unknown peer {to}"));
            let _ = out.reply.try_send(input);
            return;
        };
        if let Err(e) = q.try_send(out) {
            let out = match e {
                mpsc::error::TrySendError::Full(o) | mpsc::error::TrySendError::Closed(o) => o,
            };
            let input = failed(to, out.msg.phase(), out.config.epoch, "too many quorum messages queued".into());
            let _ = out.reply.try_send(input);
        }
    }
}

/// A failed request of `phase` to `from`, sent at configuration `epoch`.
fn failed(from: NodeId, phase: Phase, epoch: u64, reason: String) -> Input {
    Input::AtEpoch { epoch, reply: Box::new(Input::Failed { from, phase, reason }) }
}

/// Requests (a batch of reads or of writes) in flight per peer at most.
/// While they are out, new messages queue and go out together as the next
/// request, so the limit also sets how well messages batch. 2, 4 and 8
/// measured alike within noise at 32 and 256 clients; 8 was a little ahead.
pub const MAX_IN_FLIGHT_REQUESTS: usize = 8;
/// Pause after a stream broke before opening the next; messages that come
/// meanwhile fail at once, as the peer is unreachable.
pub const FAILURE_PAUSE_MS: u64 = 50;

/// Who waits for one request's answer: one coordinator per read key (in
/// key order), or per written cell; all sent at configuration `epoch`.
struct Waiting {
    phase: Phase,
    epoch: u64,
    replies: Vec<mpsc::Sender<Input>>,
}

impl Waiting {
    fn fail(&self, from: NodeId, reason: &str) {
        for tx in &self.replies {
            let _ = tx.try_send(failed(from, self.phase, self.epoch, reason.to_string()));
        }
    }
}

async fn run(
    to: NodeId,
    peers: Arc<Peers>,
    mut rx: mpsc::Receiver<Outgoing>,
    read_keys: usize,
    cancel: CancellationToken,
) {
    let Some(mut client) = peers.client(to) else { return };
    // The queue is dropped with this task: `Mux::send` then opens another.
    let me = peers.self_id();
    let mut next_id = 0u64;
    loop {
        // An idle link holds no stream: open one for the first message.
        let first = tokio::select! {
            _ = cancel.cancelled() => return,
            m = rx.recv() => match m { Some(m) => m, None => return },
        };
        // Room for every request that may be waiting: a turn starts below
        // the limit and adds at most two (a read and a write).
        let (req_tx, req_rx) = mpsc::channel::<QuorumRequest>(MAX_IN_FLIGHT_REQUESTS + 2);
        let mut call = std::pin::pin!(client.quorum(ReceiverStream::new(req_rx)));
        let mut replies: Option<tonic::Streaming<QuorumReply>> = None;
        // Ordered, so that failing them all wakes their callers in one fixed
        // order (a seeded simulation relies on it).
        let mut waiting: BTreeMap<u64, Waiting> = BTreeMap::new();
        let mut next = Some(first);
        // A message that did not fit in the last turn's requests: it opens
        // the next turn, before anything newer.
        let mut carried: Option<Outgoing> = None;
        let why = loop {
            if let Some(first) = next.take() {
                let (reqs, rest) = requests(me, first, &mut rx, read_keys);
                assert!(carried.is_none(), "a turn starts only with nothing carried over");
                carried = rest;
                for (mut req, w) in reqs {
                    next_id += 1;
                    req.id = next_id;
                    match req_tx.try_send(req) {
                        Ok(()) => {
                            waiting.insert(next_id, w);
                        }
                        Err(_) => w.fail(to, "too many quorum requests in flight"),
                    }
                }
            }
            if carried.is_some() && waiting.len() < MAX_IN_FLIGHT_REQUESTS {
                next = carried.take();
                continue;
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                r = &mut call, if replies.is_none() => match r {
                    Ok(resp) => replies = Some(resp.into_inner()),
                    Err(s) => break s.message().to_string(),
                },
                r = async { replies.as_mut().expect("guarded").message().await }, if replies.is_some() => match r {
                    Ok(Some(reply)) => deliver(to, reply, &mut waiting),
                    Ok(None) => break "the peer ended the stream".to_string(),
                    Err(s) => break s.message().to_string(),
                },
                m = rx.recv(), if waiting.len() < MAX_IN_FLIGHT_REQUESTS && carried.is_none() => match m {
                    Some(m) => next = Some(m),
                    None => return,
                },
            }
        };
        // Requests in the broken stream will not be answered.
        tracing::debug!(to, error = %why, "quorum stream ended");
        for w in waiting.values() {
            w.fail(to, &why);
        }
        if let Some(m) = carried.take() {
            let _ = m.reply.try_send(failed(to, m.msg.phase(), m.config.epoch, why.clone()));
        }
        let pause = tokio::time::sleep(Duration::from_millis(FAILURE_PAUSE_MS));
        tokio::pin!(pause);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = &mut pause => break,
                m = rx.recv() => match m {
                    Some(m) => {
                        let _ = m.reply.try_send(failed(to, m.msg.phase(), m.config.epoch, why.clone()));
                    }
                    None => return,
                },
            }
        }
    }
}

/// `first` and whatever else is queued (up to [`MAX_PEER_BATCH_MESSAGES`],
/// skipping messages past their deadline), as at most one read request of
/// at most `read_keys` keys and one write request of at most
/// [`MAX_QUORUM_WRITE_BATCH_BYTES`]; plus the message that did not fit, if
/// any (the first always fits). Every message of a turn was sent in the
/// first one's configuration: a message of another configuration ends the
/// turn (it opens the next), so a request never mixes epochs.
fn requests(
    me: NodeId,
    first: Outgoing,
    rx: &mut mpsc::Receiver<Outgoing>,
    read_keys: usize,
) -> (Vec<(QuorumRequest, Waiting)>, Option<Outgoing>) {
    let now = Instant::now();
    let mut keys = Vec::new();
    let mut readers = Vec::new();
    let mut cells = Vec::new();
    let mut writers = Vec::new();
    let mut write_budget = ByteBudget::new(MAX_PEER_BATCH_MESSAGES, MAX_QUORUM_WRITE_BATCH_BYTES);
    let config = first.config.clone();
    // Adds `o`, or hands it back when its request is full or it was sent
    // in another configuration.
    let mut add = |o: Outgoing| -> Option<Outgoing> {
        if o.deadline <= now {
            return None;
        }
        if !Arc::ptr_eq(&o.config, &config) && *o.config != *config {
            return Some(o);
        }
        match o.msg {
            Message::Read { key } => {
                if keys.len() >= read_keys {
                    return Some(Outgoing { msg: Message::Read { key }, ..o });
                }
                keys.push(key);
                readers.push(o.reply);
            }
            Message::Write { key, cell, applied_at } => {
                let bytes = cell_bytes(key.len(), cell.value.as_ref().map_or(0, |v| v.len()));
                if !write_budget.admits(bytes) {
                    return Some(Outgoing { msg: Message::Write { key, cell, applied_at }, ..o });
                }
                write_budget.add(bytes);
                cells.push(peer_proto::Cell { applied_at, ..cell_to_peer(&key, &cell) });
                writers.push(o.reply);
            }
        }
        None
    };
    let mut rest = add(first);
    assert!(rest.is_none(), "the first message of a turn always fits");
    for _ in 1..MAX_PEER_BATCH_MESSAGES {
        match rx.try_recv() {
            Ok(o) => {
                rest = add(o);
                if rest.is_some() {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    let mut out = Vec::with_capacity(2);
    let epoch = config.epoch;
    let wire = Some(config_to_peer(&config));
    if !keys.is_empty() {
        let body = quorum_request::Body::Read(ReadCellsRequest { from_node: me, keys });
        let req = QuorumRequest { id: 0, body: Some(body), config: wire.clone() };
        out.push((req, Waiting { phase: Phase::Read, epoch, replies: readers }));
    }
    if !cells.is_empty() {
        let body = quorum_request::Body::Write(CellsRequest { from_node: me, cells });
        let req = QuorumRequest { id: 0, body: Some(body), config: wire };
        out.push((req, Waiting { phase: Phase::Write, epoch, replies: writers }));
    }
    (out, rest)
}

/// Hands one answer to the coordinators waiting for it, tagged with the
/// epoch its request was sent at. `try_send` finds a coordinator's queue
/// full only if it is far behind (see `shell::Quorum::run`); a closed one
/// has finished already.
fn deliver(from: NodeId, reply: QuorumReply, waiting: &mut BTreeMap<u64, Waiting>) {
    let Some(w) = waiting.remove(&reply.id) else {
        tracing::warn!(from, id = reply.id, "quorum answer to no request");
        return;
    };
    if let Some(refused) = reply.refused {
        return match config_from_peer(refused) {
            // The coordinators adopt it and run their phase again.
            Ok(config) if config.epoch > w.epoch => {
                for tx in &w.replies {
                    let _ = tx.try_send(Input::StaleConfig { from, config: config.clone() });
                }
            }
            Ok(config) => w.fail(from, &format!("refused: the replica holds configuration epoch {}", config.epoch)),
            Err(e) => w.fail(from, &format!("refused with an invalid configuration: {e}")),
        };
    }
    if !reply.error.is_empty() {
        return w.fail(from, &reply.error);
    }
    let at = |reply: Input| Input::AtEpoch { epoch: w.epoch, reply: Box::new(reply) };
    match (w.phase, reply.read) {
        (Phase::Write, _) => {
            for tx in &w.replies {
                let _ = tx.try_send(at(Input::WriteAck { from }));
            }
        }
        (Phase::Read, Some(read)) if read.cells.len() == w.replies.len() => {
            for (m, tx) in read.cells.into_iter().zip(&w.replies) {
                let cell = m.cell.filter(|_| m.present).and_then(cell_from_peer).map(|(_, c)| c);
                let _ = tx.try_send(at(Input::ReadReply { from, cell }));
            }
        }
        (Phase::Read, _) => w.fail(from, "malformed quorum read answer"),
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::clock::Version;
    use crate::level::Level;
    use crate::store::Cell;

    fn outgoing(msg: Message, reply: &mpsc::Sender<Input>) -> Outgoing {
        let config = Arc::new(ReplicaConfig::fixed(vec![1, 2, 3]));
        Outgoing { msg, config, deadline: Instant::now() + Duration::from_secs(60), reply: reply.clone() }
    }

    fn write(i: usize, value_bytes: usize) -> Message {
        let cell = Cell::value(Bytes::from(vec![b'v'; value_bytes]), Version::new(1, 1), Level::Quorum);
        Message::Write { key: Bytes::from(format!("k{i}")), cell, applied_at: 0 }
    }

    fn read(i: usize) -> Message {
        Message::Read { key: Bytes::from(format!("k{i}")) }
    }

    /// Runs turns over `msgs` until none is left; the size of each request.
    fn turns(msgs: Vec<Message>, read_keys: usize) -> Vec<(Phase, usize, usize)> {
        let (reply, _replies) = mpsc::channel(1);
        let (tx, mut rx) = mpsc::channel(msgs.len());
        let mut msgs = msgs.into_iter();
        let mut first = Some(outgoing(msgs.next().expect("a message"), &reply));
        for m in msgs {
            tx.try_send(outgoing(m, &reply)).unwrap();
        }
        let mut out = Vec::new();
        while let Some(f) = first.take() {
            let (reqs, rest) = requests(1, f, &mut rx, read_keys);
            for (req, w) in reqs {
                let (n, bytes) = match req.body.expect("a body") {
                    quorum_request::Body::Read(r) => (r.keys.len(), 0),
                    quorum_request::Body::Write(c) => (c.cells.len(), c.cells.iter().map(|c| c.value.len()).sum()),
                };
                assert_eq!(n, w.replies.len());
                out.push((w.phase, n, bytes));
            }
            first = rest;
        }
        out
    }

    #[test]
    fn write_requests_are_cut_by_bytes() {
        // Issue 19, item 7: 100 writes of 1 MiB went as one 100 MiB request
        // (over the 80 MiB peer message limit) under the count cap alone.
        let value_bytes = 1024 * 1024;
        let out = turns((0..100).map(|i| write(i, value_bytes)).collect(), 512);
        assert_eq!(out.iter().map(|&(_, n, _)| n).sum::<usize>(), 100);
        assert!(out.len() > 1);
        for &(phase, _, bytes) in &out {
            assert_eq!(phase, Phase::Write);
            assert!(bytes <= MAX_QUORUM_WRITE_BATCH_BYTES);
        }
    }

    #[test]
    fn read_requests_are_cut_by_keys_and_keep_writes_in_their_turn() {
        let mut msgs: Vec<Message> = (0..20).map(read).collect();
        msgs.insert(3, write(100, 10));
        let out = turns(msgs, 8);
        assert_eq!(out, vec![(Phase::Read, 8, 0), (Phase::Write, 1, 10), (Phase::Read, 8, 0), (Phase::Read, 4, 0)]);
    }

    #[test]
    fn a_request_never_mixes_configurations() {
        // docs/consistency.md, "Changing the replica set": every request
        // carries one configuration, so messages of two epochs go apart.
        let (reply, _replies) = mpsc::channel(1);
        let (tx, mut rx) = mpsc::channel(8);
        let old = Arc::new(ReplicaConfig::fixed(vec![1, 2, 3]));
        let joint = Arc::new(ReplicaConfig { epoch: 1, current: vec![1, 2, 3], next: Some(vec![2, 3, 4]) });
        let at = |i: usize, config: &Arc<ReplicaConfig>| Outgoing {
            msg: read(i),
            config: config.clone(),
            deadline: Instant::now() + Duration::from_secs(60),
            reply: reply.clone(),
        };
        for (i, c) in [(1, &old), (2, &joint), (3, &joint)] {
            tx.try_send(at(i, c)).unwrap();
        }
        let (reqs, rest) = requests(1, at(0, &old), &mut rx, 512);
        let epochs: Vec<(u64, usize)> =
            reqs.iter().map(|(r, w)| (r.config.as_ref().unwrap().epoch, w.replies.len())).collect();
        assert_eq!(epochs, vec![(0, 2)]);
        let (reqs, rest) = requests(1, rest.expect("the joint message opens the next turn"), &mut rx, 512);
        assert!(rest.is_none());
        let epochs: Vec<(u64, usize)> =
            reqs.iter().map(|(r, w)| (r.config.as_ref().unwrap().epoch, w.replies.len())).collect();
        assert_eq!(epochs, vec![(1, 2)]);
    }

    #[test]
    fn a_single_oversized_write_goes_alone() {
        let out = turns(vec![write(0, 10), write(1, MAX_QUORUM_WRITE_BATCH_BYTES + 1), write(2, 10)], 512);
        assert_eq!(out.iter().map(|&(_, n, _)| n).collect::<Vec<_>>(), vec![1, 1, 1]);
    }
}
