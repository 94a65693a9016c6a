//! The Raft driver: the one task that owns the `RawNode`.
//!
//! raft-rs is a pure state machine; this loop does its I/O. It takes ticks
//! from a timer, messages from peers, client proposals and read requests
//! from bounded channels, and after each input handles the `Ready` in the
//! order raft-rs documents (`raft/src/lib.rs`, "Processing the Ready State"):
//!
//! 1. send `messages` (a leader may send before persisting);
//! 2. install a snapshot, if any;
//! 3. apply `committed_entries`;
//! 4. and 5. persist `entries` and the hard state in **one synced write
//!    batch**;
//! 6. send `persisted_messages`;
//! 7. `advance`, then send/apply what the `LightReady` carries, and
//!    `advance_apply`.
//!
//! Proposals arriving while a Ready is being persisted queue up and go into
//! the next entry together (one entry per batch of commands, one fsync per
//! Ready): that batching is where throughput comes from. When its entry is
//! applied, a node waits up to [`FILL_LINGER_US`] for most of the clients it
//! just answered to send their next command, so that they share the next
//! round instead of half of them waiting a whole round for the one after.
//! Those decisions are the pure [`ProposalBatcher`] (`batcher.rs`).
//! Applying needs no fsync: a committed entry is durable in the log and is
//! re-applied after a crash from the applied index stored with the state.
//!
//! Clients wait for their own command's reply, matched by (client id,
//! request id) when the entry is applied — on whatever node proposed it;
//! raft-rs forwards a follower's proposal to the leader. Reads use ReadIndex
//! (or the leader lease): many reads share one read-index request, and each
//! completes once this node has applied up to the index it got. That
//! bookkeeping, the lease's included, is the pure [`ReadIndexQueue`]
//! (`read_index.rs`); the driver feeds it [`Driver::now_ms`], the one
//! monotonic time it hands to its cores, and carries out its effects.
//!
//! **The leader lease** (`ReadMode::Lease`) is ours, not raft-rs's
//! `LeaseBased` option (which answers at once with no time bound, so a
//! paused or cut-off old leader served stale reads). A read-index round
//! issued at monotonic time `t` and confirmed by a majority proves that a
//! majority heard from this leader at or after `t`; with `check_quorum`,
//! each of them refuses to vote for anyone else until a full election
//! timeout has passed on its own ticks. So no other leader can exist before
//! `t + (election_ticks − 1) × tick_ms`, and the leader serves reads
//! without a round until [`lease_ms`] (that, less a clock-rate margin)
//! after `t`. Rounds are renewed in the background while leader. A node
//! that starts up (having forgotten whom it heard from) grants no vote for
//! one election timeout, so a restart cannot shorten a lease it helped
//! grant. A pause of the leader only ages its lease: the monotonic clock
//! runs on while the process is stopped.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use prost::Message as _;
use protobuf::Message as PbMessage;
use raft::eraftpb::{ConfChange, ConfChangeV2, EntryType, Message, MessageType, Snapshot};
use raft::{RawNode, ReadOnlyOption, StateRole, INVALID_ID};
use rand::rngs::StdRng;
use rand::Rng;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

#[cfg(doc)]
use super::batcher::FILL_LINGER_US;
use super::batcher::{EntryBytes, ProposalBatcher};
use super::error::RaftError;
use super::membership::{self, ConfProposal, Decision, LeaderFacts, MembershipError};
use super::read_index::{RaftFacts, ReadEffect, ReadIndexQueue, Refusal};
use super::snapshot::{install_ops, SnapMeta, SnapshotReader, MAX_INSTALL_BYTES};
use super::state_machine::{members, Answer, Applier, RsmRead};
use super::storage::{RaftStore, KEY_INSTALLING};
use super::transport::{Inbound, LostLog, Transport, TransportEvent};
use crate::clock::Clock;
use crate::clock::NodeId;
use crate::levels::LevelError;
use crate::metrics::{add, Metrics};
use crate::node::peers::{Peers, MAX_MEMBERS};
use crate::proto::rsm;
use crate::store::{cf, Cf, OpOutcome, Store, StoreError, WriteOp};

/// Proposals waiting for their entry to be applied, at most.
pub const MAX_PENDING_PROPOSALS: usize = 100_000;
/// Peer messages stepped per loop turn before handling the Ready.
pub const MAX_STEP_PER_TURN: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// ReadIndex: a heartbeat round confirms leadership for each batch of reads.
    ReadIndex,
    /// Leader lease: no round trip while a majority confirmed this leader
    /// within the lease (see the module docs); correct while the nodes'
    /// clocks run at rates within [`LEASE_CLOCK_RATE_MARGIN_PERCENT`].
    Lease,
    /// TEST ONLY (negative control): raft-rs's `LeaseBased` reads, which
    /// answer at once with no time bound. Not linearizable when a leader is
    /// paused or cut off; the Jepsen harness must catch it.
    UnsafeUnboundedLease,
}

/// The share of the lease given up to clock-rate differences between nodes.
pub const LEASE_CLOCK_RATE_MARGIN_PERCENT: u64 = 10;

/// How long after a read-index round was issued its confirmation lets the
/// leader serve reads without another round: the shortest time a follower
/// that heard from it then refuses to vote ((election_ticks − 1) ticks: its
/// first tick may come right after the reset), less the rate margin.
pub fn lease_ms(s: &RaftSettings) -> u64 {
    (s.election_ticks.saturating_sub(1) as u64 * s.tick_ms) * (100 - LEASE_CLOCK_RATE_MARGIN_PERCENT) / 100
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RaftSettings {
    pub tick_ms: u64,
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
    /// Compact the log once this many entries are applied beyond the last compaction.
    pub snapshot_entries: u64,
    /// Entries kept behind the applied index at compaction, for slow followers.
    pub catch_up_entries: u64,
    pub read_mode: ReadMode,
    /// A node with no Raft state yet starts with an empty configuration and
    /// waits for the leader to add it (`kv serve --join`), instead of
    /// founding a group of the configured members.
    pub join: bool,
}

impl Default for RaftSettings {
    fn default() -> Self {
        RaftSettings {
            tick_ms: 50,
            election_ticks: 10,
            heartbeat_ticks: 2,
            snapshot_entries: 10_000,
            catch_up_entries: 1_000,
            read_mode: ReadMode::ReadIndex,
            join: false,
        }
    }
}

pub struct Proposal {
    pub cmd: rsm::Command,
    pub reply: oneshot::Sender<Result<Applied, LevelError>>,
}

/// A command's reply, with the applied index of the batch that answered
/// it: at or above the command's own entry, so a node that has applied
/// that far holds the command's cells (`Store::raft_applied`).
#[derive(Clone, Debug)]
pub struct Applied {
    pub reply: rsm::Reply,
    pub index: u64,
}

/// Completes with the read index once this node has applied up to it.
pub type ReadWaiter = oneshot::Sender<Result<u64, LevelError>>;

/// This node's role in the Raft group (raft-rs `StateRole`, named as
/// `kv cluster status` prints it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RaftRole {
    Leader,
    #[default]
    Follower,
    Candidate,
    PreCandidate,
}

impl RaftRole {
    pub fn as_str(self) -> &'static str {
        match self {
            RaftRole::Leader => "leader",
            RaftRole::Follower => "follower",
            RaftRole::Candidate => "candidate",
            RaftRole::PreCandidate => "pre-candidate",
        }
    }
}

impl From<StateRole> for RaftRole {
    fn from(s: StateRole) -> Self {
        match s {
            StateRole::Leader => RaftRole::Leader,
            StateRole::Follower => RaftRole::Follower,
            StateRole::Candidate => RaftRole::Candidate,
            StateRole::PreCandidate => RaftRole::PreCandidate,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RaftView {
    pub role: RaftRole,
    pub term: u64,
    pub leader_id: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    /// Milliseconds since a message from each peer was last received.
    pub last_contact_ms: BTreeMap<u32, u64>,
    /// The Raft configuration: voters and learners, ascending.
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    /// Leader only: the highest index known replicated to each member.
    pub matched: BTreeMap<u64, u64>,
    /// `Some(why)` once the driver stopped on a storage failure: what this
    /// node's Raft log holds is no longer known to it, so it can take no
    /// further part, and the node stops (`node::run_with`). `None` while
    /// the driver runs, and after an orderly shutdown.
    pub stopped: Option<String>,
}

/// Applied entries not yet written: their writes and what to do after.
struct Prepared {
    ops: Vec<WriteOp>,
    answers: Vec<Answer>,
    applied: Option<(u64, u64)>,
    /// What the `rsm` family holds once `ops` are written (for the cache).
    rsm_after: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Configuration changes among the entries, in log order.
    conf: Vec<ConfApplied>,
}

/// A configuration change applied by a batch: what follows its write.
struct ConfApplied {
    index: u64,
    ctx: Option<rsm::MemberChange>,
    /// The new configuration; `None` when raft-rs refused the change.
    cs: Option<raft::eraftpb::ConfState>,
}

pub struct Channels {
    pub proposals: mpsc::Receiver<Proposal>,
    pub reads: mpsc::Receiver<ReadWaiter>,
    pub inbound: mpsc::Receiver<Inbound>,
    pub events: mpsc::Receiver<TransportEvent>,
    pub conf: mpsc::Receiver<ConfProposal>,
}

/// State-machine values the driver remembers. It is the only writer of the
/// `rsm` family and never reads while its own writes are in flight, so the
/// copy is exact; emptied when it grows past this or a snapshot replaces
/// the state. Spares the value and session reads of every command.
pub const MAX_CACHED_RSM_KEYS: usize = 200_000;

/// `RsmRead` through the driver's cache, recording what it had to read.
struct CachedRsm<'a> {
    cache: &'a HashMap<Vec<u8>, Option<Vec<u8>>>,
    db: DbRsm<'a>,
    misses: std::cell::RefCell<Vec<(Vec<u8>, Option<Vec<u8>>)>>,
}

impl RsmRead for CachedRsm<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(v) = self.cache.get(key) {
            return Ok(v.clone());
        }
        let v = self.db.get(key)?;
        self.misses.borrow_mut().push((key.to_vec(), v.clone()));
        Ok(v)
    }

    fn scan(&self, prefix: &[u8], after: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        self.db.scan(prefix, after, limit)
    }
}

/// `RsmRead` over the live `rsm` column family.
pub struct DbRsm<'a>(pub &'a rocksdb::DB);

impl RsmRead for DbRsm<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.0.get_cf(cf(self.0, Cf::Rsm), key)?)
    }

    fn scan(&self, prefix: &[u8], after: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        let start = if after.is_empty() { prefix.to_vec() } else { after.to_vec() };
        let mut out = Vec::new();
        for item in
            self.0.iterator_cf(cf(self.0, Cf::Rsm), rocksdb::IteratorMode::From(&start, rocksdb::Direction::Forward))
        {
            let (k, v) = item?;
            if !k.starts_with(prefix) {
                break;
            }
            if &*k == after {
                continue;
            }
            out.push((k.to_vec(), v.to_vec()));
            if out.len() == limit {
                break;
            }
        }
        Ok(out)
    }
}

pub struct Driver {
    pub node: RawNode<RaftStore>,
    pub id: u32,
    pub store: Arc<Store>,
    pub transport: Transport,
    pub settings: RaftSettings,
    pub clock: Arc<Clock>,
    pub metrics: Arc<Metrics>,
    pub view: watch::Sender<RaftView>,
    pub cancel: CancellationToken,
    pub applied: u64,
    /// Per (client id, request id): the term it was proposed in, and who waits.
    /// A `BTreeMap`: failing them all (a new term) wakes their callers in
    /// one fixed order, which a seeded simulation relies on.
    waiters: BTreeMap<(u64, u64), Vec<(u64, oneshot::Sender<Result<Applied, LevelError>>)>>,
    /// Read-index requests in flight and the lease (see [`ReadIndexQueue`]).
    reads: ReadIndexQueue<ReadWaiter>,
    /// The term waiters were last checked against.
    seen_term: u64,
    /// Set when this node found it lost its log: the commit index it must
    /// reach before it votes again.
    recovering_until: Option<u64>,
    /// Tells peers (through the transport) that this node lost its log.
    pub lost_log: Arc<LostLog>,
    /// See [`MAX_CACHED_RSM_KEYS`].
    rsm_cache: HashMap<Vec<u8>, Option<Vec<u8>>>,
    /// Which proposals go into the next own entry, and when (see [`ProposalBatcher`]).
    batcher: ProposalBatcher<Proposal>,
    last_contact: HashMap<u64, Instant>,
    /// When the driver started: `now_ms` counts from here, and in lease
    /// mode no vote is granted for one election timeout after (see the
    /// module docs).
    started: Instant,
    snap_generating: bool,
    /// Simulation only: draws every randomized election timeout in place of
    /// raft-rs's thread RNG (see [`Driver::reseed_election_timeout`]).
    election_rng: Option<StdRng>,
    snap_done: (mpsc::Sender<Result<SnapMeta, StoreError>>, mpsc::Receiver<Result<SnapMeta, StoreError>>),
    /// Membership changes proposed here, by the index they were proposed
    /// at: (term, who waits).
    conf_waiters: BTreeMap<u64, (u64, oneshot::Sender<Result<raft::eraftpb::ConfState, MembershipError>>)>,
    /// The members of the start-up configuration (`--cluster`), under the
    /// records the state machine applies (`members::merge_into`).
    configured: BTreeMap<NodeId, String>,
    /// The current configuration's voters and learners (for the view).
    conf_ids: (Vec<u64>, Vec<u64>),
}

fn sorted(ids: &[u64]) -> Vec<u64> {
    let mut v = ids.to_vec();
    v.sort_unstable();
    v
}

/// Makes `peers` hold exactly `members` (and this node).
pub fn sync_peers(peers: &Peers, members: &BTreeMap<NodeId, String>) {
    for id in peers.ids() {
        if !members.contains_key(&id) {
            peers.remove(id);
        }
    }
    for (&id, addr) in members {
        if let Err(e) = peers.add(id, addr) {
            tracing::error!(id, error = %e, "cannot connect to a member");
        }
    }
}

/// Whether a batch of apply writes merges cells (`WriteOp::Merge`: the KV
/// commands' results, joined into the quorum order). Such a batch is
/// fsynced even when Raft would not need it: a quorum get returns a cell a
/// majority holds without writing it back, so every cell a replica shows
/// must survive a power loss — or a get after one could miss what an
/// earlier get returned (found by the join simulation, seed 856862). The
/// state machine part alone could stay unsynced: a restart re-applies it
/// from the log.
fn merges_cells(ops: &[WriteOp]) -> bool {
    ops.iter().any(|op| matches!(op, WriteOp::Merge { .. }))
}

pub fn raft_config(id: u32, applied: u64, s: &RaftSettings) -> raft::Config {
    raft::Config {
        id: id as u64,
        election_tick: s.election_ticks,
        heartbeat_tick: s.heartbeat_ticks,
        applied,
        max_size_per_msg: 1024 * 1024,
        max_inflight_msgs: 256,
        check_quorum: true,
        pre_vote: true,
        read_only_option: match s.read_mode {
            // Our lease is built on confirmed read-index rounds.
            ReadMode::ReadIndex | ReadMode::Lease => ReadOnlyOption::Safe,
            ReadMode::UnsafeUnboundedLease => ReadOnlyOption::LeaseBased,
        },
        max_committed_size_per_ready: 16 * 1024 * 1024,
        ..Default::default()
    }
}

impl Driver {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        node: RawNode<RaftStore>,
        id: u32,
        store: Arc<Store>,
        transport: Transport,
        settings: RaftSettings,
        clock: Arc<Clock>,
        metrics: Arc<Metrics>,
        view: watch::Sender<RaftView>,
        cancel: CancellationToken,
        applied: u64,
        lost_log: Arc<LostLog>,
        election_rng: Option<StdRng>,
        configured: BTreeMap<NodeId, String>,
    ) -> Driver {
        let reads = ReadIndexQueue::new(settings.read_mode == ReadMode::Lease, lease_ms(&settings));
        let cs = node.store().conf_state();
        let conf_ids = (sorted(&cs.voters), sorted(&cs.learners));
        // What the store holds now is what the applied index says.
        store.set_raft_applied(applied);
        let mut d = Driver {
            node,
            id,
            store,
            transport,
            settings,
            clock,
            metrics,
            view,
            cancel,
            applied,
            waiters: BTreeMap::new(),
            reads,
            seen_term: 0,
            recovering_until: None,
            lost_log,
            batcher: ProposalBatcher::new(0),
            rsm_cache: HashMap::new(),
            last_contact: HashMap::new(),
            started: Instant::now(),
            snap_generating: false,
            election_rng,
            snap_done: mpsc::channel(1),
            conf_waiters: BTreeMap::new(),
            configured,
            conf_ids,
        };
        d.reseed_election_timeout();
        d
    }

    /// raft-rs draws a node's election timeout from `rand::thread_rng()`
    /// whenever it resets its election timer (`Raft::reset`: every term or
    /// role change), which a simulation cannot seed. With an
    /// `election_rng`, a new timeout is drawn from it (in raft-rs's range,
    /// `[election_ticks, 2 × election_ticks)`) each time the timer is at
    /// zero — after every reset, and also after a follower hears from its
    /// leader, which changes nothing but is as deterministic — so the
    /// thread RNG's draw is never used. Called after each turn of the
    /// loop: ticks come only between turns, so no tick sees an unseeded
    /// timeout.
    fn reseed_election_timeout(&mut self) {
        let Some(rng) = self.election_rng.as_mut() else { return };
        let raft = &mut self.node.raft;
        if raft.election_elapsed == 0 {
            let min = self.settings.election_ticks;
            raft.set_randomized_election_timeout(rng.random_range(min..2 * min));
        }
    }

    pub async fn run(mut self, mut ch: Channels) {
        let mut tick = tokio::time::interval(Duration::from_millis(self.settings.tick_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut housekeeping = Instant::now();
        loop {
            let linger_until = self.batcher.linger_until_us().map(|us| self.started + Duration::from_micros(us));
            tokio::select! {
                _ = self.cancel.cancelled() => break,
                _ = tick.tick() => {
                    self.node.tick();
                    let now_ms = self.now_ms();
                    let retried = self.reads.retry(now_ms, &self.raft_facts(), |w| !w.is_closed());
                    self.run_reads(retried);
                    let renewal = self.reads.renew_lease(now_ms, &self.raft_facts());
                    self.run_reads(renewal);
                    if housekeeping.elapsed() >= Duration::from_secs(1) {
                        housekeeping = Instant::now();
                        self.housekeeping();
                    }
                    self.maybe_generate_snapshot();
                    if self.batcher.on_tick(self.now_us(), self.node.raft.leader_id != INVALID_ID) {
                        self.propose_entry(Vec::new());
                    }
                }
                Some(m) = ch.inbound.recv() => {
                    self.inbound(m);
                    for _ in 0..MAX_STEP_PER_TURN {
                        match ch.inbound.try_recv() {
                            Ok(m) => self.inbound(m),
                            Err(_) => break,
                        }
                    }
                }
                Some(p) = ch.proposals.recv(), if self.batcher.accepting() => {
                    let room = self.batcher.room();
                    let mut taken = vec![p];
                    while taken.len() < room {
                        match ch.proposals.try_recv() {
                            Ok(p) => taken.push(p),
                            Err(_) => break,
                        }
                    }
                    if let Some(batch) = self.batcher.offer(self.now_us(), taken) {
                        self.propose(batch);
                    }
                }
                _ = tokio::time::sleep_until(linger_until.unwrap_or_else(tokio::time::Instant::now)), if linger_until.is_some() => {
                    let batch = self.batcher.on_linger();
                    self.propose(batch);
                }
                Some(r) = ch.reads.recv() => {
                    let mut rs = vec![r];
                    while let Ok(r) = ch.reads.try_recv() {
                        rs.push(r);
                    }
                    let effects = self.reads.request(self.now_ms(), &self.raft_facts(), rs);
                    self.run_reads(effects);
                }
                Some(ev) = ch.events.recv() => self.on_event(ev),
                Some(p) = ch.conf.recv() => self.propose_conf(p),
                Some(done) = self.snap_done.1.recv() => {
                    self.snap_generating = false;
                    if let Err(e) = done {
                        tracing::error!(error = %e, "snapshot generation failed");
                    }
                }
            }
            if let Err(e) = self.handle_ready().await {
                // A storage failure: this node can no longer take part
                // safely. Nothing of the failed write was acknowledged (it
                // is one atomic batch); what is on disk stays consistent.
                let why = e.to_string();
                tracing::error!(error = %why, "raft storage failed: this node stops");
                self.view.send_modify(|v| {
                    v.stopped = Some(why);
                    v.leader_id = INVALID_ID;
                    v.role = RaftRole::Follower;
                });
                break;
            }
            // Once our entry was applied (or given up on), the next one aims
            // at most of the clients that were waiting.
            self.batcher.after_turn(ch.proposals.len());
            if self.node.raft.term != self.seen_term {
                self.on_term_change();
            }
            self.reseed_election_timeout();
            self.publish_view();
        }
        tracing::debug!("raft driver stopped");
    }

    /// A new term means leadership changed: proposals and reads in flight
    /// from older terms may never be answered (a forwarded proposal can be
    /// lost with a dead leader). Fail them now instead of at the deadline:
    /// writes as indeterminate (the client retries them with the same
    /// request id, which the session makes safe), reads as unavailable.
    fn on_term_change(&mut self) {
        let term = self.node.raft.term;
        self.seen_term = term;
        // Entries proposed in an older term may never be applied.
        self.batcher.on_term_change();
        let mut expired = Vec::new();
        for ws in self.waiters.values_mut() {
            let (old, current): (Vec<_>, Vec<_>) = std::mem::take(ws).into_iter().partition(|(t, _)| *t < term);
            *ws = current;
            expired.extend(old);
        }
        self.waiters.retain(|_, ws| !ws.is_empty());
        let mut failed = expired.len();
        for (_, w) in expired {
            let _ = w.send(Err(RaftError::WriteLeadershipChanged { term }.into()));
        }
        let old: Vec<u64> = self.conf_waiters.iter().filter(|(_, (t, _))| *t < term).map(|(&i, _)| i).collect();
        for index in old {
            if let Some((_, w)) = self.conf_waiters.remove(&index) {
                failed += 1;
                let _ = w.send(Err(MembershipError::LeadershipChanged { term }));
            }
        }
        // The lease ends too.
        let refused = self.reads.on_term_change(term);
        failed += self.run_reads(refused);
        if failed > 0 {
            tracing::debug!(term, failed, "failed requests in flight from an older term");
        }
    }

    fn inbound(&mut self, input: Inbound) {
        match input {
            Inbound::Message(m) => self.step(m),
            Inbound::LostLog { from, last_index } => self.peer_lost_log(from, last_index),
        }
    }

    /// A follower reports it holds entries only up to `last_index`, less than
    /// we recorded as replicated to it: it lost its log. Lower our record so
    /// Raft probes it again and sends what it lacks (a snapshot if our log
    /// no longer has it). Raft assumes durable logs, so nothing else would.
    fn peer_lost_log(&mut self, from: u64, last_index: u64) {
        if self.node.raft.state != StateRole::Leader {
            return;
        }
        if let Some(pr) = self.node.raft.mut_prs().get_mut(from) {
            if pr.matched > last_index {
                tracing::warn!(
                    peer = from,
                    matched = pr.matched,
                    last_index,
                    "peer lost its Raft log; re-replicating to it"
                );
                pr.matched = last_index;
                pr.become_probe();
            }
        }
    }

    fn step(&mut self, mut m: Message) {
        self.last_contact.insert(m.from, Instant::now());
        let last_index = self.node.raft.raft_log.last_index();
        // A heartbeat may only carry a commit index we hold (Raft §5.3). One
        // beyond our log means this node lost its log (its data dir was
        // wiped) while the leader still counts on it. Raft would panic; we
        // clamp, the leader's next append is rejected, it probes back and
        // sends a snapshot. Until caught up, this node must not vote: it may
        // have forgotten a vote it already gave in the current term.
        if m.get_msg_type() == MessageType::MsgHeartbeat && m.commit > last_index {
            if self.recovering_until.is_none() {
                tracing::warn!(
                    commit = m.commit,
                    last_index,
                    leader = m.from,
                    "the leader's commit index is beyond this node's log: this node lost its Raft data; \
                     catching up from the leader and not voting until then"
                );
            }
            self.recovering_until = Some(self.recovering_until.unwrap_or(0).max(m.commit));
            m.commit = last_index;
            self.lost_log.last_index.store(last_index, std::sync::atomic::Ordering::SeqCst);
            self.lost_log.lost.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        if self.recovering_until.is_some()
            && matches!(m.get_msg_type(), MessageType::MsgRequestVote | MessageType::MsgRequestPreVote)
        {
            return;
        }
        if self.settings.read_mode == ReadMode::Lease
            && matches!(m.get_msg_type(), MessageType::MsgRequestVote | MessageType::MsgRequestPreVote)
            && self.now_ms() < self.settings.tick_ms * self.settings.election_ticks as u64
        {
            // We may have acknowledged a leader's lease just before we
            // restarted; its lease must run out before anyone else leads.
            return;
        }
        if let Err(e) = self.node.step(m) {
            tracing::debug!(error = %e, "raft step");
        }
    }

    fn on_event(&mut self, ev: TransportEvent) {
        match ev {
            TransportEvent::Unreachable(to) => self.node.report_unreachable(to),
            TransportEvent::SnapshotSent { to, ok } => {
                let status = if ok { raft::SnapshotStatus::Finish } else { raft::SnapshotStatus::Failure };
                self.node.report_snapshot(to, status);
            }
        }
    }

    fn no_leader(&self) -> RaftError {
        RaftError::NoLeader { node: self.id, term: self.node.raft.term }
    }

    fn propose(&mut self, batch: Vec<Proposal>) {
        if self.node.raft.leader_id == INVALID_ID {
            let why = self.no_leader();
            for p in batch {
                let _ = p.reply.send(Err(why.clone().into()));
            }
            return;
        }
        let mut commands = Vec::with_capacity(batch.len());
        let mut bytes = EntryBytes::default();
        for p in batch {
            if self.waiters.len() >= MAX_PENDING_PROPOSALS {
                let why = RaftError::TooManyPending { what: "writes", max: MAX_PENDING_PROPOSALS };
                let _ = p.reply.send(Err(why.into()));
                continue;
            }
            let closes = bytes.closes_after(p.cmd.encoded_len());
            let term = self.node.raft.term;
            self.waiters.entry((p.cmd.client_id, p.cmd.request_id)).or_default().push((term, p.reply));
            commands.push(p.cmd);
            if closes {
                self.propose_entry(std::mem::take(&mut commands));
            }
        }
        if !commands.is_empty() {
            self.propose_entry(commands);
        }
    }

    fn propose_entry(&mut self, commands: Vec<rsm::Command>) {
        crate::metrics::inc(&self.metrics.raft_entries_proposed);
        add(&self.metrics.raft_commands_proposed, commands.len() as u64);
        let batch = rsm::Batch { stamp: self.clock.now(), proposer: self.id, commands };
        let proposed = self.node.propose(vec![], batch.encode_to_vec());
        self.batcher.proposed(self.now_us(), batch.commands.len(), proposed.is_ok());
        if let Err(e) = proposed {
            let why = RaftError::Dropped { reason: e.to_string(), node: self.id, term: self.node.raft.term };
            for c in batch.commands {
                if let Some(ws) = self.waiters.remove(&(c.client_id, c.request_id)) {
                    for (_, w) in ws {
                        let _ = w.send(Err(why.clone().into()));
                    }
                }
            }
        }
    }

    /// Checks a membership change (`membership::decide`) and proposes it,
    /// or answers why not.
    fn propose_conf(&mut self, p: ConfProposal) {
        let decided = self.leader_facts().and_then(|f| {
            let change_id = self.node.raft.raft_log.last_index() + 1;
            membership::decide(&p.op, &f, change_id).map(|d| (d, change_id))
        });
        match decided {
            Err(e) => {
                let _ = p.reply.send(Err(e));
            }
            Ok((Decision::TransferLeader { to }, _)) => {
                tracing::info!(to, "leader asked to remove itself: transferring leadership first");
                self.node.transfer_leader(to);
                let _ = p.reply.send(Err(MembershipError::LeaderMoving { id: self.id, to }));
            }
            Ok((Decision::Propose(cc, ctx), change_id)) => {
                let last_before = self.node.raft.raft_log.last_index();
                match self.node.propose_conf_change(ctx.encode_to_vec(), cc) {
                    Err(e) => {
                        let _ = p.reply.send(Err(MembershipError::Dropped { reason: e.to_string() }));
                    }
                    Ok(()) => {
                        assert_eq!(
                            self.node.raft.raft_log.last_index(),
                            last_before + 1,
                            "a leader appends a proposed change at once"
                        );
                        tracing::info!(op = ?p.op, index = change_id, "membership change proposed");
                        self.conf_waiters.insert(change_id, (self.node.raft.term, p.reply));
                    }
                }
            }
        }
    }

    fn leader_facts(&self) -> Result<LeaderFacts, MembershipError> {
        let r = &self.node.raft;
        let timeout = Duration::from_millis(self.settings.tick_ms * self.settings.election_ticks as u64);
        let mut recently_heard: std::collections::BTreeSet<u64> =
            self.last_contact.iter().filter(|(_, at)| at.elapsed() < timeout).map(|(&id, _)| id).collect();
        recently_heard.insert(self.id as u64);
        let records = members::read_all(&DbRsm(self.store.db()))
            .map_err(|e| MembershipError::Dropped { reason: format!("cannot read the member records: {e}") })?;
        Ok(LeaderFacts {
            me: self.id,
            is_leader: r.state == StateRole::Leader,
            leader: r.leader_id,
            pending: r.has_pending_conf(),
            conf: self.node.store().conf_state(),
            commit: r.raft_log.committed,
            matched: r.prs().iter().map(|(&id, pr)| (id, pr.matched)).collect(),
            recently_heard,
            records,
            max_members: MAX_MEMBERS,
        })
    }

    /// After the batch that applied configuration changes is written: the
    /// storage's configuration, the peer set and the callers that wait.
    fn conf_applied(&mut self, changes: Vec<ConfApplied>) {
        for ch in changes {
            if let Some(cs) = &ch.cs {
                self.node.store().set_conf_state(cs.clone());
                self.conf_ids = (sorted(&cs.voters), sorted(&cs.learners));
                if let Some(m) = ch.ctx.as_ref().and_then(|c| c.member.as_ref()) {
                    let peers = self.transport.peers();
                    let in_conf = cs.voters.contains(&(m.id as u64)) || cs.learners.contains(&(m.id as u64));
                    if in_conf && !m.removed {
                        if let Err(e) = peers.add(m.id, &m.peer_address) {
                            tracing::error!(id = m.id, error = %e, "cannot connect to a new member");
                        }
                    } else if !in_conf && m.id != self.id {
                        peers.remove(m.id);
                    } else if !in_conf && m.removed {
                        peers.mark_removed(format!("applied its own removal at index {}", ch.index));
                    }
                }
                tracing::info!(index = ch.index, voters = ?cs.voters, learners = ?cs.learners, "membership changed");
            }
            let ours = ch.ctx.as_ref().is_some_and(|c| c.change_id == ch.index);
            if let Some((_, w)) = ours.then(|| self.conf_waiters.remove(&ch.index)).flatten() {
                let _ = w.send(ch.cs.ok_or_else(|| MembershipError::Dropped {
                    reason: "Raft refused the change when applying it".into(),
                }));
            }
        }
    }

    /// Milliseconds since the driver started, on the monotonic clock: the
    /// time the pure cores ([`ReadIndexQueue`]) are given. A pause of the
    /// process only ages what they hold.
    pub fn now_ms(&self) -> u64 {
        self.now_us() / 1000
    }

    /// The same in microseconds, for the batcher's sub-millisecond linger.
    pub fn now_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    /// What the read-index queue needs to know of Raft and this node.
    fn raft_facts(&self) -> RaftFacts {
        let r = &self.node.raft;
        let is_leader = r.state == StateRole::Leader;
        RaftFacts {
            is_leader,
            leader_known: r.leader_id != INVALID_ID,
            term: r.term,
            commit_index: r.raft_log.committed,
            // A log lookup: only the lease needs it.
            committed_in_term: self.settings.read_mode == ReadMode::Lease && is_leader && r.commit_to_current_term(),
            applied: self.applied,
        }
    }

    /// Carries out what the read-index queue decided; returns how many
    /// readers were refused.
    fn run_reads(&mut self, effects: Vec<ReadEffect<ReadWaiter>>) -> usize {
        let mut refused = 0;
        for e in effects {
            match e {
                ReadEffect::Issue { ctx } => self.node.read_index(ctx),
                ReadEffect::Complete { index, waiter } => {
                    let _ = waiter.send(Ok(index));
                }
                ReadEffect::Refuse { why, waiter } => {
                    let why = match why {
                        Refusal::NoLeader => self.no_leader(),
                        Refusal::TooManyPending => RaftError::TooManyPending {
                            what: "reads",
                            max: super::read_index::MAX_PENDING_READ_CONTEXTS,
                        },
                        Refusal::LeadershipChanged => RaftError::ReadLeadershipChanged,
                    };
                    let _ = waiter.send(Err(why.into()));
                    refused += 1;
                }
                ReadEffect::LeaseServed { reads } => add(&self.metrics.lease_reads, reads as u64),
            }
        }
        refused
    }

    /// This node applied more: readers waiting for it complete.
    fn complete_reads(&mut self) {
        let done = self.reads.complete(self.applied);
        self.run_reads(done);
    }

    fn housekeeping(&mut self) {
        self.waiters.retain(|_, ws| {
            ws.retain(|(_, w)| !w.is_closed());
            !ws.is_empty()
        });
        self.reads.expire(self.now_ms());
    }

    fn maybe_generate_snapshot(&mut self) {
        if self.snap_generating {
            return;
        }
        let snapshots = self.node.store().snapshots.clone();
        if snapshots.take_request().is_none() {
            return;
        }
        self.snap_generating = true;
        let db = self.store.db().clone();
        let done = self.snap_done.0.clone();
        crate::rt::spawn_blocking(move || {
            // Room is certain: one generation at a time (`snap_generating`)
            // and the channel holds one result. Not `blocking_send`: on a
            // current-thread runtime this closure runs as a task.
            let _ = done.try_send(snapshots.generate(&db));
        });
    }

    async fn handle_ready(&mut self) -> Result<(), StoreError> {
        if !self.node.has_ready() {
            return Ok(());
        }
        let mut rd = self.node.ready();
        crate::metrics::inc(&self.metrics.raft_readies);
        // 1. The leader's messages may go out before it persists.
        if !rd.messages().is_empty() {
            self.transport.send(rd.take_messages());
        }
        // 2. A snapshot from the leader replaces our state.
        if !rd.snapshot().is_empty() {
            let snap = rd.snapshot().clone();
            self.install_snapshot(&snap).await?;
        }
        // 3. Apply what is committed (and already durable here). Its writes
        // join the batch of steps 4-5: one trip to the writer per Ready.
        let committed = rd.take_committed_entries();
        let apply_started = (!committed.is_empty()).then(std::time::Instant::now);
        let prepared = self.prepare_apply(&committed)?;
        // 4-5. Entries and hard state: one synced batch.
        let entries = rd.take_entries();
        let hs = rd.hs().cloned();
        let (mut ops, answers, applied, rsm_after, conf) = match prepared {
            Some(Prepared { ops, answers, applied, rsm_after, conf }) => (ops, answers, applied, rsm_after, conf),
            None => (Vec::new(), Vec::new(), None, Vec::new(), Vec::new()),
        };
        ops.extend(self.node.store().append_ops(&entries)?);
        if let Some(hs) = &hs {
            ops.push(RaftStore::hard_state_op(hs));
        }
        if !ops.is_empty() {
            let sync = rd.must_sync() || merges_cells(&ops);
            if sync {
                crate::metrics::inc(&self.metrics.raft_synced_writes);
            }
            let outcomes = self.store.write(ops, sync).await?;
            self.count_purged(&outcomes);
            self.node.store().appended(&entries, hs.as_ref());
        }
        self.remember_rsm(rsm_after);
        self.conf_applied(conf);
        self.finish_apply(answers, applied);
        if let Some(t) = apply_started {
            self.metrics.raft_apply.observe(t.elapsed());
        }
        for rs in rd.take_read_states() {
            let effects = self.reads.on_read_state(rs.index, &rs.request_ctx, &self.raft_facts());
            self.run_reads(effects);
        }
        // 6. Messages that must follow persistence (votes, appends' acks).
        if !rd.persisted_messages().is_empty() {
            self.transport.send(rd.take_persisted_messages());
        }
        // 7. Advance.
        let mut light = self.node.advance(rd);
        // A commit index advanced here (by our own persistence: always so
        // with one voter) is written with the entries it lets us apply, so
        // the persisted commit index never falls behind the persisted
        // applied index (raft-rs refuses to start on such a state).
        let commit_hs = light.commit_index().map(|commit| {
            self.node.store().set_commit(commit);
            RaftStore::hard_state_op(&self.node.store().hard_state())
        });
        self.transport.send(light.take_messages());
        self.apply(light.take_committed_entries(), commit_hs).await?;
        self.node.advance_apply();
        self.maybe_compact().await
    }

    /// Applies `entries` on its own (one write, fsynced only when it merges
    /// cells: see [`merges_cells`]), together with the hard state `hs_op`
    /// when the commit index moved.
    async fn apply(&mut self, entries: Vec<raft::eraftpb::Entry>, hs_op: Option<WriteOp>) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        let Some(Prepared { mut ops, answers, applied, rsm_after, conf }) = self.prepare_apply(&entries)? else {
            if let Some(op) = hs_op {
                self.store.write(vec![op], false).await?;
            }
            return Ok(());
        };
        ops.extend(hs_op);
        let sync = merges_cells(&ops) || !conf.is_empty();
        let outcomes = self.store.write(ops, sync).await?;
        self.count_purged(&outcomes);
        self.remember_rsm(rsm_after);
        self.conf_applied(conf);
        self.finish_apply(answers, applied);
        self.metrics.raft_apply.observe(started.elapsed());
        Ok(())
    }

    /// Counts the cells a `Purge` command deleted on this node.
    fn count_purged(&self, outcomes: &[OpOutcome]) {
        let purged = outcomes.iter().filter(|o| matches!(o, OpOutcome::Purged { removed: true })).count();
        if purged > 0 {
            add(&self.metrics.tombstones_purged, purged as u64);
        }
    }

    /// What applying `entries` writes, and the replies it gives once written;
    /// `None` when there is nothing to apply.
    fn prepare_apply(&mut self, entries: &[raft::eraftpb::Entry]) -> Result<Option<Prepared>, StoreError> {
        if entries.is_empty() {
            return Ok(None);
        }
        let db = self.store.db().clone();
        let view = CachedRsm { cache: &self.rsm_cache, db: DbRsm(&db), misses: Default::default() };
        let voters = self.node.store().conf_state().voters.iter().map(|&v| v as u32).collect::<Vec<_>>();
        let mut applier = Applier::new(&view).with_voters(voters);
        let mut conf_ops = Vec::new();
        let mut conf_applied = Vec::new();
        for e in entries {
            if e.index <= self.applied {
                continue;
            }
            match e.get_entry_type() {
                EntryType::EntryNormal => applier.apply(e.index, e.term, e.get_data())?,
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    // Membership (`rsm::membership`): capkv proposes V2
                    // changes whose context names the member; applying one
                    // stores the new configuration and the member's record
                    // in the same batch.
                    let malformed =
                        |x: protobuf::ProtobufError| StoreError::Malformed { what: "conf change", source: x.into() };
                    // capkv proposes only V2 changes; a V1 change is applied
                    // for Raft's sake and records nothing.
                    let (v1, cc) = if e.get_entry_type() == EntryType::EntryConfChange {
                        (Some(ConfChange::parse_from_bytes(e.get_data()).map_err(malformed)?), ConfChangeV2::default())
                    } else {
                        (None, ConfChangeV2::parse_from_bytes(e.get_data()).map_err(malformed)?)
                    };
                    let ctx = match v1 {
                        Some(_) => None,
                        None => members::decode_context(e.get_context())?,
                    };
                    let applied_cs = match &v1 {
                        Some(v1) => self.node.apply_conf_change(v1),
                        None => self.node.apply_conf_change(&cc),
                    };
                    let cs = match applied_cs {
                        Ok(cs) => {
                            conf_ops.push(WriteOp::Put {
                                cf: Cf::RaftState,
                                key: super::storage::KEY_CONF_STATE.to_vec(),
                                value: cs
                                    .write_to_bytes()
                                    .map_err(|x| StoreError::Malformed { what: "conf state", source: x.into() })?,
                            });
                            conf_ops.extend(members::change_ops(&cc, ctx.as_ref()));
                            Some(cs)
                        }
                        Err(err) => {
                            tracing::warn!(index = e.index, %err, "raft refused a committed configuration change");
                            None
                        }
                    };
                    conf_applied.push(ConfApplied { index: e.index, ctx, cs });
                    applier.apply(e.index, e.term, &[])?;
                }
            }
        }
        let own = applier.proposed_by(self.id);
        self.batcher.applied_own(self.now_us(), own);
        let (mut ops, answers, applied) = applier.finish();
        ops.extend(conf_ops);
        if ops.is_empty() {
            return Ok(None);
        }
        let mut rsm_after = view.misses.into_inner();
        for op in &ops {
            match op {
                WriteOp::Put { cf: Cf::Rsm, key, value } => rsm_after.push((key.clone(), Some(value.clone()))),
                WriteOp::Delete { cf: Cf::Rsm, key } => rsm_after.push((key.clone(), None)),
                WriteOp::DeleteRange { cf: Cf::Rsm, .. } => unreachable!("apply never range-deletes the state machine"),
                _ => {}
            }
        }
        Ok(Some(Prepared { ops, answers, applied, rsm_after, conf: conf_applied }))
    }

    /// After the apply ops are written: advance the applied index, answer
    /// the waiters and the reads that waited for this index.
    fn finish_apply(&mut self, answers: Vec<Answer>, applied: Option<(u64, u64)>) {
        if let Some((index, _)) = applied {
            assert!(index > self.applied, "applied index regressed: {} -> {index}", self.applied);
            self.applied = index;
            // Written (and fsynced if it merged cells) before this call.
            self.store.set_raft_applied(index);
        }
        add(&self.metrics.linearizable_ops, answers.len() as u64);
        for a in answers {
            if let Some(ws) = self.waiters.remove(&(a.client_id, a.request_id)) {
                for (_, w) in ws {
                    let _ = w.send(Ok(Applied { reply: a.reply.clone(), index: self.applied }));
                }
            }
        }
        self.complete_reads();
        self.check_recovered();
    }

    /// Records what the `rsm` family holds after a completed write.
    fn remember_rsm(&mut self, after: Vec<(Vec<u8>, Option<Vec<u8>>)>) {
        if self.rsm_cache.len() + after.len() > MAX_CACHED_RSM_KEYS {
            self.rsm_cache.clear();
        }
        self.rsm_cache.extend(after);
    }

    fn check_recovered(&mut self) {
        if self.recovering_until.is_some_and(|c| self.applied >= c) {
            tracing::info!(applied = self.applied, "caught up after losing the Raft log; voting again");
            self.recovering_until = None;
            self.lost_log.lost.store(false, std::sync::atomic::Ordering::SeqCst);
        }
    }

    async fn install_snapshot(&mut self, snap: &Snapshot) -> Result<(), StoreError> {
        let meta = snap.get_metadata();
        let name = String::from_utf8(snap.get_data().to_vec())
            .map_err(|e| StoreError::Malformed { what: "snapshot file name", source: e.into() })?;
        tracing::info!(index = meta.index, term = meta.term, file = %name, "installing snapshot from the leader");
        self.rsm_cache.clear();
        install(&self.store, self.node.store(), &name, meta.get_conf_state()).await?;
        self.applied = meta.index;
        self.store.set_raft_applied(meta.index);
        let cs = meta.get_conf_state();
        self.conf_ids = (sorted(&cs.voters), sorted(&cs.learners));
        // The snapshot brings the member records of the changes it covers.
        let records = members::read_all(&DbRsm(self.store.db()))?;
        sync_peers(self.transport.peers(), &members::merge_into(&self.configured, &records));
        self.complete_reads();
        self.check_recovered();
        Ok(())
    }

    async fn maybe_compact(&mut self) -> Result<(), StoreError> {
        let (truncated, _) = self.node.store().truncated();
        let s = &self.settings;
        if self.applied < truncated + s.snapshot_entries + s.catch_up_entries {
            return Ok(());
        }
        let target = self.applied - s.catch_up_entries;
        if let Some((ops, t)) = self.node.store().compact_ops(target)? {
            self.store.write(ops, false).await?;
            self.node.store().compacted(t);
            tracing::debug!(index = t.0, "raft log compacted");
        }
        Ok(())
    }

    fn publish_view(&mut self) {
        let r = &self.node.raft;
        let now = Instant::now();
        let view = RaftView {
            role: r.state.into(),
            term: r.term,
            leader_id: r.leader_id,
            commit_index: r.raft_log.committed,
            applied_index: self.applied,
            last_contact_ms: self
                .last_contact
                .iter()
                .map(|(&id, at)| (id as u32, now.duration_since(*at).as_millis() as u64))
                .collect(),
            voters: self.conf_ids.0.clone(),
            learners: self.conf_ids.1.clone(),
            matched: if r.state == StateRole::Leader {
                r.prs().iter().map(|(&id, pr)| (id, pr.matched)).collect()
            } else {
                BTreeMap::new()
            },
            stopped: None,
        };
        let prev_leader = self.view.borrow().leader_id;
        if view.leader_id != prev_leader && view.leader_id != INVALID_ID {
            crate::metrics::inc(&self.metrics.raft_leader_changes);
        }
        self.view.send_if_modified(|v| {
            // Contact ages change every turn; publish them at most as often
            // as something else changes or once per tick.
            if *v == view {
                false
            } else {
                *v = view;
                true
            }
        });
    }
}

/// Installs the snapshot file `name` (in the node's snapshot dir): replaces
/// the `rsm` family, LWW-merges its keys into `cells` and moves the Raft log
/// to the snapshot's position, all in **one write batch**. Readers of the
/// `rsm` family (linearizable gets, the topic reconcile loop, snapshot
/// generation) therefore see the state before or the state after, never the
/// family half refilled: a reconcile that found a hosted topic missing would
/// delete its replica (safety review, issue 19). The whole file is read and
/// checked before anything is written; its size is bounded by
/// [`MAX_INSTALL_BYTES`]. Safe to redo after a crash: the `installing` marker
/// names the file until the batch is written, and start-up installs it again.
pub async fn install(
    store: &Store,
    raft_store: &RaftStore,
    name: &str,
    cs: &raft::eraftpb::ConfState,
) -> Result<(), StoreError> {
    let path = raft_store.snapshots.file(name)?;
    let file_bytes = std::fs::metadata(&path)
        .map_err(|source| StoreError::Io { op: "stat snapshot", path: path.clone(), source })?
        .len();
    if file_bytes > MAX_INSTALL_BYTES {
        return Err(StoreError::SnapshotTooLarge {
            name: name.to_string(),
            bytes: file_bytes,
            max_bytes: MAX_INSTALL_BYTES,
        });
    }
    let mut reader = SnapshotReader::open(&path)?;
    let (index, term) = (reader.meta.index, reader.meta.term);
    let mut ops = vec![WriteOp::DeleteRange { cf: Cf::Rsm, from: Vec::new(), to: vec![0xff] }];
    let records = crate::rt::block_in_place(|| install_ops(&mut reader, &mut ops))?;
    store
        .write(
            vec![WriteOp::Put { cf: Cf::RaftState, key: KEY_INSTALLING.to_vec(), value: name.as_bytes().to_vec() }],
            true,
        )
        .await?;
    ops.extend(raft_store.snapshot_ops(index, term, cs));
    ops.push(WriteOp::Delete { cf: Cf::RaftState, key: KEY_INSTALLING.to_vec() });
    // One job is one RocksDB write batch (`store::writer`): all or nothing.
    store.write(ops, true).await?;
    raft_store.snapshot_installed(index, term, cs);
    tracing::info!(index, term, records, file_bytes, "snapshot installed");
    Ok(())
}

/// At start-up: redoes a snapshot install that a crash interrupted (the
/// `installing` marker is still there), so the node never runs on the state
/// from before it with the marker left behind. Returns whether it did.
pub async fn finish_interrupted_install(store: &Store, raft_store: &RaftStore) -> Result<bool, StoreError> {
    let Some(name) = store.get_raw(Cf::RaftState, KEY_INSTALLING)? else { return Ok(false) };
    let name = String::from_utf8_lossy(&name).into_owned();
    tracing::warn!(file = %name, "finishing a snapshot install interrupted by a crash");
    install(store, raft_store, &name, &raft_store.conf_state()).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use super::super::snapshot::Snapshots;
    use super::super::state_machine::{decode_applied, user_key, META_APPLIED};
    use super::*;
    use crate::clock::Clock;

    /// The `rsm` writes of a state machine holding `keys` user keys (valued
    /// `tag`) and sessions, applied up to `applied` (index, term).
    fn rsm_state(keys: usize, tag: &str, applied: (u64, u64)) -> Vec<WriteOp> {
        let mut ops = Vec::with_capacity(keys + 3);
        for i in 0..keys {
            let v = rsm::Value {
                value: format!("{tag}-{i}").into_bytes().into(),
                tombstone: false,
                hlc: 1_000 + applied.0,
                node_id: 1,
                rmw: 0,
            };
            ops.push(WriteOp::Put {
                cf: Cf::Rsm,
                key: user_key(format!("key-{i:06}").as_bytes()),
                value: v.encode_to_vec(),
            });
        }
        ops.push(WriteOp::Put {
            cf: Cf::Rsm,
            key: super::super::state_machine::session_key(7),
            value: tag.as_bytes().to_vec(),
        });
        let mut a = applied.0.to_be_bytes().to_vec();
        a.extend_from_slice(&applied.1.to_be_bytes());
        ops.push(WriteOp::Put { cf: Cf::Rsm, key: META_APPLIED.to_vec(), value: a });
        ops
    }

    /// A follower holding `keys` keys (valued `old-…`) at (index 400, term 2),
    /// its Raft storage, and the name of a leader's snapshot file of the same
    /// keys (valued `new-…`) at (index 900, term 3) in its snapshot dir.
    async fn follower_with_snapshot(
        leader_dir: &Path,
        follower_dir: &Path,
        keys: usize,
    ) -> (Arc<Store>, RaftStore, String) {
        let leader = Store::open(leader_dir, Arc::new(Clock::new(1, 500)), vec![2, 3]).unwrap();
        leader.write(rsm_state(keys, "new", (900, 3)), true).await.unwrap();
        let leader_snaps = Snapshots::open(leader_dir.join("snapshots")).unwrap();
        let meta = leader_snaps.generate(leader.db()).unwrap();

        let follower = Store::open(follower_dir, Arc::new(Clock::new(2, 500)), vec![1, 3]).unwrap();
        follower.write(rsm_state(keys, "old", (400, 2)), true).await.unwrap();
        let snaps = Arc::new(Snapshots::open(follower_dir.join("snapshots")).unwrap());
        std::fs::copy(leader_snaps.path(&meta.file_name()), snaps.path(&meta.file_name())).unwrap();
        let raft_store = RaftStore::open(follower.db().clone(), &[1, 2, 3], snaps).unwrap();
        (follower, raft_store, meta.file_name())
    }

    fn applied(store: &Store) -> Option<(u64, u64)> {
        DbRsm(store.db()).get(META_APPLIED).unwrap().and_then(|b| decode_applied(&b))
    }

    /// Safety review (issue 19, item 5): installing a snapshot replaces the
    /// `rsm` family, and a reader of it (a linearizable get whose read
    /// barrier completed, the topic reconcile loop) must see the state
    /// before or the state after, never the family half refilled: a key
    /// present in both must never read as absent. The state is large enough
    /// to have spanned several of the install's former batches of 4096
    /// records.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn readers_never_see_a_snapshot_install_half_done() {
        const KEYS: usize = 20_000;
        let (leader_dir, follower_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (follower, raft_store, name) = follower_with_snapshot(leader_dir.path(), follower_dir.path(), KEYS).await;

        // Keys early, in the middle and late in the family's order.
        let watched: Vec<Vec<u8>> = vec![
            user_key(b"key-000000"),
            user_key(format!("key-{:06}", KEYS / 2).as_bytes()),
            user_key(format!("key-{:06}", KEYS - 1).as_bytes()),
            META_APPLIED.to_vec(),
            super::super::state_machine::session_key(7),
        ];
        let stop = Arc::new(AtomicBool::new(false));
        let reads = Arc::new(AtomicU64::new(0));
        let reader = {
            let (db, stop, reads, watched) = (follower.db().clone(), stop.clone(), reads.clone(), watched.clone());
            std::thread::spawn(move || {
                let mut missing: Vec<String> = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    for k in &watched {
                        if DbRsm(&db).get(k).unwrap().is_none() && missing.len() < 10 {
                            missing.push(String::from_utf8_lossy(k).into_owned());
                        }
                        reads.fetch_add(1, Ordering::SeqCst);
                    }
                }
                missing
            })
        };
        while reads.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        let cs = raft::eraftpb::ConfState { voters: vec![1, 2, 3], ..Default::default() };
        install(&follower, &raft_store, &name, &cs).await.unwrap();
        stop.store(true, Ordering::SeqCst);
        let missing = reader.join().unwrap();
        assert!(reads.load(Ordering::SeqCst) > 0);
        assert!(missing.is_empty(), "a reader saw keys missing during the install: {missing:?}");

        // The install is complete: the leader's values and applied index.
        assert_eq!(applied(&follower), Some((900, 3)));
        let last = DbRsm(follower.db()).get(&watched[2]).unwrap().expect("last key");
        let last = rsm::Value::decode(&last[..]).unwrap();
        assert_eq!(last.value, format!("new-{}", KEYS - 1).into_bytes());
        assert_eq!(follower.get_raw(Cf::RaftState, KEY_INSTALLING).unwrap(), None);
        assert_eq!(raft_store.truncated(), (900, 3));
    }

    /// Crash safety of the install: kill -9 after the `installing` marker
    /// is written but before the install's one batch leaves the old state and
    /// the marker (the batch itself is all or nothing in RocksDB's log).
    /// Start-up finishes the install from the file, then has nothing to do.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_install_interrupted_by_a_crash_is_finished_at_start_up() {
        const KEYS: usize = 5_000;
        let (leader_dir, follower_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let name = {
            let (follower, _raft_store, name) =
                follower_with_snapshot(leader_dir.path(), follower_dir.path(), KEYS).await;
            let marker =
                WriteOp::Put { cf: Cf::RaftState, key: KEY_INSTALLING.to_vec(), value: name.clone().into_bytes() };
            follower.write(vec![marker], true).await.unwrap();
            name
        };

        // Restart.
        let follower = Store::open(follower_dir.path(), Arc::new(Clock::new(2, 500)), vec![1, 3]).unwrap();
        let snaps = Arc::new(Snapshots::open(follower_dir.path().join("snapshots")).unwrap());
        assert!(snaps.path(&name).exists());
        let raft_store = RaftStore::open(follower.db().clone(), &[1, 2, 3], snaps).unwrap();
        assert_eq!(applied(&follower), Some((400, 2)), "the crash left the state from before the install");
        assert!(finish_interrupted_install(&follower, &raft_store).await.unwrap());
        assert_eq!(applied(&follower), Some((900, 3)));
        assert_eq!(follower.get_raw(Cf::RaftState, KEY_INSTALLING).unwrap(), None);
        assert_eq!(raft_store.truncated(), (900, 3));
        let last = DbRsm(follower.db()).get(&user_key(format!("key-{:06}", KEYS - 1).as_bytes())).unwrap().unwrap();
        assert_eq!(rsm::Value::decode(&last[..]).unwrap().value, format!("new-{}", KEYS - 1).into_bytes());
        assert!(!finish_interrupted_install(&follower, &raft_store).await.unwrap(), "nothing left to finish");
    }
}
