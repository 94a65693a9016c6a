//! A deterministic simulation of the joined protocol (tests only): quorum
//! (ABD) get/set/del and consensus (Raft) set/del/cas/get on the same keys,
//! checked together for linearizability per key.
//!
//! Why it exists: `levels::linear` makes the two orders one keyspace (the
//! join: a majority read before each proposal, its cell as the command's
//! dependency, the result written back to a majority before the answer,
//! and linear gets that answer the newer of the read index's state machine
//! and a majority; CAS results are carstamps, `Version::after_rmw`). That
//! argument is about interleavings of concurrent quorum writes with
//! proposals across partitions, which real processes produce rarely and
//! never reproducibly. Here one seeded RNG decides every delay, loss and
//! fault, and every ordered structure is a `BTreeMap`, so a seed replays
//! the exact schedule.
//!
//! What is real and what is modelled:
//! - real: the ABD [`Coordinator`] (every quorum op, and the join's reads
//!   and `Op::Impose` write-backs), the replica cell rule
//!   (`quorum::replica::Replica`, LWW by version), and the Raft state
//!   machine's apply code (`Applier`, `kv::dep_of`, `kv::read_cell`) over an
//!   in-memory `rsm` family ([`log`]);
//! - modelled: Raft itself, as a consensus oracle with one log (the commit
//!   order); a proposal reaches it after a delay, or is lost, or is refused
//!   when the proposer's node is cut off. Each node applies the committed
//!   entries in order, at random later times, in one batch with the cells
//!   they merge (`WriteOp::Merge`) and the applied index, as `Driver::apply`
//!   does; a proposer's answer comes when *its own* node applies the entry
//!   (the driver's waiters), and may be lost on the way to the client. A
//!   read index is the log's length at a moment after the get's invocation;
//!   the get's node answers once it has applied that far, from its own
//!   state machine at its applied index.
//! - each node's storage ([`storage`]) is a write-ahead log of synced
//!   replica writes and of apply batches: fsynced when they merge cells
//!   (as the driver does), otherwise when their Raft `Ready` also persisted
//!   entries (a share `apply_sync_pct` of them), and by any later fsync of
//!   the node: a replica write, or appending a later entry, which every
//!   node connected to the majority does when an entry commits.
//!   [`Durability::UnsyncedCellApplies`] is the driver before that rule.
//! - the steps of `levels::linear` (`get`, `write`, `cas`) are mirrored
//!   here one for one; the quorum level's CAS is linear's CAS
//!   (`levels::join`), so both levels' CAS run the same path.
//!
//! Fault model: per-link latency and jitter (some messages much slower),
//! message loss (reported to the coordinator or not), windows that isolate
//! a minority of nodes (clients at home there can reach neither a majority
//! nor the oracle), proposals lost or answered never, clients crashing while
//! sending a write phase, clock jumps, operation deadlines, and node
//! crashes: windows that take one node down, or sometimes several at once
//! (a power cut of a rack). A crash is a process kill (nothing written is
//! lost) or a power loss (the log keeps its fsynced prefix and maybe some
//! of the rest); the node's in-memory state is gone (its clients'
//! operations end indeterminate, its waiting proposals and reads are
//! dropped). On restart its replica serves reads at once from what its
//! storage kept, and its state machine re-applies the log from its
//! applied index, as the real node does (the peer service does not wait
//! for the Raft driver). An operation whose effect is unknown is recorded
//! as such and the checker may place it anywhere after its invocation, or
//! nowhere. `CAPKV_JOIN_SIM_TRACE=1` prints every step of a run.
//!
//! [`Join::Off`] is the negative control (as `--unsafe-skip-level-join`):
//! no majority read (dependency `None`), no write-back, linear gets read the
//! state machine only. The other [`Join`] variants each leave out one part of
//! the join, to show which parts the schedules need.
//! [`Durability::LosesAcknowledged`] is the restart model's negative
//! control: a power loss that also takes acknowledged (fsynced) writes.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

use super::quorum::core::{Coordinator, Effect, Input, Message, Op, Outcome, Phase, QuorumConfig, QuorumError};
use super::quorum::linearizability::{self, Entry, RegOp, Value};
use crate::clock::{NodeId, Version};
use crate::level::Level;
use crate::proto::rsm::{self, command::Op as RsmOp, reply};
use crate::rsm::state_machine::kv;
use crate::store::Cell;
use log::Log;
use storage::NodeStorage;
pub use storage::{CrashKind, Durability};

mod log;
mod storage;
#[cfg(test)]
mod tests;

/// How much of the join the simulated nodes do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Join {
    /// What `levels::linear` does.
    Full,
    /// Nothing of it (`--unsafe-skip-level-join`).
    Off,
    /// Commands are proposed without the majority's cell as dependency
    /// (the majority read and every write-back still happen).
    NoDependency,
    /// Command results are not written back to a majority before the
    /// answer (linear gets still write back what they return).
    NoCommandWriteBack,
    /// Linear gets answer the state machine's newer cell without writing
    /// it back to a majority first.
    NoGetWriteBack,
    /// Replicas acknowledge a command's write-back without writing it even
    /// when they have not applied the command's entry (the real rule holds
    /// it only at an applied index of at least `applied_at`).
    HoldUnapplied,
}

impl Join {
    fn reads_majority(self) -> bool {
        self != Join::Off
    }

    fn sends_dependency(self) -> bool {
        !matches!(self, Join::Off | Join::NoDependency)
    }

    fn writes_back_commands(self) -> bool {
        !matches!(self, Join::Off | Join::NoCommandWriteBack)
    }

    fn writes_back_gets(self) -> bool {
        !matches!(self, Join::Off | Join::NoGetWriteBack)
    }
}

/// The knobs of one run, all drawn from the seed (see [`run`]).
#[derive(Clone, Debug)]
pub struct JoinSimConfig {
    pub seed: u64,
    /// What the nodes do (the real protocol or a negative control).
    pub variant: Variant,
    pub replica_count: usize,
    pub client_count: usize,
    pub key_count: usize,
    pub ops_per_client: usize,
    /// Each (client, node) link's base latency, drawn from `1..=max_link_ms`.
    pub max_link_ms: u64,
    /// Jitter on every message: `0..=max_delay_ms`.
    pub max_delay_ms: u64,
    pub slow_pct: u32,
    pub slow_factor: u64,
    pub drop_pct: u32,
    /// Share of lost messages the coordinator hears about as `Failed`.
    pub fail_on_drop_pct: u32,
    /// Windows that isolate a minority of nodes, one after another.
    pub partition_count: usize,
    /// A proposal is applied `1..=max_raft_ms` after it is sent, and its
    /// answer takes as long again.
    pub max_raft_ms: u64,
    pub proposal_lost_pct: u32,
    pub answer_lost_pct: u32,
    /// A replica merges an applied entry `0..=max_merge_lag_ms` later.
    pub max_merge_lag_ms: u64,
    /// Chance that a client crashes while sending a write phase.
    pub writer_crash_pct: u32,
    pub clock_jump_pct: u32,
    pub timeout_ms: u64,
    pub max_think_ms: u64,
    /// Node crash windows, one after another, each crashing one node or
    /// sometimes several at once.
    pub restart_count: usize,
    /// Share of crashes that are power losses (the rest are process kills).
    pub power_loss_pct: u32,
    /// Share of apply batches that are fsynced (their Raft `Ready` also
    /// persisted entries, a term or a vote).
    pub apply_sync_pct: u32,
}

impl JoinSimConfig {
    fn draw(seed: u64, variant: Variant, rng: &mut StdRng) -> JoinSimConfig {
        JoinSimConfig {
            seed,
            variant,
            replica_count: *[3, 3, 3, 5].choose(rng).expect("non-empty"),
            client_count: rng.random_range(2..=4),
            key_count: *[1, 1, 1, 2].choose(rng).expect("non-empty"),
            ops_per_client: rng.random_range(4..=10),
            max_link_ms: rng.random_range(1..=15),
            max_delay_ms: rng.random_range(0..=10),
            slow_pct: rng.random_range(0..=25),
            slow_factor: rng.random_range(3..=20),
            drop_pct: rng.random_range(0..=10),
            fail_on_drop_pct: rng.random_range(0..=100),
            partition_count: rng.random_range(0..=3),
            max_raft_ms: rng.random_range(1..=40),
            proposal_lost_pct: rng.random_range(0..=10),
            answer_lost_pct: rng.random_range(0..=15),
            max_merge_lag_ms: rng.random_range(0..=200),
            writer_crash_pct: rng.random_range(0..=15),
            clock_jump_pct: rng.random_range(0..=15),
            timeout_ms: rng.random_range(150..=500),
            max_think_ms: rng.random_range(0..=20),
            restart_count: *[0, 1, 2, 3, 4].choose(rng).expect("non-empty"),
            power_loss_pct: rng.random_range(0..=100),
            apply_sync_pct: rng.random_range(0..=100),
        }
    }
}

/// A client operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    QuorumGet,
    /// Quorum set of a value id (`None`: delete).
    QuorumWrite(Value),
    LinearGet,
    /// Linear set of a value id (`None`: delete).
    LinearWrite(Value),
    /// CAS at `level` (quorum or linearizable: the same path).
    Cas {
        level: Level,
        expected: Value,
        new: u64,
    },
}

/// How an operation ended, as its client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HistResult {
    /// Never returned: its client crashed mid-operation.
    Pending,
    Read(Value),
    Written,
    Cas {
        swapped: bool,
        current: Value,
    },
    /// Definitely had no effect.
    Failed,
    /// May or may not have taken effect.
    Indeterminate,
}

#[derive(Clone, Debug)]
pub struct HistOp {
    pub client: usize,
    pub key: usize,
    pub kind: OpKind,
    /// Event stamps: a total order consistent with simulated time.
    pub invoke: u64,
    pub ret: Option<u64>,
    pub invoke_ms: u64,
    pub ret_ms: Option<u64>,
    pub result: HistResult,
}

#[derive(Clone, Debug, Default)]
pub struct JoinSimStats {
    pub events: u64,
    pub ok: usize,
    pub failed: usize,
    pub indeterminate: usize,
    pub crashed_mid_op: usize,
    pub cas_swapped: usize,
    pub cas_not_swapped: usize,
    /// Proposals applied by the oracle.
    pub applied: usize,
    pub proposals_lost: usize,
    pub answers_lost: usize,
    pub refused: usize,
    pub write_backs: usize,
    /// Write-back messages a replica acknowledged without writing: it had
    /// applied the command's entry already (`Message::Write::applied_at`).
    pub write_backs_held: usize,
    /// Linear gets whose state machine cell was newer than the majority's.
    pub gets_from_state_machine: usize,
    pub partitions: usize,
    pub dropped: usize,
    pub crashes: usize,
    pub power_losses: usize,
    /// Log records a crash lost (unsynced applies, or with the negative
    /// control acknowledged writes too).
    pub records_lost: usize,
    /// Operations whose node crashed under them.
    pub lost_in_crash: usize,
    pub end_ms: u64,
}

impl JoinSimStats {
    pub fn add(&mut self, o: &JoinSimStats) {
        self.events += o.events;
        self.ok += o.ok;
        self.failed += o.failed;
        self.indeterminate += o.indeterminate;
        self.crashed_mid_op += o.crashed_mid_op;
        self.cas_swapped += o.cas_swapped;
        self.cas_not_swapped += o.cas_not_swapped;
        self.applied += o.applied;
        self.proposals_lost += o.proposals_lost;
        self.answers_lost += o.answers_lost;
        self.refused += o.refused;
        self.write_backs += o.write_backs;
        self.write_backs_held += o.write_backs_held;
        self.gets_from_state_machine += o.gets_from_state_machine;
        self.partitions += o.partitions;
        self.dropped += o.dropped;
        self.crashes += o.crashes;
        self.power_losses += o.power_losses;
        self.records_lost += o.records_lost;
        self.lost_in_crash += o.lost_in_crash;
        self.end_ms += o.end_ms;
    }
}

pub struct JoinSimReport {
    pub config: JoinSimConfig,
    pub history: Vec<HistOp>,
    pub stats: JoinSimStats,
}

impl JoinSimReport {
    /// Checks each key's history (the promise is per key).
    pub fn check(&self) -> Result<(), String> {
        for key in 0..self.config.key_count {
            let entries: Vec<Entry> = self.history.iter().filter(|h| h.key == key).filter_map(to_entry).collect();
            linearizability::check(&entries)
                .map_err(|e| format!("key {key}: {e}\n{}", timeline(&self.history, key)))?;
        }
        Ok(())
    }
}

fn show(v: Value) -> String {
    v.map_or_else(|| "absent".to_string(), |v| v.to_string())
}

/// The key's operations in invocation order, with clients and sim times.
pub fn timeline(history: &[HistOp], key: usize) -> String {
    history
        .iter()
        .filter(|h| h.key == key)
        .map(|h| {
            let op = match h.kind {
                OpKind::QuorumGet => "quorum get".to_string(),
                OpKind::QuorumWrite(v) => format!("quorum set({})", show(v)),
                OpKind::LinearGet => "linear get".to_string(),
                OpKind::LinearWrite(v) => format!("linear set({})", show(v)),
                OpKind::Cas { level, expected, new } => format!("{level:?} cas({} -> {new})", show(expected)),
            };
            let result = match &h.result {
                HistResult::Read(v) => format!("-> {}", show(*v)),
                HistResult::Cas { swapped, current } => format!("-> swapped={swapped} current={}", show(*current)),
                other => format!("-> {other:?}"),
            };
            let ret_ms = h.ret_ms.map_or_else(|| "?".to_string(), |t| t.to_string());
            format!(
                "  client {} {op} {result} @ [{} ms, {ret_ms} ms] stamps [{}, {:?}]",
                h.client, h.invoke_ms, h.invoke, h.ret
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn to_entry(h: &HistOp) -> Option<Entry> {
    let unknown = matches!(h.result, HistResult::Indeterminate | HistResult::Pending);
    let ret = || h.ret.expect("returned");
    match (h.kind, &h.result) {
        // Failed operations, and reads without an answer, had no effect.
        (_, HistResult::Failed) => None,
        (OpKind::QuorumGet | OpKind::LinearGet, HistResult::Read(v)) => {
            Some(Entry::ok(RegOp::Read(*v), h.invoke, ret()))
        }
        (OpKind::QuorumGet | OpKind::LinearGet, _) if unknown => None,
        (OpKind::QuorumWrite(v) | OpKind::LinearWrite(v), HistResult::Written) => {
            Some(Entry::ok(RegOp::Write(v), h.invoke, ret()))
        }
        (OpKind::QuorumWrite(v) | OpKind::LinearWrite(v), _) if unknown => Some(Entry::unknown_write(v, h.invoke)),
        (OpKind::Cas { expected, new, .. }, HistResult::Cas { swapped: true, current }) => {
            assert_eq!(*current, Some(new), "a swapped CAS answers its new value");
            Some(Entry::ok(RegOp::CasSwapped { expected, new }, h.invoke, ret()))
        }
        (OpKind::Cas { expected, .. }, HistResult::Cas { swapped: false, current }) => {
            Some(Entry::ok(RegOp::CasFailed { expected, found: *current }, h.invoke, ret()))
        }
        (OpKind::Cas { expected, new, .. }, _) if unknown => Some(Entry::unknown_cas(expected, new, h.invoke)),
        (kind, result) => unreachable!("{kind:?} ended as {result:?}"),
    }
}

/// The value bytes of a value id, big-endian.
pub fn encode_value(id: u64) -> Bytes {
    Bytes::copy_from_slice(&id.to_be_bytes())
}

pub fn decode_value(bytes: &Bytes) -> u64 {
    u64::from_be_bytes(bytes[..].try_into().expect("8-byte sim value"))
}

fn value_of(cell: Option<&Cell>) -> Value {
    cell.and_then(|c| c.value.as_ref()).map(decode_value)
}

#[derive(Debug)]
enum Event {
    Wake {
        client: usize,
    },
    Deliver {
        client: usize,
        coord_id: u64,
        to: NodeId,
        msg: Message,
    },
    Reply {
        client: usize,
        coord_id: u64,
        input: Input,
    },
    Deadline {
        client: usize,
        hist: usize,
    },
    /// A proposal reaches the oracle and commits.
    Commit {
        batch: rsm::Batch,
    },
    /// The leader takes a linear get's read index.
    ReadIndex {
        client: usize,
        hist: usize,
    },
    /// `node` applies the committed entries up to `upto` (its cells merge
    /// what they merged, in the same batch).
    Apply {
        node: NodeId,
        upto: u64,
    },
    Isolate {
        nodes: BTreeSet<NodeId>,
    },
    Heal,
    Crash {
        node: NodeId,
        restart_at_ms: u64,
    },
    Restart {
        node: NodeId,
    },
}

/// Where a running operation is.
#[derive(Debug)]
enum Step {
    /// A quorum get/set/del: the coordinator is the whole operation.
    Quorum,
    /// The join's majority read before a proposal.
    JoinRead,
    /// Proposed with the dependency read from a majority; awaiting the
    /// answer, which comes when the client's node applies the entry.
    Proposed { read: Option<Cell> },
    /// Writing the command's result back to a majority, then answering.
    WriteBack { answer: HistResult },
    /// Linear get: the majority read and the read barrier, in parallel.
    LinearGet { majority: Option<Option<Cell>>, barrier_done: bool },
    /// Linear get writing the state machine's newer cell back first.
    GetWriteBack { answer: Value },
}

struct Running {
    hist: usize,
    key: Bytes,
    step: Step,
    /// The coordinator of the current step, if it has one, and its id
    /// (replies to an earlier coordinator are dropped).
    coord: Option<Coordinator>,
    coord_id: u64,
}

struct Client {
    /// The node this client sends its requests to (where its operations are
    /// coordinated and proposed).
    home: NodeId,
    ops_left: usize,
    running: Option<Running>,
}

/// A proposal waiting for its node to apply its entry (`driver::Driver`'s
/// waiters: the reply comes from the proposer's own apply).
#[derive(Debug)]
struct Waiter {
    client: usize,
    hist: usize,
    /// The reply will not reach the client (its connection breaks).
    answer_lost: bool,
}

/// One simulated node: its storage, whether it runs, and what waits on it.
#[derive(Debug, Default)]
struct Node {
    storage: NodeStorage,
    up: bool,
    /// When a crashed node comes back.
    restart_at_ms: u64,
    /// By (client id, request id).
    waiters: BTreeMap<(u64, u64), Waiter>,
    /// Linear gets waiting for this node to apply up to an index: (client, hist, index).
    readers: Vec<(usize, usize, u64)>,
}

/// Upper bound on processed events; a run needs a few hundred to a few thousand.
const MAX_EVENTS: u64 = 500_000;

/// What the simulated nodes do (the schedule comes from the seed): the
/// real protocol, or a negative control that leaves something out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Variant {
    pub join: Join,
    pub durability: Durability,
}

impl Variant {
    /// What the real nodes do.
    pub const REAL: Variant = Variant { join: Join::Full, durability: Durability::Synced };

    pub fn join(join: Join) -> Variant {
        Variant { join, ..Variant::REAL }
    }
}

/// Runs the schedule of `seed` with nodes doing `join`.
pub fn run(seed: u64, join: Join) -> JoinSimReport {
    run_with(seed, Variant::join(join))
}

/// Runs the schedule of `seed` with nodes doing `variant`. The schedule
/// (the config, and every draw up to the first place the variants differ)
/// is the seed's; the variant only changes what the nodes do in it.
pub fn run_with(seed: u64, variant: Variant) -> JoinSimReport {
    let mut rng = StdRng::seed_from_u64(seed);
    let config = JoinSimConfig::draw(seed, variant, &mut rng);
    Sim::new(config, rng).run()
}

struct Sim {
    config: JoinSimConfig,
    rng: StdRng,
    now_ms: u64,
    next_seq: u64,
    next_stamp: u64,
    next_coord_id: u64,
    next_value: u64,
    queue: BTreeMap<(u64, u64), Event>,
    nodes: BTreeMap<NodeId, Node>,
    clocks: BTreeMap<NodeId, u64>,
    isolated: BTreeSet<NodeId>,
    link_ms: BTreeMap<(usize, NodeId), u64>,
    log: Log,
    clients: Vec<Client>,
    /// Value ids written (or swapped in) per key, for CAS expectations.
    values: Vec<Vec<u64>>,
    history: Vec<HistOp>,
    stats: JoinSimStats,
    /// `CAPKV_JOIN_SIM_TRACE=1`: print what happens, to read a failing seed.
    trace: bool,
}

impl Sim {
    fn new(config: JoinSimConfig, mut rng: StdRng) -> Sim {
        let ids: Vec<NodeId> = (1..=config.replica_count as NodeId).collect();
        let mut link_ms = BTreeMap::new();
        for client in 0..config.client_count {
            for &node in &ids {
                link_ms.insert((client, node), rng.random_range(1..=config.max_link_ms));
            }
        }
        let clients = (0..config.client_count)
            .map(|i| Client { home: ids[i % ids.len()], ops_left: config.ops_per_client, running: None })
            .collect();
        Sim {
            rng,
            now_ms: 0,
            next_seq: 0,
            next_stamp: 0,
            next_coord_id: 0,
            next_value: 1,
            queue: BTreeMap::new(),
            nodes: ids.iter().map(|&id| (id, Node { up: true, ..Node::default() })).collect(),
            clocks: ids.iter().map(|&id| (id, 0)).collect(),
            isolated: BTreeSet::new(),
            link_ms,
            log: Log::new(ids.clone()),
            clients,
            values: vec![Vec::new(); config.key_count],
            history: Vec::new(),
            stats: JoinSimStats::default(),
            trace: std::env::var_os("CAPKV_JOIN_SIM_TRACE").is_some(),
            config,
        }
    }

    fn node_ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    /// Fault windows one after another from time 0: `count` of them, each
    /// `(start, end)` starting within the horizon's share of it and lasting
    /// at most `max_ms`.
    fn windows(&mut self, count: usize, horizon_ms: u64, max_ms: u64) -> Vec<(u64, u64)> {
        let mut t = 0;
        let mut out = Vec::new();
        for _ in 0..count {
            let start = t + self.rng.random_range(0..=horizon_ms / count as u64);
            let end = start + self.rng.random_range(1..=max_ms);
            out.push((start, end));
            t = end;
        }
        out
    }

    fn run(mut self) -> JoinSimReport {
        let horizon_ms = self.config.ops_per_client as u64 * (self.config.timeout_ms + self.config.max_think_ms);
        // Partition windows, one after another, each isolating a minority.
        for (start, end) in self.windows(self.config.partition_count, horizon_ms, 2 * self.config.timeout_ms) {
            let size = self.rng.random_range(1..=(self.config.replica_count - 1) / 2);
            let mut ids = self.node_ids();
            rand::seq::SliceRandom::shuffle(&mut ids[..], &mut self.rng);
            let nodes: BTreeSet<NodeId> = ids.into_iter().take(size).collect();
            self.schedule_at(start, Event::Isolate { nodes });
            self.schedule_at(end, Event::Heal);
        }
        // Crash windows, one after another, each taking down one node, or
        // sometimes several at once (a rack losing power, a cluster-wide
        // restart); each crash is a kill or a power loss.
        for (start, end) in self.windows(self.config.restart_count, horizon_ms, self.config.timeout_ms) {
            let count = if self.chance(75) { 1 } else { self.rng.random_range(2..=self.nodes.len()) };
            let mut ids = self.node_ids();
            rand::seq::SliceRandom::shuffle(&mut ids[..], &mut self.rng);
            for node in ids.into_iter().take(count) {
                self.schedule_at(start, Event::Crash { node, restart_at_ms: end });
                self.schedule_at(end, Event::Restart { node });
            }
        }
        for client in 0..self.clients.len() {
            let at = self.rng.random_range(0..=self.config.max_think_ms);
            self.schedule_at(at, Event::Wake { client });
        }
        while let Some(((at, _), event)) = self.queue.pop_first() {
            assert!(at >= self.now_ms, "time goes forward");
            self.now_ms = at;
            self.stats.events += 1;
            assert!(self.stats.events <= MAX_EVENTS, "simulation did not settle (seed {})", self.config.seed);
            self.handle(event);
        }
        self.stats.end_ms = self.now_ms;
        for c in &self.clients {
            assert!(c.running.is_none() && c.ops_left == 0, "every client finished");
        }
        // Every node runs and applied the whole log in the end (applies
        // wait out partitions and crashes).
        for (id, node) in &self.nodes {
            assert!(node.up, "node {id} restarted");
            assert_eq!(node.storage.applied(), self.log.len(), "node {id} applied the whole log");
        }
        JoinSimReport { config: self.config, history: self.history, stats: self.stats }
    }

    fn trace(&self, what: impl FnOnce() -> String) {
        if self.trace {
            eprintln!("{:>6} ms  {}", self.now_ms, what());
        }
    }

    fn chance(&mut self, pct: u32) -> bool {
        self.rng.random_range(0..100) < pct
    }

    fn schedule_at(&mut self, at_ms: u64, event: Event) {
        self.next_seq += 1;
        self.queue.insert((at_ms, self.next_seq), event);
    }

    fn stamp(&mut self) -> u64 {
        self.next_stamp += 1;
        self.next_stamp
    }

    /// Whether `client`'s node cannot reach `node` (down, or across a partition).
    fn cut(&self, client: usize, node: NodeId) -> bool {
        let home = self.clients[client].home;
        !self.nodes[&home].up || !self.nodes[&node].up || self.isolated.contains(&home) != self.isolated.contains(&node)
    }

    /// Whether `client`'s node can reach the Raft leader (on the majority side).
    fn reaches_oracle(&self, client: usize) -> bool {
        let home = self.clients[client].home;
        self.nodes[&home].up && !self.isolated.contains(&home)
    }

    fn delay_ms(&mut self, client: usize, node: NodeId) -> u64 {
        let d = self.link_ms[&(client, node)] + self.rng.random_range(0..=self.config.max_delay_ms);
        if self.chance(self.config.slow_pct) {
            d * self.config.slow_factor
        } else {
            d
        }
    }

    fn raft_delay_ms(&mut self) -> u64 {
        let d = self.rng.random_range(1..=self.config.max_raft_ms);
        if self.chance(self.config.slow_pct) {
            d * self.config.slow_factor
        } else {
            d
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Wake { client } => self.start_op(client),
            Event::Deliver { client, coord_id, to, msg } => self.deliver(client, coord_id, to, msg),
            Event::Reply { client, coord_id, input } => {
                let Some(r) = self.clients[client].running.as_mut() else { return };
                if r.coord_id != coord_id {
                    return;
                }
                let Some(coord) = r.coord.as_mut() else { return };
                let effects = coord.step(input);
                self.perform(client, effects);
            }
            Event::Deadline { client, hist } => self.deadline(client, hist),
            Event::Commit { batch } => {
                let index = self.log.commit(1, Some(&batch));
                self.trace(|| format!("commit {index}: {batch:?} merging {:?}", self.log.merged(index)));
                self.stats.applied += 1;
                let upto = self.log.len();
                // The nodes that appended the entry fsynced it (Raft persists
                // entries before acknowledging them, driver.rs steps 4-5): that
                // fsync also makes their earlier unsynced applies durable.
                for node in self.node_ids() {
                    if self.nodes[&node].up && !self.isolated.contains(&node) {
                        self.nodes.get_mut(&node).expect("node").storage.sync();
                    }
                }
                for node in self.node_ids() {
                    let at = self.now_ms + self.rng.random_range(0..=self.config.max_merge_lag_ms);
                    self.schedule_at(at, Event::Apply { node, upto });
                }
            }
            Event::ReadIndex { client, hist } => {
                if !self.reaches_oracle(client) || self.step_of(client, hist).is_none() {
                    return; // the get waits for its deadline
                }
                let index = self.log.len();
                let home = self.clients[client].home;
                let at = self.now_ms + self.raft_delay_ms();
                // Its node completes the barrier once it has applied the
                // read index (`ReadIndexQueue::complete`).
                self.nodes.get_mut(&home).expect("node").readers.push((client, hist, index));
                self.schedule_at(at, Event::Apply { node: home, upto: index });
            }
            Event::Apply { node, upto } => self.apply(node, upto),
            Event::Isolate { nodes } => {
                assert!(2 * nodes.len() < self.nodes.len(), "only a minority is isolated");
                self.stats.partitions += 1;
                self.isolated = nodes;
            }
            Event::Heal => self.isolated.clear(),
            Event::Crash { node, restart_at_ms } => self.crash(node, restart_at_ms),
            Event::Restart { node } => self.restart(node),
        }
    }

    /// `node` applies the committed entries up to `upto`, in one batch
    /// (mirrors `Driver::apply`): the state machine, the cells the entries
    /// merge and the applied index together; then it answers the
    /// proposals and the read barriers waiting for those entries.
    fn apply(&mut self, node: NodeId, upto: u64) {
        if !self.nodes[&node].up || self.isolated.contains(&node) {
            // Down, or cut off from the log: it catches up later.
            let at = self.now_ms + 1 + self.rng.random_range(0..=self.config.max_merge_lag_ms);
            self.schedule_at(at, Event::Apply { node, upto });
            return;
        }
        let from = self.nodes[&node].storage.applied();
        if upto > from {
            let merged: Vec<(Bytes, Cell)> = (from + 1..=upto).flat_map(|i| self.log.merged(i).to_vec()).collect();
            // Batches that merge cells are always fsynced (`Driver`: a cell
            // a quorum get may return must survive a power loss); others
            // when their `Ready` also persisted entries.
            let with_entries = self.chance(self.config.apply_sync_pct);
            let synced = with_entries
                || (!merged.is_empty() && self.config.variant.durability != Durability::UnsyncedCellApplies);
            self.trace(|| format!("node {node} applies {}..={upto} (synced: {synced}), merging {merged:?}", from + 1));
            self.nodes.get_mut(&node).expect("node").storage.apply(upto, merged, synced);
            for index in from + 1..=upto {
                for a in self.log.answers(index).to_vec() {
                    let Some(w) = self.nodes.get_mut(&node).expect("node").waiters.remove(&(a.client_id, a.request_id))
                    else {
                        continue;
                    };
                    if w.answer_lost {
                        self.stats.answers_lost += 1;
                    } else {
                        self.proposal_reply(w.client, w.hist, a.reply, upto);
                    }
                }
            }
        }
        let applied = self.nodes[&node].storage.applied();
        let n = self.nodes.get_mut(&node).expect("node");
        let (done, waiting): (Vec<_>, Vec<_>) =
            std::mem::take(&mut n.readers).into_iter().partition(|r| r.2 <= applied);
        n.readers = waiting;
        for (client, hist, _) in done {
            if let Some(Step::LinearGet { barrier_done, .. }) = self.step_of(client, hist) {
                *barrier_done = true;
                self.linear_get_progress(client);
            }
        }
    }

    /// `node` crashes: its storage keeps what the crash allows, its
    /// in-memory state (proposals and reads waiting on it, the operations
    /// its clients run through it) is gone; it restarts at `Restart`.
    fn crash(&mut self, node: NodeId, restart_at_ms: u64) {
        let kind = if self.chance(self.config.power_loss_pct) { CrashKind::PowerLoss } else { CrashKind::Kill };
        let (lo, hi) = self.nodes[&node].storage.crash_keeps(kind, self.config.variant.durability);
        let keep = self.rng.random_range(lo..=hi);
        let n = self.nodes.get_mut(&node).expect("node");
        assert!(n.up, "one crash window at a time");
        let lost = n.storage.crash(kind, keep);
        let applied = n.storage.applied();
        n.up = false;
        n.restart_at_ms = restart_at_ms;
        n.waiters.clear();
        n.readers.clear();
        self.trace(|| format!("node {node} crashes ({kind:?}): {lost} log records lost, applied index {applied}"));
        self.stats.records_lost += lost;
        self.stats.crashes += 1;
        if kind == CrashKind::PowerLoss {
            self.stats.power_losses += 1;
        }
        for client in 0..self.clients.len() {
            if self.clients[client].home == node && self.clients[client].running.is_some() {
                // Whatever it had started may still take effect.
                self.stats.lost_in_crash += 1;
                self.finish(client, HistResult::Indeterminate);
            }
        }
    }

    /// `node` restarts on its storage and re-applies the log from its
    /// applied index (its replica serves reads at once, as the real one
    /// does before its Raft driver has caught up).
    fn restart(&mut self, node: NodeId) {
        self.trace(|| format!("node {node} restarts"));
        let n = self.nodes.get_mut(&node).expect("node");
        n.up = true;
        let at = self.now_ms + self.rng.random_range(0..=self.config.max_merge_lag_ms);
        let upto = self.log.len();
        self.schedule_at(at, Event::Apply { node, upto });
    }

    /// The step of `client`'s running operation `hist`, if it still runs.
    fn step_of(&mut self, client: usize, hist: usize) -> Option<&mut Step> {
        self.clients[client].running.as_mut().filter(|r| r.hist == hist).map(|r| &mut r.step)
    }

    fn pick_value(&mut self, key: usize) -> Value {
        let known = &self.values[key];
        if known.is_empty() || self.rng.random_range(0..100) < 15 {
            return None;
        }
        if self.rng.random_range(0..100) < 60 {
            return known.last().copied();
        }
        known.choose(&mut self.rng).copied()
    }

    fn fresh_value(&mut self, key: usize) -> u64 {
        let id = self.next_value;
        self.next_value += 1;
        self.values[key].push(id);
        id
    }

    fn start_op(&mut self, client: usize) {
        let c = &self.clients[client];
        if c.ops_left == 0 || c.running.is_some() {
            return;
        }
        let home = &self.nodes[&c.home];
        if !home.up {
            // Its node is down: the client waits for it.
            let at = home.restart_at_ms.max(self.now_ms + 1);
            self.schedule_at(at, Event::Wake { client });
            return;
        }
        let key = self.rng.random_range(0..self.config.key_count);
        let key_bytes = Bytes::from(format!("key-{key}"));
        let roll = self.rng.random_range(0..100);
        let kind = match roll {
            0..20 => OpKind::QuorumGet,
            20..32 => OpKind::QuorumWrite(Some(self.fresh_value(key))),
            32..36 => OpKind::QuorumWrite(None),
            36..52 => OpKind::LinearGet,
            52..62 => OpKind::LinearWrite(Some(self.fresh_value(key))),
            62..66 => OpKind::LinearWrite(None),
            _ => {
                let level = if roll < 83 { Level::Quorum } else { Level::Linearizable };
                let expected = self.pick_value(key);
                OpKind::Cas { level, expected, new: self.fresh_value(key) }
            }
        };
        let invoke = self.stamp();
        self.trace(|| format!("client {client} at node {}: {kind:?} on key {key}", self.clients[client].home));
        self.history.push(HistOp {
            client,
            key,
            kind,
            invoke,
            ret: None,
            invoke_ms: self.now_ms,
            ret_ms: None,
            result: HistResult::Pending,
        });
        let hist = self.history.len() - 1;
        self.clients[client].running =
            Some(Running { hist, key: key_bytes.clone(), step: Step::Quorum, coord: None, coord_id: 0 });
        self.schedule_at(self.now_ms + self.config.timeout_ms, Event::Deadline { client, hist });
        let join = self.config.variant.join;
        match kind {
            OpKind::QuorumGet => self.start_coord(client, Step::Quorum, Op::get(key_bytes)),
            OpKind::QuorumWrite(Some(v)) => self.start_coord(client, Step::Quorum, Op::set(key_bytes, encode_value(v))),
            OpKind::QuorumWrite(None) => self.start_coord(client, Step::Quorum, Op::del(key_bytes)),
            OpKind::LinearGet => {
                let at = self.now_ms + self.raft_delay_ms();
                self.schedule_at(at, Event::ReadIndex { client, hist });
                let step = Step::LinearGet { majority: None, barrier_done: false };
                if join.reads_majority() {
                    self.start_coord(client, step, Op::get(key_bytes));
                } else {
                    self.running(client).step = step;
                }
            }
            OpKind::LinearWrite(_) | OpKind::Cas { .. } => {
                if join.reads_majority() {
                    self.start_coord(client, Step::JoinRead, Op::get(key_bytes));
                } else {
                    self.propose(client, None);
                }
            }
        }
    }

    fn running(&mut self, client: usize) -> &mut Running {
        self.clients[client].running.as_mut().expect("a running operation")
    }

    /// Starts a real ABD coordinator for `op` as the operation's `step`.
    fn start_coord(&mut self, client: usize, step: Step, op: Op) {
        let replicas = self.node_ids();
        let coord = Coordinator::new(op, replicas, QuorumConfig::default()).expect("valid replica set");
        self.next_coord_id += 1;
        let coord_id = self.next_coord_id;
        let r = self.running(client);
        r.step = step;
        r.coord = Some(coord);
        r.coord_id = coord_id;
        let effects = r.coord.as_mut().expect("just set").step(Input::Start);
        self.perform(client, effects);
    }

    /// Carries out the current coordinator's effects.
    fn perform(&mut self, client: usize, effects: Vec<Effect>) {
        let mut batch = effects;
        while !batch.is_empty() {
            let writes = batch.iter().filter(|e| matches!(e, Effect::Send { msg: Message::Write { .. }, .. })).count();
            if writes > 0 && self.chance(self.config.writer_crash_pct) {
                // The client's process dies part-way through sending a write
                // phase: some of the writes are on their way.
                let mut sends: Vec<Effect> = batch.into_iter().filter(|e| matches!(e, Effect::Send { .. })).collect();
                rand::seq::SliceRandom::shuffle(&mut sends[..], &mut self.rng);
                sends.truncate(self.rng.random_range(0..writes));
                for e in sends {
                    self.perform_one(client, e);
                }
                self.crash_client(client);
                return;
            }
            let mut next = Vec::new();
            for e in batch {
                next.extend(self.perform_one(client, e));
            }
            batch = next;
        }
    }

    fn perform_one(&mut self, client: usize, effect: Effect) -> Vec<Effect> {
        let coord_id = self.running(client).coord_id;
        match effect {
            Effect::Send { to, msg } => {
                if self.cut(client, to) || self.chance(self.config.drop_pct) {
                    self.lost(client, coord_id, to, msg.phase());
                } else {
                    let at = self.now_ms + self.delay_ms(client, to);
                    self.schedule_at(at, Event::Deliver { client, coord_id, to, msg });
                }
                Vec::new()
            }
            Effect::NeedVersion { above } => {
                let home = self.clients[client].home;
                let v = self.next_version(home, above);
                self.running(client).coord.as_mut().expect("a coordinator").step(Input::Version(v))
            }
            Effect::Done(result) => {
                self.running(client).coord = None;
                self.coord_done(client, result);
                Vec::new()
            }
        }
    }

    fn lost(&mut self, client: usize, coord_id: u64, from: NodeId, phase: Phase) {
        self.stats.dropped += 1;
        if self.chance(self.config.fail_on_drop_pct) {
            let at = self.now_ms + self.delay_ms(client, from);
            let input = Input::Failed { from, phase, reason: "simulated RPC error".into() };
            self.schedule_at(at, Event::Reply { client, coord_id, input });
        }
    }

    fn deliver(&mut self, client: usize, coord_id: u64, to: NodeId, msg: Message) {
        if self.cut(client, to) {
            self.lost(client, coord_id, to, msg.phase());
            return;
        }
        // A replica's write is fsynced before it is acknowledged.
        let storage = &mut self.nodes.get_mut(&to).expect("node").storage;
        let input = match &msg {
            Message::Read { key } => Input::ReadReply { from: to, cell: storage.cells().read(key) },
            // A write-back of a command this node has applied: held
            // already, nothing written (as `peer_service::replicate` does).
            Message::Write { applied_at, .. }
                if *applied_at > 0
                    && (storage.applied() >= *applied_at || self.config.variant.join == Join::HoldUnapplied) =>
            {
                self.stats.write_backs_held += 1;
                Input::WriteAck { from: to }
            }
            Message::Write { key, cell, .. } => {
                storage.write_synced(key.clone(), cell.clone());
                Input::WriteAck { from: to }
            }
        };
        self.trace(|| format!("node {to} serves client {client}: {msg:?} -> {input:?}"));
        // The request was applied even if the reply is lost.
        if self.chance(self.config.drop_pct) {
            self.lost(client, coord_id, to, msg.phase());
            return;
        }
        let at = self.now_ms + self.delay_ms(client, to);
        self.schedule_at(at, Event::Reply { client, coord_id, input });
    }

    /// Like `Clock::next_after` (see `quorum::sim`): above `above`, sometimes
    /// after a jump, sometimes reusing `above`'s clock part.
    fn next_version(&mut self, home: NodeId, above: Version) -> Version {
        let clock = self.tick(home);
        let hlc = if above.hlc > clock && home > above.node_id && self.rng.random_bool(0.5) {
            above.hlc
        } else {
            clock.max(above.hlc + 1)
        };
        self.clocks.insert(home, hlc);
        let v = Version::new(hlc, home);
        assert!(v > above);
        v
    }

    /// The node's clock, advanced (sometimes jumping forward).
    fn tick(&mut self, node: NodeId) -> u64 {
        let jump = if self.chance(self.config.clock_jump_pct) { self.rng.random_range(1..=1_000) } else { 0 };
        let t = self.clocks[&node] + 1 + jump;
        self.clocks.insert(node, t);
        t
    }

    /// A coordinator finished: what the operation does next.
    fn coord_done(&mut self, client: usize, result: Result<Outcome, QuorumError>) {
        self.trace(|| format!("client {client}: coordinator done: {result:?}"));
        let step = std::mem::replace(&mut self.running(client).step, Step::Quorum);
        match step {
            Step::Quorum => {
                let r = match result {
                    Ok(Outcome::Get { cell, .. }) => HistResult::Read(value_of(cell.as_ref())),
                    Ok(Outcome::Set { .. }) => HistResult::Written,
                    Err(QuorumError::Unavailable { .. }) => HistResult::Failed,
                    Err(QuorumError::Indeterminate { .. }) => HistResult::Indeterminate,
                };
                self.finish(client, r);
            }
            Step::JoinRead => match result {
                Ok(Outcome::Get { cell, .. }) => self.propose(client, cell),
                // Nothing proposed: no effect.
                Ok(o) => unreachable!("a get answered {o:?}"),
                Err(_) => self.finish(client, HistResult::Failed),
            },
            Step::WriteBack { answer } => match result {
                Ok(_) => self.finish(client, answer),
                // Applied, but maybe not on a majority: the client cannot tell.
                Err(_) => self.finish(client, HistResult::Indeterminate),
            },
            Step::LinearGet { barrier_done, .. } => match result {
                Ok(Outcome::Get { cell, .. }) => {
                    self.running(client).step = Step::LinearGet { majority: Some(cell), barrier_done };
                    self.linear_get_progress(client);
                }
                Ok(o) => unreachable!("a get answered {o:?}"),
                Err(_) => self.finish(client, HistResult::Failed),
            },
            Step::GetWriteBack { answer } => match result {
                Ok(_) => self.finish(client, HistResult::Read(answer)),
                Err(_) => self.finish(client, HistResult::Failed),
            },
            Step::Proposed { .. } => unreachable!("no coordinator while proposed"),
        }
    }

    /// A linear get with its majority read (when joined) and barrier done
    /// reads the state machine and answers (mirrors `Linear::get`).
    fn linear_get_progress(&mut self, client: usize) {
        let join = self.config.variant.join;
        let r = self.running(client);
        let Step::LinearGet { majority, barrier_done: true } = &r.step else { return };
        if join.reads_majority() && majority.is_none() {
            return;
        }
        let majority = majority.clone().flatten();
        let key = r.key.clone();
        // The node's state machine, which has applied at least up to the
        // read index.
        let home = self.clients[client].home;
        let own = self.log.cell_at(&key, self.nodes[&home].storage.applied());
        if !join.reads_majority() {
            self.finish(client, HistResult::Read(value_of(own.as_ref())));
            return;
        }
        match own {
            Some(own) if majority.as_ref().is_none_or(|m| own.version > m.version) && !join.writes_back_gets() => {
                self.stats.gets_from_state_machine += 1;
                self.finish(client, HistResult::Read(value_of(Some(&own))));
            }
            Some(own) if majority.as_ref().is_none_or(|m| own.version > m.version) => {
                self.stats.gets_from_state_machine += 1;
                self.stats.write_backs += 1;
                let answer = value_of(Some(&own));
                self.start_coord(client, Step::GetWriteBack { answer }, Op::Impose { key, cell: own, applied_at: 0 });
            }
            _ => self.finish(client, HistResult::Read(value_of(majority.as_ref()))),
        }
    }

    /// Proposes the operation's command with the dependency `read` (mirrors
    /// `Linear::write` and `Linear::cas`).
    fn propose(&mut self, client: usize, read: Option<Cell>) {
        let hist = self.running(client).hist;
        let key = self.running(client).key.clone();
        let dep = if self.config.variant.join.sends_dependency() { kv::dep_of(read.as_ref()) } else { None };
        let op = match self.history[hist].kind {
            OpKind::LinearWrite(Some(v)) => RsmOp::Put(rsm::Put { key: key.clone(), value: encode_value(v), dep }),
            OpKind::LinearWrite(None) => RsmOp::Del(rsm::Del { key: key.clone(), dep }),
            OpKind::Cas { expected, new, .. } => RsmOp::Cas(rsm::Cas {
                key: key.clone(),
                expect_absent: expected.is_none(),
                expected: expected.map(encode_value).unwrap_or_default(),
                new_value: encode_value(new),
                dep,
            }),
            kind => unreachable!("{kind:?} is not proposed"),
        };
        self.running(client).step = Step::Proposed { read };
        if !self.reaches_oracle(client) {
            if self.rng.random_bool(0.5) {
                // No leader reachable: refused, not applied.
                self.stats.refused += 1;
                self.finish(client, HistResult::Failed);
            } else {
                // Never heard of again: the deadline makes it indeterminate.
                self.stats.proposals_lost += 1;
            }
            return;
        }
        if self.chance(self.config.proposal_lost_pct) {
            self.stats.proposals_lost += 1;
            return;
        }
        let home = self.clients[client].home;
        let request_id = hist as u64 + 1;
        let command =
            rsm::Command { client_id: client as u64 + 1, request_id, ack_below: 0, sessionless: false, op: Some(op) };
        let batch = rsm::Batch { stamp: self.tick(home), proposer: home, commands: vec![command] };
        let answer_lost = self.chance(self.config.answer_lost_pct);
        let waiter = Waiter { client, hist, answer_lost };
        self.nodes.get_mut(&home).expect("node").waiters.insert((client as u64 + 1, request_id), waiter);
        let at = self.now_ms + self.raft_delay_ms();
        self.schedule_at(at, Event::Commit { batch });
    }

    /// The proposer's node applied the command's entry (mirrors the rest
    /// of `Linear::write` and `Linear::cas`).
    fn proposal_reply(&mut self, client: usize, hist: usize, reply: rsm::Reply, applied_at: u64) {
        let Some(Step::Proposed { read }) = self.step_of(client, hist) else { return };
        let read = read.take();
        let join = self.config.variant.join;
        let key = self.running(client).key.clone();
        let (cell, answer, write_back) = match (self.history[hist].kind, reply.result) {
            (OpKind::LinearWrite(v), Some(reply::Result::Written(w))) => {
                let version = Version::new(w.hlc, w.node_id);
                let cell = Cell { value: v.map(encode_value), version, origin: Level::Linearizable };
                (Some(cell), HistResult::Written, true)
            }
            (OpKind::Cas { .. }, Some(reply::Result::Cas(c))) => {
                let cell = kv::cas_reply_cell(&c);
                if c.swapped {
                    self.stats.cas_swapped += 1;
                } else {
                    self.stats.cas_not_swapped += 1;
                }
                let read_version = read.as_ref().map_or(Version::ZERO, |c| c.version);
                let newer = cell.as_ref().is_some_and(|c| c.version > read_version);
                let current = value_of(cell.as_ref());
                (cell, HistResult::Cas { swapped: c.swapped, current }, newer)
            }
            (kind, result) => panic!("unexpected reply {result:?} to {kind:?}"),
        };
        match cell {
            Some(cell) if join.writes_back_commands() && write_back => {
                self.stats.write_backs += 1;
                self.start_coord(client, Step::WriteBack { answer }, Op::Impose { key, cell, applied_at });
            }
            _ => self.finish(client, answer),
        }
    }

    fn deadline(&mut self, client: usize, hist: usize) {
        let Some(r) = self.clients[client].running.as_mut().filter(|r| r.hist == hist) else { return };
        if let (Step::Quorum, Some(coord)) = (&r.step, r.coord.as_mut()) {
            // The coordinator decides (failed or indeterminate, by phase).
            let effects = coord.step(Input::Deadline);
            self.perform(client, effects);
            return;
        }
        let result = match r.step {
            Step::JoinRead | Step::LinearGet { .. } | Step::GetWriteBack { .. } => HistResult::Failed,
            Step::Proposed { .. } | Step::WriteBack { .. } => HistResult::Indeterminate,
            Step::Quorum => unreachable!("a quorum step has its coordinator"),
        };
        self.finish(client, result);
    }

    fn finish(&mut self, client: usize, result: HistResult) {
        let running = self.clients[client].running.take().expect("running");
        self.trace(|| format!("client {client}: {:?} ends: {result:?}", self.history[running.hist].kind));
        let ret = self.stamp();
        match result {
            HistResult::Failed => self.stats.failed += 1,
            HistResult::Indeterminate => self.stats.indeterminate += 1,
            _ => self.stats.ok += 1,
        }
        let h = &mut self.history[running.hist];
        h.ret = Some(ret);
        h.ret_ms = Some(self.now_ms);
        h.result = result;
        self.clients[client].ops_left -= 1;
        let at = self.now_ms + self.rng.random_range(0..=self.config.max_think_ms);
        self.schedule_at(at, Event::Wake { client });
    }

    /// The client's process dies mid-operation: it never returns (what it
    /// sent still travels); a new process takes over after a while.
    fn crash_client(&mut self, client: usize) {
        let c = &mut self.clients[client];
        c.running = None;
        c.ops_left -= 1;
        self.stats.crashed_mid_op += 1;
        let at = self.now_ms + self.rng.random_range(1..=self.config.timeout_ms);
        self.schedule_at(at, Event::Wake { client });
    }
}
