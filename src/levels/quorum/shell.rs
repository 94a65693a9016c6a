//! The quorum level's I/O shell around the sans-I/O [`Coordinator`].
//!
//! For one client operation it sends the coordinator's messages to all
//! replicas in parallel — to this node's own store directly, to peers over
//! the peer service (`ReadCells` for reads, `Replicate` for writes; the
//! receiver merges LWW and fsyncs before acknowledging) — and feeds replies,
//! failures and the deadline back in. The answer comes as soon as a
//! majority of the current phase answered; slower replicas are not awaited.
//!
//! New versions come from the node's clock, above everything the read phase
//! saw, and are covered by the persisted stamp reservation before any
//! replica sees them (see `store::Store::ensure_reserved`).
//!
//! Read fan-out: with [`ReadFanout::Majority`] a read phase asks this node
//! and the peers [`ReadPlanner`] puts first, and the rest after the
//! planner's hedge delay or at the first failure.
//!
//! Configurations (docs/consistency.md, "Changing the replica set"): each
//! coordinator starts in the configuration the node holds ([`HeldConfig`])
//! and every message carries the coordinator's configuration; every answer
//! comes back tagged with the epoch it was sent at ([`Input::AtEpoch`]).
//! A replica that holds a newer configuration refuses
//! ([`Input::StaleConfig`]): the node adopts it (durably) and the
//! coordinator runs its phase again in it. This node's own replica follows
//! the same rule ([`HeldConfig::serve_at`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::hedge::ReadPlanner;
use super::held::{HeldConfig, Served};
use super::mux::{Mux, Outgoing};
use super::{
    Coordinator, Effect, Input, Message, Op, Outcome, Phase, QuorumConfig, QuorumError, ReadFanout, ReplicaConfig,
};
use crate::clock::{NodeId, Version};
use crate::levels::LevelError;
use crate::metrics::{inc, Metrics};
use crate::node::peers::Peers;
use crate::store::{Cell, Store, StoreError, WriteOp};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Inputs a coordinator's queue holds per member of its configuration: one
/// answer per phase and epoch it sent in, with room for refusals; a full
/// queue drops an answer (the operation then waits for the others or its
/// deadline).
pub const INPUTS_QUEUED_PER_MEMBER: usize = 8;

pub struct Quorum {
    store: Arc<Store>,
    peers: Arc<Peers>,
    mux: Mux,
    held: Arc<HeldConfig>,
    config: QuorumConfig,
    planner: ReadPlanner,
    metrics: Arc<Metrics>,
}

impl Quorum {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<Store>,
        peers: Arc<Peers>,
        held: Arc<HeldConfig>,
        config: QuorumConfig,
        max_value_bytes: usize,
        metrics: Arc<Metrics>,
        cancel: CancellationToken,
        tracker: &TaskTracker,
    ) -> Quorum {
        let mux = Mux::start(peers.clone(), max_value_bytes, cancel, tracker);
        Quorum { store, peers, mux, held, config, planner: ReadPlanner::new(), metrics }
    }

    /// The replica configuration this node holds (coordinates in, and
    /// serves as a replica under).
    pub fn replica_config(&self) -> ReplicaConfig {
        (*self.held.current()).clone()
    }

    pub fn held(&self) -> &Arc<HeldConfig> {
        &self.held
    }

    /// Linearizable read of one key (tombstones come back as such).
    pub async fn get(&self, key: Bytes, timeout: Duration) -> Result<Option<Cell>, LevelError> {
        inc(&self.metrics.quorum_gets);
        match self.run(Op::get(key.clone()), timeout).await? {
            Outcome::Get { cell, imposed } => {
                if imposed {
                    inc(&self.metrics.read_imposes);
                    tracing::debug!(key = ?key, "quorum get imposed the newest value on a majority");
                }
                Ok(cell)
            }
            Outcome::Set { .. } => unreachable!("a get answers with a cell"),
        }
    }

    /// Writes `value` (`None` deletes); returns the version written.
    pub async fn write(&self, key: Bytes, value: Option<Bytes>, timeout: Duration) -> Result<Version, LevelError> {
        inc(&self.metrics.quorum_writes);
        let op = match value {
            Some(v) => Op::set(key, v),
            None => Op::del(key),
        };
        match self.run(op, timeout).await? {
            Outcome::Set { version } => Ok(version),
            Outcome::Get { .. } => unreachable!("a set answers with a version"),
        }
    }

    /// Writes `cell` (made elsewhere: a Raft command's result) back to a
    /// majority of replicas, so that every later quorum read sees it.
    /// Failing is `Unavailable` (the cell stays where it already is).
    /// `applied_at`: the Raft applied index at which `cell` was made, or 0
    /// (see [`Message::Write`]).
    pub async fn impose(&self, key: Bytes, cell: Cell, applied_at: u64, timeout: Duration) -> Result<(), LevelError> {
        inc(&self.metrics.write_backs);
        match self.run(Op::Impose { key, cell, applied_at }, timeout).await? {
            Outcome::Get { .. } => Ok(()),
            Outcome::Set { .. } => unreachable!("an impose answers like a get"),
        }
    }

    async fn run(&self, op: Op, timeout: Duration) -> Result<Outcome, LevelError> {
        let deadline = Instant::now() + timeout;
        let start = self.held.current();
        let mut coord = Coordinator::with_config(op, (*start).clone(), self.config.clone())?;
        let started = Instant::now();
        let is_get = matches!(coord.op(), Op::Get { .. });
        if is_get && self.config.read_fanout == ReadFanout::Majority {
            coord.prefer(self.planner.order(self.peers.self_id(), coord.replicas(), started));
        }
        let hedge_delay = self.planner.hedge_delay();
        let hedge_at = started + hedge_delay;
        // Until a get's read phase reached its majority (the hedge delay
        // follows gets' read phases).
        let mut reading = is_get;
        let mut hedged = false;
        // Sized for a joint configuration of the largest sets.
        let (tx, mut rx) = mpsc::channel::<Input>(INPUTS_QUEUED_PER_MEMBER * 2 * super::MAX_REPLICAS + 2);
        // The configuration the coordinator's messages go out in.
        let mut sending = start;
        let mut effects: VecDeque<Effect> = coord.step(Input::Start).into();
        loop {
            while let Some(effect) = effects.pop_front() {
                match effect {
                    Effect::Send { to, msg } => {
                        if *sending != *coord.replica_config() {
                            sending = Arc::new(coord.replica_config().clone());
                        }
                        self.send(to, msg, sending.clone(), deadline, tx.clone(), is_get)
                    }
                    Effect::NeedVersion { above } => {
                        // Nothing is written yet: a floor out of the clock's
                        // range fails this operation alone.
                        let v = self.store.clock().next_after(above).map_err(StoreError::from)?;
                        let input = match self.store.ensure_reserved(v.hlc).await {
                            Ok(()) => Input::Version(v),
                            // Cannot make the stamp durable: fail cleanly before sending it.
                            Err(e) => {
                                tracing::error!(error = %e, "cannot persist the stamp reservation");
                                Input::Deadline
                            }
                        };
                        effects.extend(coord.step(input));
                    }
                    Effect::Done(result) => return result.map_err(|e| self.error(e)),
                }
            }
            let input = tokio::select! {
                Some(input) = rx.recv() => input,
                _ = tokio::time::sleep_until(hedge_at), if coord.holds_back() => {
                    hedged = true;
                    inc(&self.metrics.quorum_read_hedges);
                    self.planner.avoid(&coord.unanswered(), Instant::now());
                    Input::Hedge
                }
                _ = tokio::time::sleep_until(deadline) => Input::Deadline,
            };
            if let Input::AtEpoch { reply, .. } = &input {
                if let Input::Failed { from, phase: Phase::Read, .. } = **reply {
                    if from != self.peers.self_id() {
                        self.planner.avoid(&[from], Instant::now());
                    }
                }
            }
            if let Input::StaleConfig { from, config } = &input {
                // Adopted by the node too, before this coordinator sends in it.
                if config.epoch > coord.epoch() {
                    inc(&self.metrics.quorum_stale_config_restarts);
                    if let Err(e) = self.held.adopt(config).await {
                        tracing::warn!(replica = from, error = %e, "cannot adopt a newer quorum configuration");
                        effects.extend(coord.step(Input::Deadline));
                        continue;
                    }
                }
            }
            effects.extend(coord.step(input));
            if reading && coord.phase() != Some(Phase::Read) {
                reading = false;
                // A read that waited for a stalled peer counts as the delay
                // it was given: one dead peer must not push the delay to its
                // maximum (the average still rises when every read is slow).
                let took = if hedged { started.elapsed().min(hedge_delay) } else { started.elapsed() };
                self.planner.observe_read_phase(took);
            }
        }
    }

    fn error(&self, e: QuorumError) -> LevelError {
        match e {
            QuorumError::Unavailable { .. } => {
                inc(&self.metrics.quorum_unavailable);
                LevelError::Quorum(e)
            }
            QuorumError::Indeterminate { .. } => LevelError::Quorum(e),
        }
    }

    /// Delivers one message, sent in `config`, to one replica; its answer
    /// (or failure) comes back on `tx`. Peers get it through the batching
    /// mux; this node's own replica is read at once (in place when the
    /// configuration is settled, else in a task that waits for it) and
    /// written through the store's writer, under the replica rule.
    fn send(
        &self,
        to: NodeId,
        msg: Message,
        config: Arc<ReplicaConfig>,
        deadline: Instant,
        tx: mpsc::Sender<Input>,
        in_place: bool,
    ) {
        let me = self.peers.self_id();
        if to != me {
            self.mux.send(to, Outgoing { msg, config, deadline, reply: tx });
            return;
        }
        if let (Message::Read { key }, true) = (&msg, in_place) {
            // This node's own cell, read in place when the configuration is
            // settled: no task and no wake-up for the commonest message.
            let epoch = config.epoch;
            if let Some(cell) = self.held.try_serve_now(&config, || self.store.get_cell(key)) {
                let reply = match cell {
                    Ok(cell) => Input::ReadReply { from: me, cell },
                    Err(e) => Input::Failed { from: me, phase: Phase::Read, reason: e.to_string() },
                };
                // The queue has room for every member's answers of a phase.
                if tx.try_send(Input::AtEpoch { epoch, reply: Box::new(reply) }).is_err() {
                    tracing::warn!("quorum coordinator queue full; own read answer dropped");
                }
                return;
            }
        }
        let (store, held) = (self.store.clone(), self.held.clone());
        tokio::spawn(async move {
            let (phase, epoch) = (msg.phase(), config.epoch);
            let failed =
                |reason: String| Input::AtEpoch { epoch, reply: Box::new(Input::Failed { from: me, phase, reason }) };
            let input = match held.serve_at(&config, local(&store, msg)).await {
                Ok(Served::Served(Ok(input))) => Input::AtEpoch { epoch, reply: Box::new(input) },
                Ok(Served::Served(Err(reason))) => failed(reason),
                Ok(Served::Refused(held)) if held.epoch > epoch => {
                    Input::StaleConfig { from: me, config: (*held).clone() }
                }
                Ok(Served::Refused(held)) => {
                    failed(format!("refused: this node holds configuration epoch {}", held.epoch))
                }
                Err(e) => failed(e.to_string()),
            };
            let _ = tx.send(input).await;
        });
    }
}

/// Whether this replica holds a write-back's cell already: it has applied
/// (durably) the Raft entries up to `applied_at`, which merged the cell
/// (see [`Message::Write`]). `applied_at = 0` is never held.
pub fn holds_applied(store: &Store, applied_at: u64) -> bool {
    applied_at > 0 && store.raft_applied() >= applied_at
}

async fn local(store: &Store, msg: Message) -> Result<Input, String> {
    let me = store.clock().node_id();
    match msg {
        Message::Read { key } => {
            Ok(Input::ReadReply { from: me, cell: store.get_cell(&key).map_err(|e| e.to_string())? })
        }
        Message::Write { key, cell, applied_at } => {
            if !holds_applied(store, applied_at) {
                store.write(vec![WriteOp::Merge { key, cell }], true).await.map_err(|e| e.to_string())?;
            }
            Ok(Input::WriteAck { from: me })
        }
    }
}
