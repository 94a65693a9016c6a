//! The quorum coordinator: a sans-I/O state machine for ONE client operation
//! (get, set or delete of one key) under the ABD protocol.
//!
//! Why it exists: the quorum level must give linearizable reads and writes
//! per key without a leader. ABD does this with two round trips to a
//! majority of replicas; this file is the whole decision logic, kept free of
//! tokio, clocks and RNGs so it can be tested exhaustively in a simulated
//! network and driven by a gRPC shell unchanged.
//!
//! Protocol (ABD, multi-writer variant of Lynch & Shvartsman):
//!
//! - **get**: phase 1 reads the key from all replicas and waits for a
//!   majority. The highest-versioned cell among those replies is the answer.
//!   If every reply of that majority holds exactly that cell (unanimous,
//!   including "all absent"), the answer is already on a majority and is
//!   returned at once. Otherwise phase 2 **read-imposes** (writes back) the
//!   cell to all replicas and answers after a majority acknowledged, so any
//!   later read — whose majority intersects this one — sees at least it.
//! - **Read fan-out** ([`ReadFanout`]): a get's read phase either asks every
//!   replica at once, or asks only a majority first (in the order the shell
//!   prefers, [`Coordinator::prefer`]: this node, then the peer it expects
//!   to answer soonest) and holds the rest back until [`Input::Hedge`] (the
//!   shell's hedge delay passed) or until an asked replica fails. Which
//!   majority answers does not matter to ABD, so both are equally safe;
//!   asking fewer saves a message and a peer's work per read.
//! - **set/del**: phase 1 reads versions from a majority; the shell then
//!   supplies a version strictly above every version seen
//!   ([`Effect::NeedVersion`] / [`Input::Version`]); phase 2 writes the cell
//!   (a tombstone for a delete) to all replicas and answers after a majority
//!   acknowledged.
//!
//! What it promises:
//!
//! - It answers as soon as a majority (⌊N/2⌋+1) of the current phase
//!   answered; it never waits for the slowest replica. Replies are counted
//!   per distinct replica and per phase; duplicates and replies to finished
//!   phases are ignored.
//! - It fails as soon as a majority can no longer be reached
//!   ([`QuorumError::Unavailable`]), or at [`Input::Deadline`]. A set whose
//!   write phase had started fails as [`QuorumError::Indeterminate`]: the
//!   write may have reached some replicas and may still become visible.
//! - After [`Effect::Done`] it emits nothing more.
//! - Every version it writes for a set is strictly greater than every
//!   version it read (asserted).
//! - Configurations ([`ReplicaConfig`], docs/consistency.md, "Changing the
//!   replica set"): a "majority" above is a majority of the configuration's
//!   set and, in a joint configuration, also of its next set; the phase
//!   fails as unavailable when either can no longer be reached. Replies
//!   tagged with another epoch ([`Input::AtEpoch`]) are ignored; on
//!   [`Input::StaleConfig`] with a newer configuration it adopts it and runs
//!   the current phase again from scratch. [`Coordinator::new`] is the
//!   static case (epoch 0, one set): exactly the behaviour above.
//!
//! Driving it: create a [`Coordinator`], call `step(Input::Start)`, perform
//! the returned effects, feed each reply / error / the deadline back with
//! `step`, until an [`Effect::Done`] carries the result.

use std::fmt;

use bytes::Bytes;

use super::config::ReplicaConfig;
use crate::clock::{NodeId, Version};
use crate::level::Level;
use crate::store::Cell;

/// The largest replica set a coordinator accepts.
pub const MAX_REPLICAS: usize = 15;

/// The size of a majority of `replica_count` replicas: ⌊N/2⌋+1.
pub fn majority(replica_count: usize) -> usize {
    replica_count / 2 + 1
}

/// Coordinator settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QuorumConfig {
    /// TEST ONLY, UNSAFE: a get answers the highest version of its read
    /// majority without writing it back first. This breaks linearizability
    /// (a later read may return an older value); the test harness uses it as
    /// a negative control to show the linearizability checker catches it.
    pub skip_read_impose_unsafe: bool,
    /// Which replicas a read phase asks first.
    pub read_fanout: ReadFanout,
}

/// Which replicas a get's read phase asks (a set's version read always
/// asks every member: waiting for the first of all answers sooner).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReadFanout {
    /// Every member at once; the first majority of answers is used.
    #[default]
    All,
    /// A majority first, in the order of [`Coordinator::prefer`]; the others
    /// on [`Input::Hedge`] or as soon as an asked replica fails. A joint
    /// configuration always asks every member.
    Majority,
}

/// One client operation on one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Get {
        key: Bytes,
    },
    /// `value: None` deletes the key (writes a tombstone).
    Set {
        key: Bytes,
        value: Option<Bytes>,
    },
    /// Write back a cell that already exists elsewhere (the result of a
    /// Raft command, which the linearizable level makes visible to quorum
    /// reads before answering): the write phase alone, with `cell` as is.
    /// Answers like a get that imposed `cell`.
    Impose {
        key: Bytes,
        cell: Cell,
        /// The Raft applied index at which `cell` was made (`0`: unknown):
        /// a replica that has applied that far holds it already
        /// ([`Message::Write`]).
        applied_at: u64,
    },
}

impl Op {
    pub fn get(key: impl Into<Bytes>) -> Op {
        Op::Get { key: key.into() }
    }

    pub fn set(key: impl Into<Bytes>, value: impl Into<Bytes>) -> Op {
        Op::Set { key: key.into(), value: Some(value.into()) }
    }

    pub fn del(key: impl Into<Bytes>) -> Op {
        Op::Set { key: key.into(), value: None }
    }

    pub fn key(&self) -> &Bytes {
        match self {
            Op::Get { key } | Op::Set { key, .. } | Op::Impose { key, .. } => key,
        }
    }
}

/// The two round trips of ABD.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// Query: read the key's cell from the replicas.
    Read,
    /// Propagate: write a cell (a set's new cell, or a get's read-impose).
    Write,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Read => "read",
            Phase::Write => "write",
        })
    }
}

/// A request from the coordinator to one replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Answer with the key's cell, if any ([`Input::ReadReply`]).
    Read { key: Bytes },
    /// Store `cell` if it supersedes the key's current cell, then
    /// acknowledge ([`Input::WriteAck`]) — also when it did not supersede.
    /// With `applied_at > 0` (a Raft command's write-back), a replica whose
    /// durable Raft applied index is at least `applied_at` acknowledges
    /// without writing: applying the command merged `cell` there and
    /// fsynced it (`Store::raft_applied`).
    Write { key: Bytes, cell: Cell, applied_at: u64 },
}

impl Message {
    /// The phase a reply (or an error) to this message belongs to; the shell
    /// passes it in [`Input::Failed`].
    pub fn phase(&self) -> Phase {
        match self {
            Message::Read { .. } => Phase::Read,
            Message::Write { .. } => Phase::Write,
        }
    }

    pub fn key(&self) -> &Bytes {
        match self {
            Message::Read { key } | Message::Write { key, .. } => key,
        }
    }
}

/// Everything that can happen to a coordinator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// Begin the operation (emits the read phase's sends).
    Start,
    /// Replica `from` answered a [`Message::Read`].
    ReadReply { from: NodeId, cell: Option<Cell> },
    /// Replica `from` acknowledged a [`Message::Write`].
    WriteAck { from: NodeId },
    /// The request of `phase` to replica `from` failed (RPC error, timeout,
    /// refused connection). For a write this does not mean the replica did
    /// not apply it.
    Failed { from: NodeId, phase: Phase, reason: String },
    /// The version asked for by [`Effect::NeedVersion`]; must be strictly
    /// greater than its `above` (asserted).
    Version(Version),
    /// The operation's deadline passed: finish now if not done.
    Deadline,
    /// The hedge delay passed ([`ReadFanout::Majority`]): ask the replicas
    /// the read phase held back. Nothing happens if none are held back.
    Hedge,
    /// A reply ([`Input::ReadReply`], [`Input::WriteAck`] or
    /// [`Input::Failed`]) to a message sent at configuration `epoch`. It is
    /// ignored unless `epoch` is the coordinator's current epoch, so that
    /// after a restart with a newer configuration no answer to the older
    /// one is counted. A bare reply is taken to be at the current epoch:
    /// right for a static replica set (epoch 0), unsafe while membership
    /// changes — a reconfiguring shell must wrap every reply.
    AtEpoch { epoch: u64, reply: Box<Input> },
    /// Replica `from` refused a message because it knows the newer
    /// configuration `config`: the coordinator adopts it and restarts its
    /// current phase over it (a write phase re-sends the same cell).
    StaleConfig { from: NodeId, config: ReplicaConfig },
}

/// What the shell must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Send `msg` to replica `to` (the shell serves its own node locally)
    /// and feed the reply or the error back.
    Send { to: NodeId, msg: Message },
    /// Feed back [`Input::Version`] with a fresh version of this node
    /// strictly greater than `above` (e.g. `Clock::next_after(above)`).
    /// `above` is [`Version::ZERO`] when no replica had the key.
    NeedVersion { above: Version },
    /// The operation finished; always the last effect of a coordinator.
    Done(Result<Outcome, QuorumError>),
}

/// A successful operation's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The key's cell (`None`: never written; a tombstone: deleted — both
    /// mean "not found" to a client). `imposed`: the get wrote the cell back
    /// to a majority before answering.
    Get { cell: Option<Cell>, imposed: bool },
    /// The version the set or delete was written with.
    Set { version: Version },
}

impl Outcome {
    /// The value a get returns to the client (`None` = not found).
    pub fn value(&self) -> Option<&Bytes> {
        match self {
            Outcome::Get { cell, .. } => cell.as_ref().and_then(|c| c.value.as_ref()),
            Outcome::Set { .. } => None,
        }
    }

    /// Whether a read-impose (write-back) happened.
    pub fn imposed(&self) -> bool {
        matches!(self, Outcome::Get { imposed: true, .. })
    }
}

/// Why an operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuorumError {
    /// Not enough replicas answered the phase. The operation had no effect
    /// on the key's value: a set failed before its write phase, and a get's
    /// write-back (if any) only copied a cell some replica already held.
    #[error(
        "quorum unavailable: {answered} of {total} replicas answered the {phase} phase, {needed} needed{}",
        if *timed_out { " (deadline passed)" } else { "" }
    )]
    Unavailable { answered: usize, needed: usize, total: usize, phase: Phase, timed_out: bool },
    /// A set or delete failed after its write phase started: the write may
    /// have reached some replicas and may or may not become visible later.
    #[error(
        "quorum write indeterminate: {acked} of {total} replicas acknowledged version {version}, {needed} needed{}; \
         the write may or may not take effect",
        if *timed_out { " (deadline passed)" } else { "" }
    )]
    Indeterminate { acked: usize, needed: usize, total: usize, version: Version, timed_out: bool },
}

/// An unusable replica list.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplicaSetError {
    #[error("a quorum operation needs at least one replica")]
    Empty,
    #[error("{count} replicas given, at most {max} supported")]
    TooMany { count: usize, max: usize },
    #[error("replica {0} is listed twice")]
    Duplicate(NodeId),
}

/// One replica's answer in the current phase.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Answer<T> {
    Pending,
    Ok(T),
    Failed,
}

/// The answers of one phase, one slot per replica (same order as the
/// coordinator's replica list).
#[derive(Clone, Debug)]
struct Tally<T> {
    answers: Vec<Answer<T>>,
    ok: usize,
    failed: usize,
}

impl<T> Tally<T> {
    fn new(replica_count: usize) -> Self {
        Tally { answers: (0..replica_count).map(|_| Answer::Pending).collect(), ok: 0, failed: 0 }
    }

    /// Records the first answer of replica `slot`; returns false (and
    /// changes nothing) for a duplicate.
    fn record(&mut self, slot: usize, answer: Answer<T>) -> bool {
        if !matches!(self.answers[slot], Answer::Pending) {
            return false;
        }
        match answer {
            Answer::Pending => unreachable!("recording a pending answer"),
            Answer::Ok(_) => self.ok += 1,
            Answer::Failed => self.failed += 1,
        }
        self.answers[slot] = answer;
        // Invariant: each replica is counted at most once per phase.
        assert!(self.ok + self.failed <= self.answers.len(), "a replica was counted twice");
        debug_assert_eq!(self.ok, self.answers.iter().filter(|a| matches!(a, Answer::Ok(_))).count());
        debug_assert_eq!(self.failed, self.answers.iter().filter(|a| matches!(a, Answer::Failed)).count());
        true
    }

    fn oks(&self) -> impl Iterator<Item = &T> {
        self.answers.iter().filter_map(|a| match a {
            Answer::Ok(t) => Some(t),
            _ => None,
        })
    }
}

/// Why the write phase writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WriteKind {
    /// A get writes back the cell it will return.
    Impose,
    /// A set or delete writes its new cell.
    NewVersion,
}

#[derive(Debug)]
enum State {
    NotStarted,
    Reading(Tally<Option<Cell>>),
    /// A set read a majority; waiting for the shell's version.
    AwaitingVersion {
        above: Version,
    },
    Writing {
        kind: WriteKind,
        cell: Cell,
        acks: Tally<()>,
    },
    Done,
}

/// The coordinator of one quorum operation. See the module docs.
#[derive(Debug)]
pub struct Coordinator {
    op: Op,
    /// The configuration the current phase runs in; only grows (by epoch).
    replica_config: ReplicaConfig,
    /// `replica_config.members()`: the slot order of the phase tallies.
    replicas: Vec<NodeId>,
    config: QuorumConfig,
    state: State,
    /// Highest version seen in the read phase (for the write invariant).
    max_read: Option<Version>,
    /// The order in which a [`ReadFanout::Majority`] read asks replicas.
    preferred: Vec<NodeId>,
    /// Members the current read phase has not asked yet.
    held_back: Vec<NodeId>,
}

impl Coordinator {
    /// A coordinator for `op` over the static replica set `replicas`
    /// (which include this node): configuration epoch 0, a quorum is a
    /// majority.
    pub fn new(op: Op, replicas: Vec<NodeId>, config: QuorumConfig) -> Result<Self, ReplicaSetError> {
        Coordinator::with_config(op, ReplicaConfig::fixed(replicas), config)
    }

    /// A coordinator for `op` in `replica_config` (possibly joint: then
    /// every phase needs a majority of both sets).
    pub fn with_config(op: Op, replica_config: ReplicaConfig, config: QuorumConfig) -> Result<Self, ReplicaSetError> {
        replica_config.validate()?;
        let replicas = replica_config.members();
        Ok(Coordinator {
            op,
            replica_config,
            replicas,
            config,
            state: State::NotStarted,
            max_read: None,
            preferred: Vec::new(),
            held_back: Vec::new(),
        })
    }

    /// The order in which a [`ReadFanout::Majority`] read phase asks the
    /// replicas: those listed first (members only, in this order), then the
    /// other members in their configuration order. Set before
    /// [`Input::Start`]; a restart in a newer configuration keeps it.
    pub fn prefer(&mut self, order: Vec<NodeId>) {
        self.preferred = order;
    }

    /// Whether the current read phase holds replicas back for a hedge: the
    /// shell then arms its hedge timer.
    pub fn holds_back(&self) -> bool {
        matches!(self.state, State::Reading(_)) && !self.held_back.is_empty()
    }

    /// The replicas asked in the current phase that have not answered.
    pub fn unanswered(&self) -> Vec<NodeId> {
        let answers = match &self.state {
            State::Reading(t) => t.answers.iter().map(|a| matches!(a, Answer::Pending)).collect::<Vec<_>>(),
            State::Writing { acks, .. } => acks.answers.iter().map(|a| matches!(a, Answer::Pending)).collect(),
            _ => return Vec::new(),
        };
        self.replicas
            .iter()
            .zip(answers)
            .filter(|(r, pending)| *pending && !self.held_back.contains(r))
            .map(|(r, _)| *r)
            .collect()
    }

    /// The configuration epoch every message of the current phase is sent
    /// at. After a `step`, every [`Effect::Send`] it returned is at this
    /// epoch (a restart happens inside one step, before its sends).
    pub fn epoch(&self) -> u64 {
        self.replica_config.epoch
    }

    /// The configuration the coordinator works in (the newest it learnt).
    pub fn replica_config(&self) -> &ReplicaConfig {
        &self.replica_config
    }

    pub fn op(&self) -> &Op {
        &self.op
    }

    pub fn replicas(&self) -> &[NodeId] {
        &self.replicas
    }

    /// Replies needed per phase from the (current) replica set.
    pub fn majority(&self) -> usize {
        majority(self.replica_config.current.len())
    }

    /// The phase in progress (`None` before start, while waiting for a
    /// version, and when done).
    pub fn phase(&self) -> Option<Phase> {
        match self.state {
            State::Reading(_) => Some(Phase::Read),
            State::Writing { .. } => Some(Phase::Write),
            _ => None,
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Feeds one input; returns the effects to perform, in order. After an
    /// [`Effect::Done`] every further call returns nothing.
    pub fn step(&mut self, input: Input) -> Vec<Effect> {
        if self.is_done() {
            return Vec::new();
        }
        let effects = match input {
            Input::Start => self.on_start(),
            Input::AtEpoch { epoch, reply } => {
                if epoch != self.replica_config.epoch {
                    tracing::debug!(
                        epoch,
                        current = self.replica_config.epoch,
                        "quorum reply of another epoch ignored"
                    );
                    Vec::new()
                } else if matches!(*reply, Input::ReadReply { .. } | Input::WriteAck { .. } | Input::Failed { .. }) {
                    self.on_reply(*reply)
                } else {
                    tracing::warn!(?reply, "only replies can be tagged with an epoch; ignored");
                    Vec::new()
                }
            }
            Input::StaleConfig { from, config } => self.on_stale_config(from, config),
            reply @ (Input::ReadReply { .. } | Input::WriteAck { .. } | Input::Failed { .. }) => self.on_reply(reply),
            Input::Version(v) => self.on_version(v),
            Input::Deadline => self.on_deadline(),
            Input::Hedge => self.release_held_back(),
        };
        // Invariant: Done is the last effect, and only Done ends a coordinator.
        debug_assert_eq!(
            effects.iter().any(|e| matches!(e, Effect::Done(_))),
            self.is_done(),
            "Done effect and done state disagree"
        );
        debug_assert!(
            effects.iter().position(|e| matches!(e, Effect::Done(_))).is_none_or(|i| i + 1 == effects.len()),
            "Done must be the last effect"
        );
        effects
    }

    /// A reply of the current epoch.
    fn on_reply(&mut self, input: Input) -> Vec<Effect> {
        match input {
            Input::ReadReply { from, cell } => match self.slot(from) {
                Some(slot) => self.on_read_answer(slot, Answer::Ok(cell)),
                None => Vec::new(),
            },
            Input::WriteAck { from } => match self.slot(from) {
                Some(slot) => self.on_write_answer(slot, Answer::Ok(())),
                None => Vec::new(),
            },
            Input::Failed { from, phase, reason } => match self.slot(from) {
                Some(slot) => {
                    tracing::debug!(replica = from, %phase, %reason, "quorum replica request failed");
                    match phase {
                        Phase::Read => self.on_read_answer(slot, Answer::Failed),
                        Phase::Write => self.on_write_answer(slot, Answer::Failed),
                    }
                }
                None => Vec::new(),
            },
            other => unreachable!("not a reply: {other:?}"),
        }
    }

    /// A replica knows a newer configuration: adopt it and run the current
    /// phase again over it, from scratch (answers of the older epoch are
    /// not counted: a reply given before a replica had synced, or by a
    /// replica that is no longer a member, says nothing about the new
    /// quorums).
    fn on_stale_config(&mut self, from: NodeId, config: ReplicaConfig) -> Vec<Effect> {
        if config.epoch <= self.replica_config.epoch {
            // A refusal of an older attempt: already restarted past it.
            return Vec::new();
        }
        if let Err(e) = config.validate() {
            tracing::warn!(replica = from, error = %e, "quorum replica sent an invalid configuration; ignored");
            return Vec::new();
        }
        tracing::debug!(
            replica = from,
            from_epoch = self.replica_config.epoch,
            to_epoch = config.epoch,
            "quorum coordinator adopts a newer configuration"
        );
        self.replicas = config.members();
        self.replica_config = config;
        match &self.state {
            State::Reading(_) => self.start_read(),
            State::Writing { kind, cell, .. } => {
                let (kind, cell) = (*kind, cell.clone());
                self.start_write(kind, self.op.key().clone(), cell)
            }
            // Nothing in flight: the next phase starts in the new configuration.
            State::NotStarted | State::AwaitingVersion { .. } => Vec::new(),
            State::Done => unreachable!("step returns early when done"),
        }
    }

    fn slot(&self, from: NodeId) -> Option<usize> {
        let slot = self.replicas.iter().position(|r| *r == from);
        if slot.is_none() {
            tracing::warn!(replica = from, "quorum reply from a node outside the replica set ignored");
        }
        slot
    }

    fn on_start(&mut self) -> Vec<Effect> {
        if !matches!(self.state, State::NotStarted) {
            return Vec::new();
        }
        if let Op::Impose { key, cell, .. } = self.op.clone() {
            return self.start_write(WriteKind::Impose, key, cell);
        }
        self.start_read()
    }

    fn start_read(&mut self) -> Vec<Effect> {
        self.state = State::Reading(Tally::new(self.replicas.len()));
        let mut order: Vec<NodeId> = Vec::with_capacity(self.replicas.len());
        for &r in self.preferred.iter().chain(self.replicas.iter()) {
            if self.replicas.contains(&r) && !order.contains(&r) {
                order.push(r);
            }
        }
        debug_assert_eq!(order.len(), self.replicas.len());
        let first = match self.config.read_fanout {
            // A get only: a set's version read measured slower when it waits
            // for one chosen peer instead of the first of all.
            ReadFanout::Majority if !self.replica_config.is_joint() && matches!(self.op, Op::Get { .. }) => {
                self.majority()
            }
            _ => order.len(),
        };
        self.held_back = order.split_off(first);
        let key = self.op.key().clone();
        order.into_iter().map(|to| Effect::Send { to, msg: Message::Read { key: key.clone() } }).collect()
    }

    /// Asks the replicas the read phase held back (on a hedge, or when an
    /// asked replica failed).
    fn release_held_back(&mut self) -> Vec<Effect> {
        if !matches!(self.state, State::Reading(_)) {
            return Vec::new();
        }
        let key = self.op.key().clone();
        std::mem::take(&mut self.held_back)
            .into_iter()
            .map(|to| Effect::Send { to, msg: Message::Read { key: key.clone() } })
            .collect()
    }

    fn on_read_answer(&mut self, slot: usize, answer: Answer<Option<Cell>>) -> Vec<Effect> {
        let State::Reading(tally) = &mut self.state else {
            // A late reply to a finished read phase (or a stray one).
            return Vec::new();
        };
        let failed = matches!(answer, Answer::Failed);
        if !tally.record(slot, answer) {
            return Vec::new();
        }
        // A held-back replica may be needed now: ask it at once.
        let asked = if failed { self.release_held_back() } else { Vec::new() };
        let State::Reading(tally) = &self.state else { unreachable!("still reading") };
        match quorum_status(&self.replica_config, &self.replicas, tally) {
            Status::Open => return asked,
            Status::Lost(Shortfall { answered, needed, total }) => {
                return self.finish(Err(QuorumError::Unavailable {
                    answered,
                    needed,
                    total,
                    phase: Phase::Read,
                    timed_out: false,
                }));
            }
            Status::Reached => {}
        }
        // A quorum answered: exactly a majority of Ok replies if not joint
        // (at least a majority of each set if joint).
        let replies: Vec<Option<Cell>> = tally.oks().cloned().collect();
        debug_assert!(self.replica_config.is_joint() || replies.len() == self.majority());
        let highest = replies.iter().flatten().cloned().reduce(Cell::merge);
        self.max_read = highest.as_ref().map(|c| c.version);
        match self.op.clone() {
            Op::Get { key } => {
                let unanimous = replies.iter().all(|r| *r == highest);
                if unanimous || self.config.skip_read_impose_unsafe {
                    return self.finish(Ok(Outcome::Get { cell: highest, imposed: false }));
                }
                // Some replica of the majority lacks the highest cell, which
                // therefore may sit on a minority only: write it back first.
                let cell = highest.expect("not unanimous, so some reply holds a cell");
                self.start_write(WriteKind::Impose, key, cell)
            }
            Op::Impose { .. } => unreachable!("an impose has no read phase"),
            Op::Set { .. } => {
                let above = self.max_read.unwrap_or(Version::ZERO);
                self.state = State::AwaitingVersion { above };
                vec![Effect::NeedVersion { above }]
            }
        }
    }

    fn on_version(&mut self, version: Version) -> Vec<Effect> {
        let State::AwaitingVersion { above } = self.state else {
            return Vec::new();
        };
        // Invariant: a set's version is strictly greater than every version
        // it read, so it supersedes them all on every replica.
        assert!(version > above, "quorum set: version {version:?} is not above the highest version read {above:?}");
        assert!(self.max_read.is_none_or(|m| version > m));
        let Op::Set { key, value } = self.op.clone() else {
            unreachable!("only a set waits for a version");
        };
        let cell = Cell { value, version, origin: Level::Quorum };
        self.start_write(WriteKind::NewVersion, key, cell)
    }

    fn start_write(&mut self, kind: WriteKind, key: Bytes, cell: Cell) -> Vec<Effect> {
        // A write goes to every member: nothing is held back any more.
        self.held_back.clear();
        // Only a write-back names where its cell was made: a get's
        // read-impose and a set write cells no Raft entry made.
        let applied_at = match &self.op {
            Op::Impose { applied_at, .. } => *applied_at,
            Op::Get { .. } | Op::Set { .. } => 0,
        };
        let effects = self
            .replicas
            .iter()
            .map(|&to| Effect::Send { to, msg: Message::Write { key: key.clone(), cell: cell.clone(), applied_at } })
            .collect();
        self.state = State::Writing { kind, cell, acks: Tally::new(self.replicas.len()) };
        effects
    }

    fn on_write_answer(&mut self, slot: usize, answer: Answer<()>) -> Vec<Effect> {
        let State::Writing { kind, cell, acks } = &mut self.state else {
            return Vec::new();
        };
        if !acks.record(slot, answer) {
            return Vec::new();
        }
        let kind = *kind;
        match quorum_status(&self.replica_config, &self.replicas, acks) {
            Status::Open => return Vec::new(),
            Status::Lost(Shortfall { answered, needed, total }) => {
                let err = write_failure(kind, cell, answered, needed, total, false);
                return self.finish(Err(err));
            }
            Status::Reached => {}
        }
        let outcome = match kind {
            WriteKind::Impose => Outcome::Get { cell: Some(cell.clone()), imposed: true },
            WriteKind::NewVersion => Outcome::Set { version: cell.version },
        };
        self.finish(Ok(outcome))
    }

    fn on_deadline(&mut self) -> Vec<Effect> {
        let needed = self.majority();
        let total = self.replica_config.current.len();
        let err = match &self.state {
            State::NotStarted => {
                QuorumError::Unavailable { answered: 0, needed, total, phase: Phase::Read, timed_out: true }
            }
            State::Reading(tally) => {
                let Shortfall { answered, needed, total } = shortfall(&self.replica_config, &self.replicas, tally);
                QuorumError::Unavailable { answered, needed, total, phase: Phase::Read, timed_out: true }
            }
            // The read phase is over but no write was sent: a clean failure.
            State::AwaitingVersion { .. } => {
                QuorumError::Unavailable { answered: 0, needed, total, phase: Phase::Write, timed_out: true }
            }
            State::Writing { kind, cell, acks } => {
                let Shortfall { answered, needed, total } = shortfall(&self.replica_config, &self.replicas, acks);
                write_failure(*kind, cell, answered, needed, total, true)
            }
            State::Done => unreachable!("step returns early when done"),
        };
        self.finish(Err(err))
    }

    fn finish(&mut self, result: Result<Outcome, QuorumError>) -> Vec<Effect> {
        assert!(!self.is_done(), "a coordinator finishes once");
        self.state = State::Done;
        vec![Effect::Done(result)]
    }
}

/// Where a phase stands with respect to its configuration's quorums.
enum Status {
    /// A quorum answered Ok.
    Reached,
    /// Too many failed: no quorum can answer any more.
    Lost(Shortfall),
    Open,
}

/// The counts an error reports: of the first replica set (`current`, then
/// `next`) that has no majority of Ok answers.
struct Shortfall {
    answered: usize,
    needed: usize,
    total: usize,
}

fn quorum_status<T>(rc: &ReplicaConfig, members: &[NodeId], tally: &Tally<T>) -> Status {
    let is = |node: NodeId, ok: bool| {
        let slot = members.iter().position(|&m| m == node).expect("a config's nodes are its members");
        match tally.answers[slot] {
            Answer::Ok(_) => ok,
            Answer::Failed => !ok,
            Answer::Pending => false,
        }
    };
    if rc.cannot_reach(|n| is(n, false)) {
        // Report the set that lost its majority.
        let lost = std::iter::once(&rc.current)
            .chain(rc.next.as_ref())
            .find(|set| set.iter().filter(|&&n| is(n, false)).count() > set.len() - majority(set.len()))
            .expect("some set lost its majority");
        return Status::Lost(counts(lost, |n| is(n, true)));
    }
    if rc.is_quorum(|n| is(n, true)) {
        return Status::Reached;
    }
    Status::Open
}

/// The counts of the first set without a majority of Ok answers (of
/// `current` if every set has one).
fn shortfall<T>(rc: &ReplicaConfig, members: &[NodeId], tally: &Tally<T>) -> Shortfall {
    let ok = |node: NodeId| {
        let slot = members.iter().position(|&m| m == node).expect("a config's nodes are its members");
        matches!(tally.answers[slot], Answer::Ok(_))
    };
    let set = std::iter::once(&rc.current)
        .chain(rc.next.as_ref())
        .find(|set| set.iter().filter(|&&n| ok(n)).count() < majority(set.len()))
        .unwrap_or(&rc.current);
    counts(set, ok)
}

fn counts(set: &[NodeId], ok: impl Fn(NodeId) -> bool) -> Shortfall {
    Shortfall { answered: set.iter().filter(|&&n| ok(n)).count(), needed: majority(set.len()), total: set.len() }
}

/// The error of a write phase that cannot complete.
fn write_failure(
    kind: WriteKind,
    cell: &Cell,
    acked: usize,
    needed: usize,
    total: usize,
    timed_out: bool,
) -> QuorumError {
    match kind {
        // A get's write-back only re-writes a cell some replica already had;
        // the get itself failed without effect.
        WriteKind::Impose => {
            QuorumError::Unavailable { answered: acked, needed, total, phase: Phase::Write, timed_out }
        }
        WriteKind::NewVersion => QuorumError::Indeterminate { acked, needed, total, version: cell.version, timed_out },
    }
}

#[cfg(test)]
mod tests {
    //! Unit tests of the coordinator, driven input by input. Each test names
    //! the step of ABD (Attiya, Bar-Noy, Dolev, JACM 1995; multi-writer
    //! write of Lynch & Shvartsman, FTCS 1997) it checks.
    use super::*;

    const KEY: &[u8] = b"k";

    fn cell(value: &'static str, hlc: u64, node: NodeId) -> Cell {
        Cell::value(Bytes::from_static(value.as_bytes()), Version::new(hlc, node), Level::Quorum)
    }

    fn coordinator(op: Op, replicas: &[NodeId]) -> Coordinator {
        Coordinator::new(op, replicas.to_vec(), QuorumConfig::default()).unwrap()
    }

    fn read_reply(from: NodeId, cell: Option<Cell>) -> Input {
        Input::ReadReply { from, cell }
    }

    fn failed(from: NodeId, phase: Phase) -> Input {
        Input::Failed { from, phase, reason: "connection refused".into() }
    }

    /// The (destination, message) of every send.
    fn sends(effects: &[Effect]) -> Vec<(NodeId, Message)> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Send { to, msg } => Some((*to, msg.clone())),
                _ => None,
            })
            .collect()
    }

    fn done(effects: &[Effect]) -> Option<Result<Outcome, QuorumError>> {
        match effects.last() {
            Some(Effect::Done(r)) => Some(r.clone()),
            _ => None,
        }
    }

    #[test]
    fn start_sends_a_read_to_every_replica() {
        // ABD read/write, phase 1 (query): the request goes to all replicas.
        let mut c = coordinator(Op::get(KEY), &[1, 2, 3]);
        let effects = c.step(Input::Start);
        let read = Message::Read { key: Bytes::from_static(KEY) };
        assert_eq!(sends(&effects), vec![(1, read.clone()), (2, read.clone()), (3, read)]);
        assert_eq!(c.phase(), Some(Phase::Read));
        assert!(c.step(Input::Start).is_empty(), "a second Start does nothing");
    }

    #[test]
    fn unanimous_get_answers_without_impose() {
        // ABD read, phase 2 (write-back) is skipped when the whole read
        // majority already holds the highest cell: it is then on a majority
        // already, and writing it back would change no replica.
        let mut c = coordinator(Op::get(KEY), &[1, 2, 3]);
        c.step(Input::Start);
        assert!(c.step(read_reply(2, Some(cell("a", 5, 1)))).is_empty());
        let effects = c.step(read_reply(3, Some(cell("a", 5, 1))));
        assert!(sends(&effects).is_empty(), "no write-back");
        assert_eq!(done(&effects), Some(Ok(Outcome::Get { cell: Some(cell("a", 5, 1)), imposed: false })));
    }

    #[test]
    fn get_of_an_absent_key_is_unanimous() {
        // ABD read: "all absent" is a unanimous majority; nothing to impose.
        let mut c = coordinator(Op::get(KEY), &[1, 2, 3]);
        c.step(Input::Start);
        c.step(read_reply(1, None));
        let effects = c.step(read_reply(3, None));
        assert_eq!(done(&effects), Some(Ok(Outcome::Get { cell: None, imposed: false })));
        assert_eq!(done(&effects).unwrap().unwrap().value(), None);
    }

    #[test]
    fn get_seeing_differing_versions_imposes_before_answering() {
        // ABD read, phase 2: the reader writes the highest cell back to a
        // majority BEFORE it returns, so no later read can return an older
        // value (prevents the new/old inversion).
        let new = cell("new", 6, 2);
        let mut c = coordinator(Op::get(KEY), &[1, 2, 3]);
        c.step(Input::Start);
        c.step(read_reply(1, Some(cell("old", 5, 1))));
        let effects = c.step(read_reply(2, Some(new.clone())));
        assert_eq!(done(&effects), None, "must not answer before the write-back");
        let write = Message::Write { key: Bytes::from_static(KEY), cell: new.clone(), applied_at: 0 };
        assert_eq!(sends(&effects), vec![(1, write.clone()), (2, write.clone()), (3, write)]);
        assert_eq!(c.phase(), Some(Phase::Write));
        assert!(c.step(Input::WriteAck { from: 3 }).is_empty(), "one ack of three is not a majority");
        let effects = c.step(Input::WriteAck { from: 1 });
        let outcome = done(&effects).unwrap().unwrap();
        assert_eq!(outcome, Outcome::Get { cell: Some(new), imposed: true });
        assert!(outcome.imposed());
        assert_eq!(outcome.value().map(|b| &b[..]), Some(&b"new"[..]));
    }

    #[test]
    fn get_seeing_a_tombstone_and_absence_imposes_the_tombstone() {
        // ABD read, phase 2: a delete is a write like any other; a reader
        // seeing it on part of its majority writes the tombstone back.
        let tomb = Cell::tombstone(Version::new(9, 1), Level::Quorum);
        let mut c = coordinator(Op::get(KEY), &[1, 2, 3]);
        c.step(Input::Start);
        c.step(read_reply(1, None));
        let effects = c.step(read_reply(2, Some(tomb.clone())));
        assert_eq!(sends(&effects).len(), 3);
        c.step(Input::WriteAck { from: 1 });
        let outcome = done(&c.step(Input::WriteAck { from: 2 })).unwrap().unwrap();
        assert_eq!(outcome, Outcome::Get { cell: Some(tomb), imposed: true });
        assert_eq!(outcome.value(), None, "a tombstone reads as not found");
    }

    #[test]
    fn impose_skips_the_read_phase_and_answers_after_a_majority_stored_the_cell() {
        // The write phase alone, for a cell made elsewhere (a Raft command's
        // result): sent as is, answered once a majority acknowledged it,
        // and a minority of acks is not enough.
        let made = Cell { version: Version::new(7, 1).after_rmw(), ..cell("cas", 7, 1) };
        let mut c =
            coordinator(Op::Impose { key: Bytes::from_static(KEY), cell: made.clone(), applied_at: 12 }, &[1, 2, 3]);
        let effects = c.step(Input::Start);
        // The applied index travels with the write, for the replicas.
        let write = Message::Write { key: Bytes::from_static(KEY), cell: made.clone(), applied_at: 12 };
        assert_eq!(sends(&effects), vec![(1, write.clone()), (2, write.clone()), (3, write)]);
        assert_eq!(c.phase(), Some(Phase::Write));
        assert!(c.step(Input::WriteAck { from: 2 }).is_empty());
        assert!(c.step(failed(3, Phase::Write)).is_empty());
        let outcome = done(&c.step(Input::WriteAck { from: 1 })).unwrap().unwrap();
        assert_eq!(outcome, Outcome::Get { cell: Some(made.clone()), imposed: true });
        // Two failures of three: unavailable, never "done" without a majority.
        let mut c = coordinator(Op::Impose { key: Bytes::from_static(KEY), cell: made, applied_at: 0 }, &[1, 2, 3]);
        c.step(Input::Start);
        c.step(failed(1, Phase::Write));
        let err = done(&c.step(failed(2, Phase::Write))).unwrap().unwrap_err();
        assert!(matches!(err, QuorumError::Unavailable { phase: Phase::Write, answered: 0, .. }), "{err:?}");
    }

    #[test]
    fn skip_read_impose_unsafe_answers_the_highest_without_writing_back() {
        // Negative-control switch: ABD read WITHOUT phase 2.
        let config = QuorumConfig { skip_read_impose_unsafe: true, ..QuorumConfig::default() };
        let mut c = Coordinator::new(Op::get(KEY), vec![1, 2, 3], config).unwrap();
        c.step(Input::Start);
        c.step(read_reply(1, Some(cell("old", 5, 1))));
        let effects = c.step(read_reply(2, Some(cell("new", 6, 2))));
        assert!(sends(&effects).is_empty());
        assert_eq!(done(&effects), Some(Ok(Outcome::Get { cell: Some(cell("new", 6, 2)), imposed: false })));
    }

    #[test]
    fn set_version_exceeds_every_version_read() {
        // Multi-writer ABD write, query phase: the writer learns the highest
        // version of a majority and writes strictly above it.
        let mut c = coordinator(Op::set(KEY, "v"), &[1, 2, 3]);
        c.step(Input::Start);
        c.step(read_reply(3, Some(cell("x", 40, 3))));
        let effects = c.step(read_reply(1, Some(cell("y", 41, 1))));
        assert_eq!(effects, vec![Effect::NeedVersion { above: Version::new(41, 1) }]);
        assert_eq!(c.phase(), None);
        let v = Version::new(42, 2);
        let effects = c.step(Input::Version(v));
        let written = Cell::value(Bytes::from_static(b"v"), v, Level::Quorum);
        let write = Message::Write { key: Bytes::from_static(KEY), cell: written, applied_at: 0 };
        assert_eq!(sends(&effects), vec![(1, write.clone()), (2, write.clone()), (3, write)]);
        c.step(Input::WriteAck { from: 2 });
        let effects = c.step(Input::WriteAck { from: 3 });
        assert_eq!(done(&effects), Some(Ok(Outcome::Set { version: v })));
    }

    #[test]
    fn set_on_an_absent_key_asks_for_a_version_above_zero() {
        // Multi-writer ABD write, query phase, with no prior write.
        let mut c = coordinator(Op::del(KEY), &[1]);
        let effects = c.step(Input::Start);
        assert_eq!(sends(&effects).len(), 1);
        assert_eq!(c.step(read_reply(1, None)), vec![Effect::NeedVersion { above: Version::ZERO }]);
        let effects = c.step(Input::Version(Version::new(1, 1)));
        let tomb = Cell::tombstone(Version::new(1, 1), Level::Quorum);
        assert_eq!(
            sends(&effects),
            vec![(1, Message::Write { key: Bytes::from_static(KEY), cell: tomb, applied_at: 0 })]
        );
        assert_eq!(done(&c.step(Input::WriteAck { from: 1 })), Some(Ok(Outcome::Set { version: Version::new(1, 1) })));
    }

    #[test]
    fn writer_id_breaks_ties_of_the_clock_part() {
        // Multi-writer ABD: tags are (timestamp, writer id) ordered
        // lexicographically, so a writer may reuse the highest clock value
        // seen if its id is larger.
        let mut c = coordinator(Op::set(KEY, "v"), &[1, 2, 3]);
        c.step(Input::Start);
        c.step(read_reply(1, Some(cell("x", 10, 3))));
        assert_eq!(c.step(read_reply(2, None)), vec![Effect::NeedVersion { above: Version::new(10, 3) }]);
        let effects = c.step(Input::Version(Version::new(10, 5)));
        assert_eq!(sends(&effects).len(), 3, "(10, node 5) > (10, node 3) is accepted");
    }

    #[test]
    #[should_panic(expected = "is not above the highest version read")]
    fn a_version_not_above_the_highest_read_is_rejected() {
        // Multi-writer ABD write: writing at or below a version read would
        // let the old cell win on some replica; the core asserts it cannot.
        let mut c = coordinator(Op::set(KEY, "v"), &[1, 2, 3]);
        c.step(Input::Start);
        c.step(read_reply(1, Some(cell("x", 10, 3))));
        c.step(read_reply(2, None));
        c.step(Input::Version(Version::new(10, 2)));
    }

    #[test]
    fn answers_after_a_majority_without_the_slowest_replica() {
        // ABD: each phase waits for ⌊N/2⌋+1 replies, never for all N.
        let mut c = coordinator(Op::set(KEY, "v"), &[1, 2, 3, 4, 5]);
        c.step(Input::Start);
        c.step(read_reply(5, None));
        c.step(read_reply(4, None));
        assert_eq!(c.step(read_reply(2, None)).len(), 1, "3 of 5 reads suffice");
        c.step(Input::Version(Version::new(1, 1)));
        c.step(Input::WriteAck { from: 1 });
        c.step(Input::WriteAck { from: 3 });
        let effects = c.step(Input::WriteAck { from: 4 });
        assert_eq!(done(&effects), Some(Ok(Outcome::Set { version: Version::new(1, 1) })));
        assert!(c.is_done());
    }

    #[test]
    fn late_replies_are_ignored() {
        // ABD: replies to a finished phase carry no information the
        // coordinator needs; they must not change its state or its output.
        let mut c = coordinator(Op::get(KEY), &[1, 2, 3]);
        c.step(Input::Start);
        c.step(read_reply(1, Some(cell("old", 5, 1))));
        c.step(read_reply(2, Some(cell("new", 6, 2))));
        // The slow read reply arrives during the write-back: ignored.
        assert!(c.step(read_reply(3, Some(cell("newer", 7, 3)))).is_empty());
        c.step(Input::WriteAck { from: 1 });
        let effects = c.step(Input::WriteAck { from: 2 });
        assert_eq!(done(&effects), Some(Ok(Outcome::Get { cell: Some(cell("new", 6, 2)), imposed: true })));
        // After Done: nothing, whatever arrives.
        assert!(c.step(Input::WriteAck { from: 3 }).is_empty());
        assert!(c.step(read_reply(3, None)).is_empty());
        assert!(c.step(failed(3, Phase::Write)).is_empty());
        assert!(c.step(Input::Deadline).is_empty());
        assert!(c.step(Input::Start).is_empty());
    }

    #[test]
    fn duplicate_replies_are_counted_once() {
        // ABD counts distinct replicas: a majority of *replicas*, so that
        // any two phases' majorities intersect. A replica answering twice
        // (retry, duplicated packet) must not stand in for another one.
        let mut c = coordinator(Op::set(KEY, "v"), &[1, 2, 3]);
        c.step(Input::Start);
        assert!(c.step(read_reply(1, None)).is_empty());
        assert!(c.step(read_reply(1, None)).is_empty(), "the same replica twice is not a majority");
        assert!(c.step(failed(1, Phase::Read)).is_empty(), "nor does a later error from it count");
        assert_eq!(c.step(read_reply(3, None)).len(), 1);
        c.step(Input::Version(Version::new(1, 1)));
        assert!(c.step(Input::WriteAck { from: 2 }).is_empty());
        assert!(c.step(Input::WriteAck { from: 2 }).is_empty());
        assert!(!c.is_done());
        assert!(done(&c.step(Input::WriteAck { from: 1 })).is_some());
    }

    #[test]
    fn replies_from_outside_the_replica_set_are_ignored() {
        let mut c = coordinator(Op::get(KEY), &[1, 2, 3]);
        c.step(Input::Start);
        c.step(read_reply(1, None));
        assert!(c.step(read_reply(9, None)).is_empty());
        assert!(!c.is_done());
    }

    #[test]
    fn unavailable_with_counts_when_two_of_three_fail() {
        // ABD tolerates fewer than N/2 failures; beyond that no majority can
        // answer, and the coordinator fails at once rather than waiting.
        let mut c = coordinator(Op::get(KEY), &[1, 2, 3]);
        c.step(Input::Start);
        c.step(read_reply(2, None));
        assert!(c.step(failed(1, Phase::Read)).is_empty(), "one failure of three leaves a majority possible");
        let err = done(&c.step(failed(3, Phase::Read))).unwrap().unwrap_err();
        assert_eq!(
            err,
            QuorumError::Unavailable { answered: 1, needed: 2, total: 3, phase: Phase::Read, timed_out: false }
        );
        assert_eq!(err.to_string(), "quorum unavailable: 1 of 3 replicas answered the read phase, 2 needed");
        assert!(c.step(read_reply(1, None)).is_empty());
    }

    #[test]
    fn a_failed_read_reply_does_not_count_against_the_write_phase() {
        // Replies are counted per phase: a read error arriving during the
        // write phase belongs to the finished read phase.
        let mut c = coordinator(Op::set(KEY, "v"), &[1, 2, 3]);
        c.step(Input::Start);
        c.step(read_reply(1, None));
        c.step(read_reply(2, None));
        c.step(Input::Version(Version::new(1, 1)));
        assert!(c.step(failed(3, Phase::Read)).is_empty());
        assert!(c.step(failed(1, Phase::Write)).is_empty());
        c.step(Input::WriteAck { from: 2 });
        assert_eq!(done(&c.step(Input::WriteAck { from: 3 })), Some(Ok(Outcome::Set { version: Version::new(1, 1) })));
    }

    #[test]
    fn deadline_during_a_set_read_phase_is_a_clean_unavailable() {
        // Nothing was written yet: the set definitely did not happen.
        let mut c = coordinator(Op::set(KEY, "v"), &[1, 2, 3]);
        c.step(Input::Start);
        c.step(read_reply(1, None));
        let err = done(&c.step(Input::Deadline)).unwrap().unwrap_err();
        assert_eq!(
            err,
            QuorumError::Unavailable { answered: 1, needed: 2, total: 3, phase: Phase::Read, timed_out: true }
        );
        assert_eq!(
            err.to_string(),
            "quorum unavailable: 1 of 3 replicas answered the read phase, 2 needed (deadline passed)"
        );
    }

    #[test]
    fn deadline_while_waiting_for_the_version_is_a_clean_unavailable() {
        let mut c = coordinator(Op::set(KEY, "v"), &[1, 2, 3]);
        c.step(Input::Start);
        c.step(read_reply(1, None));
        c.step(read_reply(2, None));
        let err = done(&c.step(Input::Deadline)).unwrap().unwrap_err();
        assert!(matches!(err, QuorumError::Unavailable { answered: 0, phase: Phase::Write, timed_out: true, .. }));
        assert!(c.step(Input::Version(Version::new(1, 1))).is_empty());
    }

    #[test]
    fn deadline_during_a_set_write_phase_is_indeterminate() {
        // ABD write, phase 2: once the cell left the coordinator, a replica
        // may hold it and a later read may return (and impose) it, so a
        // timeout cannot be reported as "not written".
        let mut c = coordinator(Op::set(KEY, "v"), &[1, 2, 3]);
        c.step(Input::Start);
        c.step(read_reply(1, None));
        c.step(read_reply(2, None));
        c.step(Input::Version(Version::new(7, 1)));
        c.step(Input::WriteAck { from: 3 });
        let err = done(&c.step(Input::Deadline)).unwrap().unwrap_err();
        assert_eq!(
            err,
            QuorumError::Indeterminate { acked: 1, needed: 2, total: 3, version: Version::new(7, 1), timed_out: true }
        );
        assert!(err.to_string().starts_with("quorum write indeterminate: 1 of 3 replicas acknowledged version"));
    }

    #[test]
    fn write_phase_failures_of_a_set_are_indeterminate() {
        // A failed write RPC may still have been applied (the reply was
        // lost), so losing the majority in phase 2 is indeterminate too.
        let mut c = coordinator(Op::del(KEY), &[1, 2, 3]);
        c.step(Input::Start);
        c.step(read_reply(1, None));
        c.step(read_reply(2, None));
        c.step(Input::Version(Version::new(7, 1)));
        c.step(failed(1, Phase::Write));
        let err = done(&c.step(failed(2, Phase::Write))).unwrap().unwrap_err();
        assert!(matches!(err, QuorumError::Indeterminate { acked: 0, timed_out: false, .. }));
    }

    #[test]
    fn deadline_during_a_get_write_back_is_unavailable() {
        // A get's write-back copies a cell that already exists: the get
        // failed, but it wrote nothing new, so it is not indeterminate.
        let mut c = coordinator(Op::get(KEY), &[1, 2, 3]);
        c.step(Input::Start);
        c.step(read_reply(1, None));
        c.step(read_reply(2, Some(cell("a", 1, 1))));
        c.step(Input::WriteAck { from: 1 });
        let err = done(&c.step(Input::Deadline)).unwrap().unwrap_err();
        assert_eq!(
            err,
            QuorumError::Unavailable { answered: 1, needed: 2, total: 3, phase: Phase::Write, timed_out: true }
        );
    }

    #[test]
    fn majorities() {
        assert_eq!((1..=6).map(majority).collect::<Vec<_>>(), vec![1, 2, 2, 3, 3, 4]);
    }

    #[test]
    fn replica_sets_are_validated() {
        let new = |r: Vec<NodeId>| Coordinator::new(Op::get(KEY), r, QuorumConfig::default()).map(|_| ());
        assert_eq!(new(vec![]), Err(ReplicaSetError::Empty));
        assert_eq!(new(vec![1, 2, 1]), Err(ReplicaSetError::Duplicate(1)));
        let too_many: Vec<NodeId> = (1..=(MAX_REPLICAS as NodeId + 1)).collect();
        assert_eq!(new(too_many), Err(ReplicaSetError::TooMany { count: MAX_REPLICAS + 1, max: MAX_REPLICAS }));
        assert!(new((1..=(MAX_REPLICAS as NodeId)).collect()).is_ok());
    }

    // Reconfiguration (docs/consistency.md, "Changing the replica set"):
    // joint quorums, epoch-tagged replies, restart on a newer configuration.

    fn joint(epoch: u64, current: &[NodeId], next: &[NodeId]) -> ReplicaConfig {
        ReplicaConfig { epoch, current: current.to_vec(), next: Some(next.to_vec()) }
    }

    fn at(epoch: u64, reply: Input) -> Input {
        Input::AtEpoch { epoch, reply: Box::new(reply) }
    }

    #[test]
    fn a_joint_phase_needs_a_majority_of_both_sets() {
        // Replace 3 by 4: a write acked by {1, 3} has a majority of the old
        // set only, {2, 4} of the new only; {1, 2} has both.
        let config = joint(1, &[1, 2, 3], &[1, 2, 4]);
        let mut c = Coordinator::with_config(Op::set(KEY, "v"), config, QuorumConfig::default()).unwrap();
        let effects = c.step(Input::Start);
        assert_eq!(sends(&effects).iter().map(|(to, _)| *to).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
        c.step(at(1, read_reply(3, None)));
        assert!(c.step(at(1, read_reply(4, None))).is_empty(), "one of each set is no quorum");
        assert_eq!(c.step(at(1, read_reply(1, None))), vec![Effect::NeedVersion { above: Version::ZERO }]);
        c.step(Input::Version(Version::new(1, 1)));
        c.step(at(1, Input::WriteAck { from: 1 }));
        assert!(c.step(at(1, Input::WriteAck { from: 3 })).is_empty(), "{{1, 3}}: no majority of new");
        let done = done(&c.step(at(1, Input::WriteAck { from: 4 }))).expect("done");
        assert_eq!(done, Ok(Outcome::Set { version: Version::new(1, 1) }));
    }

    #[test]
    fn a_joint_phase_is_unavailable_when_either_set_is() {
        // 3 -> 5: losing three of the five new nodes loses the new set's
        // majority, whatever the old set does.
        let config = joint(1, &[1, 2, 3], &[1, 2, 3, 4, 5]);
        let mut c = Coordinator::with_config(Op::get(KEY), config, QuorumConfig::default()).unwrap();
        c.step(Input::Start);
        c.step(at(1, read_reply(1, None)));
        c.step(at(1, read_reply(2, None)));
        c.step(at(1, failed(4, Phase::Read)));
        assert!(c.step(at(1, failed(5, Phase::Read))).is_empty());
        let err = done(&c.step(at(1, failed(3, Phase::Read)))).unwrap().unwrap_err();
        assert_eq!(
            err,
            QuorumError::Unavailable { answered: 2, needed: 3, total: 5, phase: Phase::Read, timed_out: false }
        );
    }

    #[test]
    fn replies_of_another_epoch_are_ignored() {
        let config = ReplicaConfig { epoch: 4, current: vec![1, 2, 3], next: None };
        let mut c = Coordinator::with_config(Op::get(KEY), config, QuorumConfig::default()).unwrap();
        c.step(Input::Start);
        c.step(at(4, read_reply(1, None)));
        assert!(c.step(at(3, read_reply(2, None))).is_empty(), "an answer of epoch 3 does not count");
        assert!(c.step(at(5, read_reply(2, None))).is_empty());
        assert!(done(&c.step(at(4, read_reply(2, None)))).is_some());
    }

    #[test]
    fn a_refusal_restarts_the_phase_in_the_newer_configuration() {
        // A write phase at epoch 1 is refused by a replica that knows epoch
        // 2: the coordinator re-sends the same cell to the new members and
        // counts only answers of epoch 2, even acks it had at epoch 1.
        let old = ReplicaConfig { epoch: 1, current: vec![1, 2, 3], next: None };
        let mut c = Coordinator::with_config(Op::set(KEY, "v"), old, QuorumConfig::default()).unwrap();
        c.step(Input::Start);
        c.step(at(1, read_reply(1, None)));
        c.step(at(1, read_reply(2, None)));
        let first = sends(&c.step(Input::Version(Version::new(3, 1))));
        c.step(at(1, Input::WriteAck { from: 1 }));
        let newer = joint(2, &[1, 2, 3], &[1, 2, 4]);
        let again = c.step(Input::StaleConfig { from: 2, config: newer.clone() });
        assert_eq!(c.epoch(), 2);
        assert_eq!(c.replica_config(), &newer);
        let again = sends(&again);
        assert_eq!(again.iter().map(|(to, _)| *to).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
        assert_eq!(again[0].1, first[0].1, "the same cell: a write is idempotent");
        assert!(c.step(at(1, Input::WriteAck { from: 3 })).is_empty(), "epoch-1 acks are not counted");
        assert!(c.step(Input::StaleConfig { from: 3, config: newer.clone() }).is_empty(), "not newer: no restart");
        c.step(at(2, Input::WriteAck { from: 1 }));
        let done = done(&c.step(at(2, Input::WriteAck { from: 2 }))).expect("{1, 2} is a joint quorum");
        assert_eq!(done, Ok(Outcome::Set { version: Version::new(3, 1) }));
    }

    #[test]
    fn a_refusal_while_waiting_for_the_version_moves_the_write_phase() {
        let old = ReplicaConfig { epoch: 1, current: vec![1, 2, 3], next: None };
        let mut c = Coordinator::with_config(Op::set(KEY, "v"), old, QuorumConfig::default()).unwrap();
        c.step(Input::Start);
        c.step(at(1, read_reply(1, None)));
        c.step(at(1, read_reply(2, None)));
        let newer = ReplicaConfig { epoch: 3, current: vec![4, 5, 6], next: None };
        assert!(c.step(Input::StaleConfig { from: 3, config: newer }).is_empty());
        let writes = sends(&c.step(Input::Version(Version::new(1, 1))));
        assert_eq!(writes.iter().map(|(to, _)| *to).collect::<Vec<_>>(), vec![4, 5, 6]);
    }

    #[test]
    fn an_invalid_configuration_is_refused() {
        let bad = ReplicaConfig { epoch: 1, current: vec![1, 1], next: None };
        assert_eq!(
            Coordinator::with_config(Op::get(KEY), bad.clone(), QuorumConfig::default()).unwrap_err(),
            ReplicaSetError::Duplicate(1)
        );
        let mut c = coordinator(Op::get(KEY), &[1, 2, 3]);
        c.step(Input::Start);
        assert!(c.step(Input::StaleConfig { from: 1, config: bad }).is_empty());
        assert_eq!(c.epoch(), 0, "an invalid configuration is not adopted");
    }

    // Majority-first reads (ReadFanout::Majority): any majority serves ABD;
    // the held-back replicas are asked on a hedge or a failure.

    fn majority_first(op: Op, replicas: &[NodeId], order: Vec<NodeId>) -> Coordinator {
        let config = QuorumConfig { read_fanout: ReadFanout::Majority, ..QuorumConfig::default() };
        let mut c = Coordinator::new(op, replicas.to_vec(), config).unwrap();
        c.prefer(order);
        c
    }

    fn destinations(effects: &[Effect]) -> Vec<NodeId> {
        sends(effects).iter().map(|(to, _)| *to).collect()
    }

    #[test]
    fn a_majority_first_get_asks_the_preferred_majority_and_answers_from_it() {
        let mut c = majority_first(Op::get(KEY), &[1, 2, 3, 4, 5], vec![2, 5]);
        assert_eq!(destinations(&c.step(Input::Start)), vec![2, 5, 1], "the preferred, then configuration order");
        assert!(c.holds_back());
        assert_eq!(c.unanswered(), vec![1, 2, 5]);
        c.step(read_reply(2, Some(cell("a", 1, 1))));
        c.step(read_reply(5, Some(cell("a", 1, 1))));
        assert_eq!(c.unanswered(), vec![1]);
        let done = done(&c.step(read_reply(1, Some(cell("a", 1, 1))))).expect("a majority answered");
        assert_eq!(done, Ok(Outcome::Get { cell: Some(cell("a", 1, 1)), imposed: false }));
        assert!(!c.holds_back());
    }

    #[test]
    fn a_hedge_asks_the_held_back_replicas_once() {
        let mut c = majority_first(Op::get(KEY), &[1, 2, 3], vec![1, 2]);
        assert_eq!(destinations(&c.step(Input::Start)), vec![1, 2]);
        c.step(read_reply(1, None));
        assert_eq!(destinations(&c.step(Input::Hedge)), vec![3]);
        assert!(!c.holds_back());
        assert!(c.step(Input::Hedge).is_empty(), "nothing left to ask");
        // 2 stays silent; 3's answer completes the majority.
        assert_eq!(done(&c.step(read_reply(3, None))), Some(Ok(Outcome::Get { cell: None, imposed: false })));
    }

    #[test]
    fn a_failed_replica_releases_the_held_back_ones_at_once() {
        let mut c = majority_first(Op::get(KEY), &[1, 2, 3], vec![1, 2]);
        c.step(Input::Start);
        assert_eq!(destinations(&c.step(failed(2, Phase::Read))), vec![3], "no hedge delay after a failure");
        c.step(read_reply(1, Some(cell("a", 1, 1))));
        // 3 lacks the newest cell: the read-impose goes to every replica,
        // the failed one included.
        assert_eq!(destinations(&c.step(read_reply(3, None))), vec![1, 2, 3]);
        assert!(!c.holds_back());
        assert!(c.step(Input::Hedge).is_empty(), "a hedge in the write phase does nothing");
    }

    #[test]
    fn a_set_asks_every_replica_for_versions_even_when_gets_go_majority_first() {
        let mut c = majority_first(Op::set(KEY, "v"), &[1, 2, 3], vec![1, 2]);
        assert_eq!(destinations(&c.step(Input::Start)), vec![1, 2, 3]);
        assert!(!c.holds_back());
    }

    #[test]
    fn a_majority_first_read_is_unavailable_only_when_no_majority_is_left() {
        let mut c = majority_first(Op::get(KEY), &[1, 2, 3], vec![1, 2]);
        c.step(Input::Start);
        c.step(failed(1, Phase::Read));
        let effects = c.step(failed(3, Phase::Read));
        let err = done(&effects).expect("two of three failed").unwrap_err();
        assert_eq!(
            err,
            QuorumError::Unavailable { answered: 0, needed: 2, total: 3, phase: Phase::Read, timed_out: false }
        );
    }

    #[test]
    fn a_majority_first_read_in_a_joint_configuration_asks_everyone() {
        let config = QuorumConfig { read_fanout: ReadFanout::Majority, ..QuorumConfig::default() };
        let mut c = Coordinator::with_config(Op::get(KEY), joint(1, &[1, 2, 3], &[1, 2, 4]), config).unwrap();
        c.prefer(vec![1, 2]);
        assert_eq!(destinations(&c.step(Input::Start)), vec![1, 2, 3, 4]);
        assert!(!c.holds_back());
    }

    #[test]
    fn a_majority_first_read_restarted_in_a_newer_configuration_asks_a_majority_of_it() {
        let mut c = majority_first(Op::get(KEY), &[1, 2, 3], vec![1, 3]);
        c.step(Input::Start);
        let newer = ReplicaConfig { epoch: 2, current: vec![1, 3, 4, 5, 6], next: None };
        let effects = c.step(Input::StaleConfig { from: 3, config: newer });
        assert_eq!(destinations(&effects), vec![1, 3, 4], "the preference is kept, a majority of the new set");
        assert!(c.holds_back());
    }
}
