//! A deterministic simulated network for the quorum coordinator (tests only).
//!
//! Why it exists: ABD's guarantees are about interleavings — slow, lost,
//! duplicated and reordered messages, crashed replicas, crashed writers —
//! which real sockets produce rarely and never reproducibly. Here every
//! choice comes from ONE seeded RNG and every ordered structure is a
//! `BTreeMap`, so a seed replays the exact same schedule.
//!
//! What it promises: [`run`] executes a workload of concurrent clients
//! (get/set/del on a few keys) against N [`Replica`]s, each client driving a
//! real [`Coordinator`] per operation, and returns the history (invoke and
//! return stamps in event order, outcomes) for the linearizability checker.
//! [`Cluster`] is the scripted counterpart: synchronous delivery where the
//! test decides which replica each message reaches.
//!
//! Fault model:
//! - delays: each client-replica link has its own base latency (so
//!   clients see different majorities first), plus jitter; some messages
//!   are `slow_factor` times slower (reordering follows);
//! - drops of requests and replies; a dropped message makes the coordinator
//!   see `Input::Failed` (the RPC layer's error) or nothing (then the
//!   operation's deadline). A dropped *reply* to a write was still applied;
//! - duplicated replies;
//! - replica crash/restart windows (state is durable: kept across a crash);
//! - a coordinator that crashes while sending its write phase, so the
//!   write reaches only some replicas (possibly one, possibly none);
//! - each node's clock may jump forward (skew), and a writer reuses the
//!   highest clock part seen when its node id breaks the tie.

use std::collections::BTreeMap;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};

use super::core::{Coordinator, Effect, Input, Message, Op, Outcome, Phase, QuorumConfig, QuorumError, ReadFanout};
use super::linearizability::{self, Entry, RegOp, Value};
use super::replica::Replica;
use crate::clock::{NodeId, Version};

/// The knobs of one simulated run; all drawn from the seed by
/// [`SimConfig::from_seed`].
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    pub quorum: QuorumConfig,
    pub replica_count: usize,
    pub client_count: usize,
    pub key_count: usize,
    pub ops_per_client: usize,
    /// Each (client, replica) link's base latency is drawn from
    /// `1..=max_link_ms`, so clients see different replicas first.
    pub max_link_ms: u64,
    /// Jitter added to every message: `0..=max_delay_ms`.
    pub max_delay_ms: u64,
    pub slow_pct: u32,
    pub slow_factor: u64,
    pub drop_pct: u32,
    /// Share of dropped messages the coordinator hears about as `Failed`.
    pub fail_on_drop_pct: u32,
    pub dup_pct: u32,
    /// Chance per replica of each of up to two crash windows.
    pub replica_crash_pct: u32,
    /// Chance that a coordinator crashes while sending its write phase.
    pub writer_crash_pct: u32,
    pub clock_jump_pct: u32,
    pub timeout_ms: u64,
    pub max_think_ms: u64,
    /// With [`ReadFanout::Majority`] (half the seeds): when a read phase
    /// asks the replicas it held back.
    pub hedge_after_ms: u64,
}

impl SimConfig {
    /// Draws every knob from the seed (the same RNG then drives the run),
    /// so the seed alone reproduces a schedule.
    fn draw(seed: u64, mut quorum: QuorumConfig, rng: &mut StdRng) -> SimConfig {
        let mut config = SimConfig {
            seed,
            quorum: quorum.clone(),
            replica_count: *[1, 2, 3, 3, 3, 3, 4, 5].choose(rng).expect("non-empty"),
            client_count: rng.random_range(2..=4),
            key_count: *[1, 1, 2, 3].choose(rng).expect("non-empty"),
            ops_per_client: rng.random_range(3..=10),
            max_link_ms: rng.random_range(1..=20),
            max_delay_ms: rng.random_range(0..=10),
            slow_pct: rng.random_range(0..=30),
            slow_factor: rng.random_range(3..=30),
            drop_pct: rng.random_range(0..=15),
            fail_on_drop_pct: rng.random_range(0..=100),
            dup_pct: rng.random_range(0..=10),
            replica_crash_pct: rng.random_range(0..=40),
            writer_crash_pct: rng.random_range(0..=40),
            clock_jump_pct: rng.random_range(0..=10),
            timeout_ms: rng.random_range(50..=300),
            max_think_ms: rng.random_range(0..=20),
            hedge_after_ms: rng.random_range(1..=40),
        };
        // Half the seeds read a majority first and hedge (as the node does).
        if rng.random_bool(0.5) {
            quorum.read_fanout = ReadFanout::Majority;
            config.quorum = quorum;
        }
        config
    }
}

/// How an operation of the history ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HistResult {
    /// Never returned: its client crashed mid-operation.
    Pending,
    /// A get that answered this value.
    Read(Value),
    /// A set that was acknowledged.
    Written,
    /// Definitely had no effect (`QuorumError::Unavailable`).
    Failed,
    /// A set whose effect is unknown (`QuorumError::Indeterminate`).
    Indeterminate,
}

/// One client operation as the outside world saw it.
#[derive(Clone, Debug)]
pub struct HistOp {
    pub client: usize,
    pub key: usize,
    /// `None`: a get; `Some(v)`: a set of `v` (`Some(None)`: a delete).
    pub write: Option<Value>,
    /// Event stamps: a total order consistent with simulated time.
    pub invoke: u64,
    pub ret: Option<u64>,
    pub invoke_ms: u64,
    pub ret_ms: Option<u64>,
    pub result: HistResult,
}

#[derive(Clone, Debug, Default)]
pub struct SimStats {
    pub events: u64,
    pub ok: usize,
    pub failed: usize,
    pub indeterminate: usize,
    pub crashed_mid_op: usize,
    pub imposed: usize,
    pub messages: usize,
    pub dropped: usize,
    /// Read phases that asked the replicas they held back.
    pub hedges: usize,
    pub end_ms: u64,
}

pub struct SimReport {
    pub config: SimConfig,
    pub history: Vec<HistOp>,
    pub stats: SimStats,
}

impl SimReport {
    /// Checks every key's history for linearizability.
    pub fn check(&self) -> Result<(), String> {
        check_history(&self.history, self.config.key_count)
    }
}

/// Checks the history of each key separately (the quorum level promises
/// linearizability per key only).
pub fn check_history(history: &[HistOp], key_count: usize) -> Result<(), String> {
    for key in 0..key_count {
        let entries: Vec<Entry> = history.iter().filter(|h| h.key == key).filter_map(to_entry).collect();
        linearizability::check(&entries).map_err(|e| format!("key {key}: {e}\n{}", timeline(history, key)))?;
    }
    Ok(())
}

/// The key's operations in invocation order, with clients and sim times.
fn timeline(history: &[HistOp], key: usize) -> String {
    let show = |v: &Value| v.map_or_else(|| "absent".to_string(), |v| v.to_string());
    history
        .iter()
        .filter(|h| h.key == key)
        .map(|h| {
            let op = match &h.write {
                None => "get".to_string(),
                Some(v) => format!("set({})", show(v)),
            };
            let result = match &h.result {
                HistResult::Read(v) => format!("-> {}", show(v)),
                other => format!("-> {other:?}"),
            };
            let ret_ms = h.ret_ms.map_or_else(|| "?".to_string(), |t| t.to_string());
            format!("  client {} {op} {result} @ [{} ms, {ret_ms} ms]", h.client, h.invoke_ms)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn to_entry(h: &HistOp) -> Option<Entry> {
    match (&h.write, &h.result) {
        (None, HistResult::Read(v)) => Some(Entry::ok(RegOp::Read(*v), h.invoke, h.ret.expect("returned"))),
        (Some(v), HistResult::Written) => Some(Entry::ok(RegOp::Write(*v), h.invoke, h.ret.expect("returned"))),
        (Some(v), HistResult::Indeterminate | HistResult::Pending) => Some(Entry::unknown_write(*v, h.invoke)),
        // Failed operations and unanswered gets had no effect.
        (_, HistResult::Failed) | (None, HistResult::Pending) => None,
        (None, r) => unreachable!("a get ended as {r:?}"),
        (Some(_), r) => unreachable!("a set ended as {r:?}"),
    }
}

/// The value bytes a set writes: the value id, big-endian.
pub fn encode_value(id: u64) -> Bytes {
    Bytes::copy_from_slice(&id.to_be_bytes())
}

pub fn decode_value(bytes: &Bytes) -> u64 {
    u64::from_be_bytes(bytes[..].try_into().expect("8-byte sim value"))
}

#[derive(Debug)]
enum Event {
    Wake {
        client: usize,
    },
    /// A request reaches replica `to`.
    Deliver {
        client: usize,
        op_id: u64,
        to: NodeId,
        msg: Message,
    },
    /// A reply (or an RPC error) reaches the client's coordinator.
    Reply {
        client: usize,
        op_id: u64,
        input: Input,
    },
    Deadline {
        client: usize,
        op_id: u64,
    },
    /// The hedge delay of a majority-first read passed.
    Hedge {
        client: usize,
        op_id: u64,
    },
    CrashReplica {
        node: NodeId,
    },
    RestartReplica {
        node: NodeId,
    },
}

struct Running {
    op_id: u64,
    coord: Coordinator,
    hist: usize,
}

struct Client {
    home: NodeId,
    ops_left: usize,
    running: Option<Running>,
}

struct SimReplica {
    state: Replica,
    up: bool,
}

/// Runs one simulated schedule, entirely determined by `seed` (and the
/// coordinator config).
pub fn run(seed: u64, quorum: QuorumConfig) -> SimReport {
    let mut rng = StdRng::seed_from_u64(seed);
    let config = SimConfig::draw(seed, quorum, &mut rng);
    Sim::new(config, rng).run()
}

/// Upper bound on processed events; a run needs a few hundred.
const MAX_EVENTS: u64 = 200_000;

struct Sim {
    config: SimConfig,
    rng: StdRng,
    now_ms: u64,
    /// Tie-breaker of events at the same time, in scheduling order.
    next_seq: u64,
    /// Stamps of invocations and returns.
    next_stamp: u64,
    next_op_id: u64,
    next_value: u64,
    queue: BTreeMap<(u64, u64), Event>,
    replicas: BTreeMap<NodeId, SimReplica>,
    clocks: BTreeMap<NodeId, u64>,
    /// Base one-way latency of each (client, replica) link.
    link_ms: BTreeMap<(usize, NodeId), u64>,
    clients: Vec<Client>,
    history: Vec<HistOp>,
    stats: SimStats,
}

impl Sim {
    fn new(config: SimConfig, mut rng: StdRng) -> Sim {
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
            next_op_id: 0,
            next_value: 1,
            queue: BTreeMap::new(),
            replicas: ids.iter().map(|&id| (id, SimReplica { state: Replica::new(), up: true })).collect(),
            clocks: ids.iter().map(|&id| (id, 0)).collect(),
            link_ms,
            clients,
            history: Vec::new(),
            stats: SimStats::default(),
            config,
        }
    }

    fn run(mut self) -> SimReport {
        let horizon_ms = self.config.ops_per_client as u64 * (self.config.timeout_ms + self.config.max_think_ms);
        for node in 1..=self.config.replica_count as NodeId {
            for _ in 0..2 {
                if self.chance(self.config.replica_crash_pct) {
                    let at = self.rng.random_range(0..=horizon_ms);
                    let down_ms = self.rng.random_range(1..=2 * self.config.timeout_ms);
                    self.schedule_at(at, Event::CrashReplica { node });
                    self.schedule_at(at + down_ms, Event::RestartReplica { node });
                }
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
        SimReport { config: self.config, history: self.history, stats: self.stats }
    }

    fn chance(&mut self, pct: u32) -> bool {
        self.rng.random_range(0..100) < pct
    }

    fn schedule_at(&mut self, at_ms: u64, event: Event) {
        self.next_seq += 1;
        self.queue.insert((at_ms, self.next_seq), event);
    }

    /// One-way delay between `client` and replica `node`: the link's base
    /// latency plus jitter, sometimes much slower.
    fn delay_ms(&mut self, client: usize, node: NodeId) -> u64 {
        let d = self.link_ms[&(client, node)] + self.rng.random_range(0..=self.config.max_delay_ms);
        if self.chance(self.config.slow_pct) {
            d * self.config.slow_factor
        } else {
            d
        }
    }

    fn stamp(&mut self) -> u64 {
        self.next_stamp += 1;
        self.next_stamp
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Wake { client } => self.start_op(client),
            Event::Deliver { client, op_id, to, msg } => self.deliver(client, op_id, to, msg),
            Event::Reply { client, op_id, input } => {
                if let Some(coord) = self.coordinator(client, op_id) {
                    let effects = coord.step(input);
                    self.perform(client, effects);
                }
            }
            Event::Deadline { client, op_id } => {
                if let Some(coord) = self.coordinator(client, op_id) {
                    let effects = coord.step(Input::Deadline);
                    self.perform(client, effects);
                }
            }
            Event::Hedge { client, op_id } => {
                if let Some(coord) = self.coordinator(client, op_id) {
                    if coord.holds_back() {
                        let effects = coord.step(Input::Hedge);
                        self.stats.hedges += 1;
                        self.perform(client, effects);
                    }
                }
            }
            Event::CrashReplica { node } => self.replicas.get_mut(&node).expect("replica").up = false,
            Event::RestartReplica { node } => self.replicas.get_mut(&node).expect("replica").up = true,
        }
    }

    /// The coordinator of `client`'s operation `op_id`, if it is still
    /// running there (replies to older operations are dropped).
    fn coordinator(&mut self, client: usize, op_id: u64) -> Option<&mut Coordinator> {
        self.clients[client].running.as_mut().filter(|r| r.op_id == op_id).map(|r| &mut r.coord)
    }

    fn start_op(&mut self, client: usize) {
        let c = &self.clients[client];
        if c.ops_left == 0 || c.running.is_some() {
            return;
        }
        let key = self.rng.random_range(0..self.config.key_count);
        let key_bytes = Bytes::from(format!("key-{key}"));
        let roll = self.rng.random_range(0..100);
        let (op, write) = if roll < 55 {
            (Op::Get { key: key_bytes }, None)
        } else if roll < 90 {
            let id = self.next_value;
            self.next_value += 1;
            (Op::set(key_bytes, encode_value(id)), Some(Some(id)))
        } else {
            (Op::del(key_bytes), Some(None))
        };
        let replicas: Vec<NodeId> = self.replicas.keys().copied().collect();
        let mut coord = Coordinator::new(op, replicas, self.config.quorum.clone()).expect("valid replica set");
        if self.config.quorum.read_fanout == ReadFanout::Majority {
            // The client's home node first (the node's own replica), the
            // others in a random order.
            let home = self.clients[client].home;
            let mut others: Vec<NodeId> = self.replicas.keys().copied().filter(|&r| r != home).collect();
            others.shuffle(&mut self.rng);
            coord.prefer(std::iter::once(home).chain(others).collect());
        }
        let invoke = self.stamp();
        self.history.push(HistOp {
            client,
            key,
            write,
            invoke,
            ret: None,
            invoke_ms: self.now_ms,
            ret_ms: None,
            result: HistResult::Pending,
        });
        self.next_op_id += 1;
        let op_id = self.next_op_id;
        let hist = self.history.len() - 1;
        let c = &mut self.clients[client];
        c.running = Some(Running { op_id, coord, hist });
        self.schedule_at(self.now_ms + self.config.timeout_ms, Event::Deadline { client, op_id });
        if self.config.quorum.read_fanout == ReadFanout::Majority {
            self.schedule_at(self.now_ms + self.config.hedge_after_ms, Event::Hedge { client, op_id });
        }
        let effects = self.clients[client].running.as_mut().expect("just set").coord.step(Input::Start);
        self.perform(client, effects);
    }

    /// Carries out a coordinator's effects (answering version requests at
    /// once, as the shell does).
    fn perform(&mut self, client: usize, effects: Vec<Effect>) {
        let mut batch = effects;
        while !batch.is_empty() {
            // A coordinator sends a whole phase at once; it may crash part-way
            // through sending its write phase.
            let writes = batch.iter().filter(|e| matches!(e, Effect::Send { msg: Message::Write { .. }, .. })).count();
            if writes > 0 && self.chance(self.config.writer_crash_pct) {
                let mut sends: Vec<Effect> = batch.into_iter().filter(|e| matches!(e, Effect::Send { .. })).collect();
                sends.shuffle(&mut self.rng);
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

    /// Performs one effect; returns the coordinator's follow-up effects.
    fn perform_one(&mut self, client: usize, effect: Effect) -> Vec<Effect> {
        let Some(running) = &self.clients[client].running else {
            unreachable!("effects come from a running coordinator");
        };
        let op_id = running.op_id;
        match effect {
            Effect::Send { to, msg } => {
                self.stats.messages += 1;
                if self.chance(self.config.drop_pct) {
                    self.lost(client, op_id, to, msg.phase());
                } else {
                    let at = self.now_ms + self.delay_ms(client, to);
                    self.schedule_at(at, Event::Deliver { client, op_id, to, msg });
                }
                Vec::new()
            }
            Effect::NeedVersion { above } => {
                let home = self.clients[client].home;
                let v = self.next_version(home, above);
                let running = self.clients[client].running.as_mut().expect("running");
                running.coord.step(Input::Version(v))
            }
            Effect::Done(result) => {
                let running = self.clients[client].running.take().expect("running");
                self.record_return(running.hist, result);
                let c = &mut self.clients[client];
                c.ops_left -= 1;
                let at = self.now_ms + self.rng.random_range(0..=self.config.max_think_ms);
                self.schedule_at(at, Event::Wake { client });
                Vec::new()
            }
        }
    }

    /// A message that never arrives: the RPC layer may report it.
    fn lost(&mut self, client: usize, op_id: u64, from: NodeId, phase: Phase) {
        self.stats.dropped += 1;
        if self.chance(self.config.fail_on_drop_pct) {
            let at = self.now_ms + self.delay_ms(client, from);
            let input = Input::Failed { from, phase, reason: "simulated RPC error".into() };
            self.schedule_at(at, Event::Reply { client, op_id, input });
        }
    }

    fn deliver(&mut self, client: usize, op_id: u64, to: NodeId, msg: Message) {
        let replica = self.replicas.get_mut(&to).expect("replica");
        if !replica.up {
            self.lost(client, op_id, to, msg.phase());
            return;
        }
        let input = replica.state.serve(to, &msg);
        // The reply travels back; the request was applied even if it is lost.
        if self.chance(self.config.drop_pct) {
            self.lost(client, op_id, to, msg.phase());
            return;
        }
        let at = self.now_ms + self.delay_ms(client, to);
        if self.chance(self.config.dup_pct) {
            let dup_at = at + self.delay_ms(client, to);
            self.schedule_at(dup_at, Event::Reply { client, op_id, input: input.clone() });
        }
        self.schedule_at(at, Event::Reply { client, op_id, input });
    }

    /// The node clock's next version above `above` (like `Clock::next_after`),
    /// sometimes after a forward jump, sometimes reusing `above`'s clock part
    /// when the node id breaks the tie.
    fn next_version(&mut self, home: NodeId, above: Version) -> Version {
        let jump = if self.chance(self.config.clock_jump_pct) { self.rng.random_range(1..=1_000) } else { 0 };
        let clock = self.clocks[&home] + jump;
        let hlc = if above.hlc > clock && home > above.node_id && self.rng.random_bool(0.5) {
            above.hlc
        } else {
            (clock + 1).max(above.hlc + 1)
        };
        self.clocks.insert(home, hlc);
        let v = Version::new(hlc, home);
        assert!(v > above);
        v
    }

    fn record_return(&mut self, hist: usize, result: Result<Outcome, QuorumError>) {
        let ret = self.stamp();
        let h = &mut self.history[hist];
        h.ret = Some(ret);
        h.ret_ms = Some(self.now_ms);
        h.result = match result {
            Ok(Outcome::Get { cell, imposed }) => {
                self.stats.imposed += usize::from(imposed);
                HistResult::Read(cell.and_then(|c| c.value).map(|v| decode_value(&v)))
            }
            Ok(Outcome::Set { .. }) => HistResult::Written,
            Err(QuorumError::Unavailable { .. }) => HistResult::Failed,
            Err(QuorumError::Indeterminate { .. }) => HistResult::Indeterminate,
        };
        match h.result {
            HistResult::Failed => self.stats.failed += 1,
            HistResult::Indeterminate => self.stats.indeterminate += 1,
            _ => self.stats.ok += 1,
        }
    }

    /// The client's process dies mid-operation: that operation never
    /// returns (its messages already sent still travel); a new process
    /// takes over the client's remaining operations after a while.
    fn crash_client(&mut self, client: usize) {
        let c = &mut self.clients[client];
        c.running = None;
        c.ops_left -= 1;
        self.stats.crashed_mid_op += 1;
        let at = self.now_ms + self.rng.random_range(1..=self.config.timeout_ms);
        self.schedule_at(at, Event::Wake { client });
    }
}

/// Scripted, synchronous delivery for hand-built schedules: every message a
/// coordinator sends either reaches its replica at once (and the reply comes
/// straight back) or is lost, as the test's `reach` decides.
pub struct Cluster {
    pub replicas: BTreeMap<NodeId, Replica>,
    pub config: QuorumConfig,
}

impl Cluster {
    pub fn new(replica_count: usize, config: QuorumConfig) -> Cluster {
        Cluster { replicas: (1..=replica_count as NodeId).map(|id| (id, Replica::new())).collect(), config }
    }

    pub fn coordinator(&self, op: Op) -> Coordinator {
        Coordinator::new(op, self.replicas.keys().copied().collect(), self.config.clone()).expect("valid replica set")
    }

    /// Starts `coord` and delivers its messages in FIFO order, only those
    /// for which `reach(phase, to)` holds; versions come from `version`.
    /// Returns the result, or `None` if the coordinator did not finish.
    pub fn drive(
        &mut self,
        coord: &mut Coordinator,
        reach: impl Fn(Phase, NodeId) -> bool,
        mut version: impl FnMut(Version) -> Version,
    ) -> Option<Result<Outcome, QuorumError>> {
        let mut inputs = std::collections::VecDeque::from([Input::Start]);
        while let Some(input) = inputs.pop_front() {
            for effect in coord.step(input) {
                match effect {
                    Effect::Send { to, msg } if reach(msg.phase(), to) => {
                        let replica = self.replicas.get_mut(&to).expect("replica");
                        inputs.push_back(replica.serve(to, &msg));
                    }
                    Effect::Send { .. } => {}
                    Effect::NeedVersion { above } => inputs.push_back(Input::Version(version(above))),
                    Effect::Done(result) => return Some(result),
                }
            }
        }
        None
    }
}
