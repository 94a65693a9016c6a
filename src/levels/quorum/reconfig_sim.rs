//! A deterministic simulation of quorum operations across replica-set
//! changes (tests only).
//!
//! Why it exists: the reconfiguration rule (docs/consistency.md, "Changing
//! the replica set") is about interleavings of client operations with the
//! steps of a change — an old-epoch write landing while the transfer runs,
//! a client with a stale configuration, a removed node still answering.
//! Like `sim`, every choice comes from ONE seeded RNG over ordered maps, so
//! a seed replays its schedule.
//!
//! What it runs: concurrent clients doing get/set/del on one or two keys,
//! each operation a real [`Coordinator`] in the client's cached
//! [`ReplicaConfig`], against [`Replica`]s that apply the epoch rule
//! ([`Replica::serve_at`], [`Replica::pull`]); meanwhile an admin runs a
//! plan of changes (add a node, remove one, replace one or two, 3 → 5 → 3,
//! random chains) with the real [`Reconfig`] driver. Clients learn a newer
//! configuration only from refusals ([`Input::StaleConfig`]) or, now and
//! then, by asking for the latest one at the start of an operation.
//!
//! Fault model: per-link latency plus jitter and slow messages
//! (reordering); lost requests and replies, reported or not (then the
//! deadline); duplicated replies; nodes crashing and restarting with their
//! state, and nodes cut off (a partition of one node, a minority of every
//! configuration of three or more); the admin's messages lost too (it
//! retries); writers crashing part-way through their write phase; removed
//! nodes crashing for good once their removal is done.
//!
//! [`Variant`] switches one rule off, for the negative controls.

use std::collections::BTreeMap;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};

use super::config::ReplicaConfig;
use super::core::{Coordinator, Effect, Input, Message, Op, Outcome, Phase, QuorumConfig, QuorumError};
use super::reconfig::{self, Reconfig, ReconfigSettings};
use super::replica::{PullReply, Replica};
use super::sim::{check_history, decode_value, encode_value, HistOp, HistResult};
use crate::clock::{NodeId, Version};
use crate::store::Cell;

/// Which rule of the reconfiguration runs; all but `Safe` are unsafe
/// negative controls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    Safe,
    /// Epoch `e+1` is the new set alone, not joint.
    NoJoint,
    /// The joint epoch is followed at once by the new one, no transfer.
    NoTransfer,
    /// Replicas serve every message whatever its epoch (and never refuse).
    IgnoreEpochs,
}

/// The knobs of one run, all drawn from the seed.
#[derive(Clone, Debug)]
pub struct RsimConfig {
    pub seed: u64,
    pub variant: Variant,
    pub initial: Vec<NodeId>,
    /// The replica sets to change to, one after the other.
    pub plan: Vec<Vec<NodeId>>,
    pub client_count: usize,
    pub key_count: usize,
    pub ops_per_client: usize,
    pub max_link_ms: u64,
    pub max_delay_ms: u64,
    pub slow_pct: u32,
    pub slow_factor: u64,
    pub drop_pct: u32,
    pub fail_on_drop_pct: u32,
    pub dup_pct: u32,
    /// Chance per node of a crash window, and of a cut-off window.
    pub crash_pct: u32,
    pub isolate_pct: u32,
    pub writer_crash_pct: u32,
    /// Chance that a removed node crashes for good once its removal is done.
    pub removed_crash_pct: u32,
    /// Chance that a client asks for the latest configuration before an
    /// operation (otherwise it uses the one it has).
    pub refresh_pct: u32,
    pub pull_cells_max: usize,
    pub timeout_ms: u64,
    pub max_think_ms: u64,
}

/// Node ids the plans use.
const NODES_MAX: NodeId = 7;

impl RsimConfig {
    fn draw(seed: u64, variant: Variant, rng: &mut StdRng) -> RsimConfig {
        let (initial, plan) = draw_plan(rng);
        RsimConfig {
            seed,
            variant,
            initial,
            plan,
            client_count: rng.random_range(2..=4),
            key_count: *[1, 1, 2].choose(rng).expect("non-empty"),
            ops_per_client: rng.random_range(6..=16),
            max_link_ms: rng.random_range(1..=15),
            max_delay_ms: rng.random_range(0..=10),
            slow_pct: rng.random_range(0..=20),
            slow_factor: rng.random_range(3..=20),
            drop_pct: rng.random_range(0..=10),
            fail_on_drop_pct: rng.random_range(0..=100),
            dup_pct: rng.random_range(0..=10),
            crash_pct: rng.random_range(0..=30),
            isolate_pct: rng.random_range(0..=30),
            writer_crash_pct: rng.random_range(0..=20),
            removed_crash_pct: rng.random_range(0..=100),
            refresh_pct: rng.random_range(0..=60),
            pull_cells_max: rng.random_range(1..=3),
            timeout_ms: rng.random_range(60..=300),
            max_think_ms: rng.random_range(0..=30),
        }
    }
}

/// An initial replica set and the changes to make.
fn draw_plan(rng: &mut StdRng) -> (Vec<NodeId>, Vec<Vec<NodeId>>) {
    let three = vec![1, 2, 3];
    match rng.random_range(0..6) {
        // Add a node.
        0 => (three, vec![vec![1, 2, 3, 4]]),
        // Remove a node (5 -> 4 -> 3).
        1 => (vec![1, 2, 3, 4, 5], vec![vec![1, 2, 3, 4], vec![2, 3, 4]]),
        // Replace one node: add the new, remove the old.
        2 => (three, vec![vec![1, 2, 4]]),
        // Replace two at once.
        3 => (three, vec![vec![1, 4, 5]]),
        // 3 -> 5 -> 3, ending on a different three.
        4 => (three, vec![vec![1, 2, 3, 4, 5], vec![3, 4, 5]]),
        // A random chain of adds, removes and replacements.
        _ => {
            let mut set = three.clone();
            let mut plan = Vec::new();
            // A removed node may be gone for good: never add it back.
            let mut used = set.clone();
            for _ in 0..rng.random_range(2..=4) {
                let outside: Vec<NodeId> = (1..=NODES_MAX).filter(|n| !used.contains(n)).collect();
                let mut next = set.clone();
                match rng.random_range(0..3) {
                    0 if !outside.is_empty() => next.push(*outside.choose(rng).expect("non-empty")),
                    1 if set.len() > 1 => {
                        let i = rng.random_range(0..next.len());
                        next.remove(i);
                    }
                    _ if !outside.is_empty() => {
                        let i = rng.random_range(0..next.len());
                        next[i] = *outside.choose(rng).expect("non-empty");
                    }
                    _ => next.truncate(next.len().max(2) - 1),
                }
                next.sort_unstable();
                used.extend(next.iter().filter(|n| !set.contains(n)));
                plan.push(next.clone());
                set = next;
            }
            (three, plan)
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct RsimStats {
    pub ok: usize,
    pub failed: usize,
    pub indeterminate: usize,
    pub crashed_mid_op: usize,
    /// Changes finished, and failed.
    pub changes: usize,
    pub changes_failed: usize,
    /// Refusals a coordinator restarted on.
    pub stale_refusals: usize,
    /// Operations invoked while a change was in progress.
    pub ops_during_change: usize,
    pub pull_batches: usize,
    pub removed_crashed: usize,
    pub dropped: usize,
    pub events: u64,
}

impl RsimStats {
    pub fn add(&mut self, o: &RsimStats) {
        self.ok += o.ok;
        self.failed += o.failed;
        self.indeterminate += o.indeterminate;
        self.crashed_mid_op += o.crashed_mid_op;
        self.changes += o.changes;
        self.changes_failed += o.changes_failed;
        self.stale_refusals += o.stale_refusals;
        self.ops_during_change += o.ops_during_change;
        self.pull_batches += o.pull_batches;
        self.removed_crashed += o.removed_crashed;
        self.dropped += o.dropped;
        self.events += o.events;
    }
}

pub struct RsimReport {
    pub config: RsimConfig,
    pub history: Vec<HistOp>,
    pub stats: RsimStats,
}

impl RsimReport {
    pub fn check(&self) -> Result<(), String> {
        check_history(&self.history, self.config.key_count)
    }
}

/// Runs the schedule of `seed` under `variant`.
pub fn run(seed: u64, variant: Variant) -> RsimReport {
    let mut rng = StdRng::seed_from_u64(seed);
    let config = RsimConfig::draw(seed, variant, &mut rng);
    Rsim::new(config, rng).run()
}

const MAX_EVENTS: u64 = 500_000;

#[derive(Debug)]
enum Event {
    Wake {
        client: usize,
    },
    /// A request, sent in configuration `config`, reaches replica `to`.
    Deliver {
        client: usize,
        op_id: u64,
        to: NodeId,
        config: ReplicaConfig,
        msg: Message,
    },
    Reply {
        client: usize,
        op_id: u64,
        input: Input,
    },
    Deadline {
        client: usize,
        op_id: u64,
    },
    Down {
        node: NodeId,
    },
    Up {
        node: NodeId,
    },
    /// The admin starts the next change of the plan.
    AdminStart,
    AdminInput {
        change: usize,
        input: reconfig::Input,
    },
    /// A configuration push reaches `to`.
    PushArrives {
        change: usize,
        to: NodeId,
        config: ReplicaConfig,
    },
    /// A pull request reaches its source.
    PullArrives {
        change: usize,
        into: NodeId,
        from: NodeId,
        config: ReplicaConfig,
        after: Option<Bytes>,
        limit: usize,
    },
    /// A pulled batch reaches its target, which merges it.
    BatchArrives {
        change: usize,
        into: NodeId,
        from: NodeId,
        after: Option<Bytes>,
        cells: Vec<(Bytes, Cell)>,
        more: bool,
    },
}

struct Running {
    op_id: u64,
    coord: Coordinator,
    hist: usize,
}

struct Client {
    /// The writer id of this client's versions (unique per client).
    writer: NodeId,
    clock: u64,
    config: ReplicaConfig,
    ops_left: usize,
    running: Option<Running>,
}

struct Node {
    replica: Replica,
    /// Down windows (crash or cut off) nest: down while > 0.
    down: u32,
    /// Crashed for good (a removed node).
    gone: bool,
}

struct Rsim {
    config: RsimConfig,
    rng: StdRng,
    now_ms: u64,
    next_seq: u64,
    next_stamp: u64,
    next_op_id: u64,
    next_value: u64,
    queue: BTreeMap<(u64, u64), Event>,
    nodes: BTreeMap<NodeId, Node>,
    clients: Vec<Client>,
    /// The latest configuration the admin published (what a refreshing
    /// client gets): the settled one, or the change's epoch e+1 while a
    /// change runs, or its e+2 once the transfer is done.
    published: ReplicaConfig,
    /// The settled configuration the next change starts from.
    settled: ReplicaConfig,
    change: Option<Reconfig>,
    /// Index of the running (or next) change in the plan.
    change_index: usize,
    history: Vec<HistOp>,
    stats: RsimStats,
}

impl Rsim {
    fn new(config: RsimConfig, rng: StdRng) -> Rsim {
        let settled = ReplicaConfig { epoch: 1, current: config.initial.clone(), next: None };
        let mut nodes = BTreeMap::new();
        for id in 1..=NODES_MAX {
            let mut replica = Replica::new();
            if settled.contains(id) {
                replica.adopt(&settled);
            }
            nodes.insert(id, Node { replica, down: 0, gone: false });
        }
        let clients = (0..config.client_count)
            .map(|i| Client {
                writer: 100 + i as NodeId,
                clock: 0,
                config: settled.clone(),
                ops_left: config.ops_per_client,
                running: None,
            })
            .collect();
        Rsim {
            rng,
            now_ms: 0,
            next_seq: 0,
            next_stamp: 0,
            next_op_id: 0,
            next_value: 1,
            queue: BTreeMap::new(),
            nodes,
            clients,
            published: settled.clone(),
            settled,
            change: None,
            change_index: 0,
            history: Vec::new(),
            stats: RsimStats::default(),
            config,
        }
    }

    fn run(mut self) -> RsimReport {
        let horizon_ms = self.config.ops_per_client as u64 * (self.config.timeout_ms / 2 + self.config.max_think_ms);
        for node in 1..=NODES_MAX {
            for pct in [self.config.crash_pct, self.config.isolate_pct] {
                if self.chance(pct) {
                    let at = self.rng.random_range(0..=horizon_ms);
                    let down_ms = self.rng.random_range(1..=2 * self.config.timeout_ms);
                    self.schedule_at(at, Event::Down { node });
                    self.schedule_at(at + down_ms, Event::Up { node });
                }
            }
        }
        let first_change_ms = self.rng.random_range(0..=horizon_ms / 2);
        self.schedule_at(first_change_ms, Event::AdminStart);
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
        for c in &self.clients {
            assert!(c.running.is_none() && c.ops_left == 0, "every client finished");
        }
        RsimReport { config: self.config, history: self.history, stats: self.stats }
    }

    fn chance(&mut self, pct: u32) -> bool {
        self.rng.random_range(0..100) < pct
    }

    fn schedule_at(&mut self, at_ms: u64, event: Event) {
        self.next_seq += 1;
        self.queue.insert((at_ms, self.next_seq), event);
    }

    fn delay_ms(&mut self) -> u64 {
        let d =
            self.rng.random_range(1..=self.config.max_link_ms) + self.rng.random_range(0..=self.config.max_delay_ms);
        if self.chance(self.config.slow_pct) {
            d * self.config.slow_factor
        } else {
            d
        }
    }

    fn reachable(&self, node: NodeId) -> bool {
        let n = &self.nodes[&node];
        n.down == 0 && !n.gone
    }

    fn stamp(&mut self) -> u64 {
        self.next_stamp += 1;
        self.next_stamp
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Wake { client } => self.start_op(client),
            Event::Deliver { client, op_id, to, config, msg } => self.deliver(client, op_id, to, config, msg),
            Event::Reply { client, op_id, input } => {
                let refusal = matches!(input, Input::StaleConfig { .. });
                let live = self.clients[client].running.as_ref().is_some_and(|r| r.op_id == op_id);
                self.stats.stale_refusals += usize::from(refusal && live);
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
            Event::Down { node } => self.nodes.get_mut(&node).expect("node").down += 1,
            Event::Up { node } => self.nodes.get_mut(&node).expect("node").down -= 1,
            Event::AdminStart => self.start_change(),
            Event::AdminInput { change, input } => self.admin_step(change, input),
            Event::PushArrives { change, to, config } => {
                let input = if self.reachable(to) && !self.chance(self.config.drop_pct) {
                    let epoch = self.nodes.get_mut(&to).expect("node").replica.adopt(&config).epoch;
                    reconfig::Input::ConfigAck { from: to, epoch }
                } else {
                    reconfig::Input::ConfigFailed { to, epoch: config.epoch }
                };
                let at = self.now_ms + self.delay_ms();
                self.schedule_at(at, Event::AdminInput { change, input });
            }
            Event::PullArrives { change, into, from, config, after, limit } => {
                if !self.reachable(from) || self.chance(self.config.drop_pct) {
                    let at = self.now_ms + self.delay_ms();
                    let input = reconfig::Input::PullFailed { into, from, after };
                    self.schedule_at(at, Event::AdminInput { change, input });
                    return;
                }
                let reply = self.nodes.get_mut(&from).expect("node").replica.pull(&config, after.as_ref(), limit);
                let at = self.now_ms + self.delay_ms();
                match reply {
                    PullReply::Batch { cells, more } => {
                        assert!(cells.len() <= limit, "a pull batch is bounded");
                        self.schedule_at(at, Event::BatchArrives { change, into, from, after, cells, more });
                    }
                    PullReply::StaleConfig(config) => {
                        let input = reconfig::Input::PullRefused { into, from, config };
                        self.schedule_at(at, Event::AdminInput { change, input });
                    }
                }
            }
            Event::BatchArrives { change, into, from, after, cells, more } => {
                let at = self.now_ms + self.delay_ms();
                if !self.reachable(into) || self.chance(self.config.drop_pct) {
                    let input = reconfig::Input::PullFailed { into, from, after };
                    self.schedule_at(at, Event::AdminInput { change, input });
                    return;
                }
                self.stats.pull_batches += 1;
                let last_key = cells.last().map(|(k, _)| k.clone());
                let replica = &mut self.nodes.get_mut(&into).expect("node").replica;
                for (key, cell) in cells {
                    replica.write(key, cell);
                }
                let input = reconfig::Input::Pulled { into, from, after, last_key, more };
                self.schedule_at(at, Event::AdminInput { change, input });
            }
        }
    }

    fn start_change(&mut self) {
        let Some(to) = self.config.plan.get(self.change_index).cloned() else {
            return;
        };
        let settings = ReconfigSettings {
            pull_cells_max: self.config.pull_cells_max,
            attempts_max: 20,
            skip_joint_unsafe: self.config.variant == Variant::NoJoint,
            skip_transfer_unsafe: self.config.variant == Variant::NoTransfer,
        };
        let mut change = Reconfig::new(&self.settled, to, settings).expect("the plan's sets are valid");
        self.published = change.joint().clone();
        let effects = change.step(reconfig::Input::Start);
        self.change = Some(change);
        self.admin_perform(effects);
    }

    fn admin_step(&mut self, change: usize, input: reconfig::Input) {
        if change != self.change_index {
            return;
        }
        let Some(driver) = self.change.as_mut() else {
            return;
        };
        let effects = driver.step(input);
        self.admin_perform(effects);
    }

    fn admin_perform(&mut self, effects: Vec<reconfig::Effect>) {
        let change = self.change_index;
        for effect in effects {
            let at = self.now_ms + self.delay_ms();
            match effect {
                reconfig::Effect::PushConfig { to, config } => {
                    // The final configuration is published once the
                    // transfer is done (the driver pushes it then).
                    if config.epoch > self.published.epoch {
                        self.published = config.clone();
                    }
                    self.schedule_at(at, Event::PushArrives { change, to, config });
                }
                reconfig::Effect::Pull { into, from, config, after, limit } => {
                    self.schedule_at(at, Event::PullArrives { change, into, from, config, after, limit });
                }
                reconfig::Effect::Done(result) => {
                    let driver = self.change.take().expect("a change was running");
                    self.change_index += 1;
                    match result {
                        Ok(config) => {
                            self.stats.changes += 1;
                            self.settle(config);
                        }
                        Err(reconfig::ReconfigError::FinalIncomplete { .. }) => {
                            // In effect all the same; the others learn it
                            // from refusals.
                            self.stats.changes += 1;
                            self.settle(driver.target().clone());
                        }
                        Err(_) => {
                            // Left joint (safe); the plan stops here.
                            self.stats.changes_failed += 1;
                            return;
                        }
                    }
                    let gap_ms = self.rng.random_range(0..=self.config.timeout_ms);
                    self.schedule_at(self.now_ms + gap_ms, Event::AdminStart);
                }
            }
        }
    }

    /// The change to `config` is done: removed nodes may crash for good.
    fn settle(&mut self, config: ReplicaConfig) {
        let removed: Vec<NodeId> = self.settled.current.iter().copied().filter(|n| !config.contains(*n)).collect();
        for node in removed {
            if self.chance(self.config.removed_crash_pct) {
                self.nodes.get_mut(&node).expect("node").gone = true;
                self.stats.removed_crashed += 1;
            }
        }
        self.published = config.clone();
        self.settled = config;
    }

    fn coordinator(&mut self, client: usize, op_id: u64) -> Option<&mut Coordinator> {
        self.clients[client].running.as_mut().filter(|r| r.op_id == op_id).map(|r| &mut r.coord)
    }

    fn start_op(&mut self, client: usize) {
        let c = &self.clients[client];
        if c.ops_left == 0 || c.running.is_some() {
            return;
        }
        if self.chance(self.config.refresh_pct) && self.published.epoch > self.clients[client].config.epoch {
            self.clients[client].config = self.published.clone();
        }
        if self.change.is_some() {
            self.stats.ops_during_change += 1;
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
        let coord = Coordinator::with_config(op, self.clients[client].config.clone(), QuorumConfig::default())
            .expect("valid configuration");
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
        self.clients[client].running = Some(Running { op_id, coord, hist });
        self.schedule_at(self.now_ms + self.config.timeout_ms, Event::Deadline { client, op_id });
        let effects = self.clients[client].running.as_mut().expect("just set").coord.step(Input::Start);
        self.perform(client, effects);
    }

    fn perform(&mut self, client: usize, effects: Vec<Effect>) {
        let mut batch = effects;
        while !batch.is_empty() {
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

    fn perform_one(&mut self, client: usize, effect: Effect) -> Vec<Effect> {
        let running = self.clients[client].running.as_ref().expect("effects come from a running coordinator");
        let op_id = running.op_id;
        match effect {
            Effect::Send { to, msg } => {
                // Every send of a step is at the coordinator's epoch then.
                let config = running.coord.replica_config().clone();
                if self.chance(self.config.drop_pct) {
                    self.lost(client, op_id, to, config.epoch, msg.phase());
                } else {
                    let at = self.now_ms + self.delay_ms();
                    self.schedule_at(at, Event::Deliver { client, op_id, to, config, msg });
                }
                Vec::new()
            }
            Effect::NeedVersion { above } => {
                let c = &mut self.clients[client];
                let jump = if self.rng.random_range(0..100) < 5 { self.rng.random_range(1..=100) } else { 0 };
                let hlc = (c.clock + jump).max(above.hlc) + 1;
                c.clock = hlc;
                let v = Version::new(hlc, c.writer);
                assert!(v > above);
                c.running.as_mut().expect("running").coord.step(Input::Version(v))
            }
            Effect::Done(result) => {
                let running = self.clients[client].running.take().expect("running");
                // The client keeps the newest configuration it learnt.
                let learnt = running.coord.replica_config();
                if learnt.epoch > self.clients[client].config.epoch {
                    self.clients[client].config = learnt.clone();
                }
                self.record_return(running.hist, result);
                self.clients[client].ops_left -= 1;
                let at = self.now_ms + self.rng.random_range(0..=self.config.max_think_ms);
                self.schedule_at(at, Event::Wake { client });
                Vec::new()
            }
        }
    }

    fn lost(&mut self, client: usize, op_id: u64, from: NodeId, epoch: u64, phase: Phase) {
        self.stats.dropped += 1;
        if self.chance(self.config.fail_on_drop_pct) {
            let at = self.now_ms + self.delay_ms();
            let failed = Input::Failed { from, phase, reason: "simulated RPC error".into() };
            let input = Input::AtEpoch { epoch, reply: Box::new(failed) };
            self.schedule_at(at, Event::Reply { client, op_id, input });
        }
    }

    fn deliver(&mut self, client: usize, op_id: u64, to: NodeId, config: ReplicaConfig, msg: Message) {
        if !self.reachable(to) {
            self.lost(client, op_id, to, config.epoch, msg.phase());
            return;
        }
        let replica = &mut self.nodes.get_mut(&to).expect("node").replica;
        let input = match self.config.variant {
            Variant::IgnoreEpochs => Input::AtEpoch { epoch: config.epoch, reply: Box::new(replica.serve(to, &msg)) },
            _ => replica.serve_at(to, &config, &msg),
        };
        if self.chance(self.config.drop_pct) {
            self.lost(client, op_id, to, config.epoch, msg.phase());
            return;
        }
        let at = self.now_ms + self.delay_ms();
        if self.chance(self.config.dup_pct) {
            let dup_at = at + self.delay_ms();
            self.schedule_at(dup_at, Event::Reply { client, op_id, input: input.clone() });
        }
        self.schedule_at(at, Event::Reply { client, op_id, input });
    }

    fn record_return(&mut self, hist: usize, result: Result<Outcome, QuorumError>) {
        let ret = self.stamp();
        let h = &mut self.history[hist];
        h.ret = Some(ret);
        h.ret_ms = Some(self.now_ms);
        h.result = match result {
            Ok(Outcome::Get { cell, .. }) => HistResult::Read(cell.and_then(|c| c.value).map(|v| decode_value(&v))),
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

    fn crash_client(&mut self, client: usize) {
        let c = &mut self.clients[client];
        c.running = None;
        c.ops_left -= 1;
        self.stats.crashed_mid_op += 1;
        let at = self.now_ms + self.rng.random_range(1..=self.config.timeout_ms);
        self.schedule_at(at, Event::Wake { client });
    }
}
