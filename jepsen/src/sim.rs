//! The whole-node simulation ring: three real capkv nodes in this process
//! (`capkv::sim`), a register workload through the real client library, and
//! a fault schedule — partitions, delayed links, connection resets (the
//! in-flight messages are lost), clean node restarts — all drawn from one
//! seed; the history is checked with our linearizability checker.
//!
//! Levels: quorum, linearizable, or `mixed` (each read, write and cas at
//! quorum or linearizable, drawn per operation, on the same keys: the two
//! levels must be linearizable together). The eventual choices
//! (`eventual`, `mixed-eventual`) promise no linearizability and have no
//! place here.
//!
//! Determinism: a seed fixes everything. [`run_seed`] runs the cluster, the
//! clients and the fault schedule on one fresh current-thread tokio runtime
//! with paused time (virtual: it jumps to the next timer whenever every
//! task waits, so a run takes no real waiting and its timing does not
//! depend on the machine) and a seeded RNG for `tokio::select!` (with the
//! workspace's `tokio_unstable` cfg, [`select_is_seeded`]). The nodes' stores
//! write in place, blocking work runs on the same thread (`capkv::rt`),
//! Raft's election timeouts and every id come from the seed, and wall
//! clocks start at a fixed date (`capkv::sim::cluster`). So two runs of one
//! seed produce the same history, event for event and nanosecond for
//! nanosecond of virtual time: a failure found by seed S is reproduced by
//! rerunning S (`CAPKV_SIM_SEED=S`, see `jepsen/tests/simulation.rs` and
//! `scripts/sim.sh`), and `same_seed_same_history` checks it.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use capkv::sim::cluster::{host, SimCluster, SimSettings};
use capkv::Level;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::checker::{kv, Outcome, Verdict};
use crate::client::execute;
use crate::generator::OpSpec;
use crate::history::{Event, EventType, OpKind, Value};
use crate::run::RegisterLevel;

/// Concurrent clients; each is one process of the history at a time.
pub const SIM_CLIENTS: u64 = 4;
/// Keys the clients share (few keys: many conflicts).
pub const SIM_KEYS: u64 = 2;
/// How long the checker may search one history.
pub const CHECK_BUDGET_MS: u64 = 20_000;
/// How long the cluster has to elect a leader and answer a first write.
pub const READY_TIMEOUT_MS: u64 = 30_000;
/// Operation deadline (client side).
pub const OP_TIMEOUT_MS: u64 = 1_000;
/// Largest clock skew the schedule draws, either way: past the nodes'
/// default `--max-clock-drift-ms` (500), so both skews the HLC absorbs and
/// ones that make peers refuse a node's stamps come up.
pub const MAX_SKEW_MS: i64 = 800;
/// How long the workload goes on after the last fault is healed, unless a
/// run says otherwise.
pub const SETTLE_MS_DEFAULT: u64 = 500;

/// One seeded run.
#[derive(Clone, Debug)]
pub struct SimRun {
    pub seed: u64,
    /// One level, or [`RegisterLevel::Mixed`].
    pub level: RegisterLevel,
    /// Faults applied one after the other.
    pub faults: usize,
    /// Longest pause between two faults (the pause is drawn in
    /// `[fault_gap_max_ms / 4, fault_gap_max_ms]`).
    pub fault_gap_max_ms: u64,
    /// How long the workload goes on after every fault is healed (the
    /// whole workload when `faults` is 0).
    pub settle_ms: u64,
    pub settings: SimSettings,
}

impl SimRun {
    pub fn new(seed: u64, level: impl Into<RegisterLevel>) -> SimRun {
        SimRun {
            seed,
            level: level.into(),
            faults: 8,
            fault_gap_max_ms: 300,
            settle_ms: SETTLE_MS_DEFAULT,
            settings: SimSettings::default(),
        }
    }
}

/// Whether `tokio::select!`'s choices are seeded (the build has the
/// `tokio_unstable` cfg, which `.cargo/config.toml` sets; a `RUSTFLAGS`
/// environment variable replaces it). Without it a seed still fixes the
/// schedule and workload, but not which of several ready branches a
/// `select!` takes, so a replay may differ.
pub fn select_is_seeded() -> bool {
    cfg!(tokio_unstable)
}

/// The runtime one simulation runs on: one thread, paused (virtual) time,
/// `select!` seeded by `seed` when [`select_is_seeded`] says so.
pub fn sim_runtime(seed: u64) -> std::io::Result<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_current_thread();
    b.enable_all().start_paused(true);
    #[cfg(tokio_unstable)]
    b.rng_seed(tokio::runtime::RngSeed::from_bytes(&seed.to_le_bytes()));
    #[cfg(not(tokio_unstable))]
    let _ = seed;
    b.build()
}

/// A fault, as applied (for the failure report).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    Isolate(u32),
    HealAll,
    Delay {
        a: u32,
        b: u32,
        delay_ms: u64,
    },
    Reset {
        a: u32,
        b: u32,
    },
    Restart(u32),
    /// The node's machine clock jumps to `skew_ms` from the true time.
    Skew {
        node: u32,
        skew_ms: i64,
    },
}

/// What a run produced.
pub struct SimReport {
    pub run: SimRun,
    pub faults: Vec<Fault>,
    pub events: Vec<Event>,
    pub verdict: Verdict,
}

impl SimReport {
    pub fn outcome(&self) -> Outcome {
        self.verdict.result
    }

    /// One paragraph for a failed test: seed, schedule, verdict.
    pub fn describe(&self) -> String {
        format!(
            "seed {} level {} ({} events): {}; faults {:?}. Rerun with CAPKV_SIM_SEED={}",
            self.run.seed,
            self.run.level,
            self.events.len(),
            self.verdict.result,
            self.faults,
            self.run.seed
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("cluster: {0}")]
    Cluster(#[from] capkv::node::NodeError),
    #[error("no write succeeded within {READY_TIMEOUT_MS} ms of start")]
    NotReady,
    #[error("history: {0}")]
    History(#[from] crate::history::HistoryError),
    #[error("cannot build the simulation runtime: {0}")]
    Runtime(std::io::Error),
}

/// Runs `run` with node data under `dir` on its own simulation runtime
/// ([`sim_runtime`]) and checks the history. Call it from a plain thread
/// (not from inside a tokio runtime).
pub fn run_seed(mut run: SimRun, dir: &Path) -> Result<SimReport, SimError> {
    run.settings.seed = run.seed;
    let rt = sim_runtime(run.seed).map_err(SimError::Runtime)?;
    let report = rt.block_on(simulate(run, dir));
    // Dropping the runtime cancels whatever a stopped node left behind.
    drop(rt);
    report
}

async fn simulate(run: SimRun, dir: &Path) -> Result<SimReport, SimError> {
    let mut rng = ChaCha8Rng::seed_from_u64(run.seed);
    let mut cluster = SimCluster::start(dir.to_path_buf(), run.settings.clone())?;
    for &level in run.level.levels() {
        wait_ready(&cluster, level).await?;
    }

    let started = Instant::now();
    let events = Arc::new(Mutex::new(Vec::new()));
    let stop = CancellationToken::new();
    let mut workers = Vec::new();
    for c in 0..SIM_CLIENTS {
        let client = cluster.client(&format!("client{c}"));
        let worker_seed: u64 = rng.random();
        let (events, stop, level) = (events.clone(), stop.clone(), run.level);
        workers.push(tokio::spawn(async move {
            worker(c, client, level, worker_seed, started, events, stop).await;
        }));
    }

    let ids = cluster.ids();
    let mut faults = Vec::new();
    for _ in 0..run.faults {
        let gap_ms = rng.random_range(run.fault_gap_max_ms / 4..=run.fault_gap_max_ms);
        tokio::time::sleep(Duration::from_millis(gap_ms)).await;
        let node = ids[rng.random_range(0..ids.len())];
        let other =
            ids[(ids.iter().position(|&i| i == node).expect("member") + rng.random_range(1..ids.len())) % ids.len()];
        let fault = match rng.random_range(0..6u8) {
            0 => Fault::Isolate(node),
            1 => Fault::HealAll,
            2 => Fault::Delay { a: node, b: other, delay_ms: rng.random_range(10..150) },
            3 => Fault::Reset { a: node, b: other },
            4 => Fault::Skew { node, skew_ms: rng.random_range(-MAX_SKEW_MS..=MAX_SKEW_MS) },
            _ => Fault::Restart(node),
        };
        match &fault {
            Fault::Isolate(n) => cluster.isolate(*n),
            Fault::HealAll => cluster.net.heal_all(),
            Fault::Delay { a, b, delay_ms } => cluster.net.set_delay_ms(&host(*a), &host(*b), *delay_ms),
            Fault::Reset { a, b } => cluster.net.reset(&host(*a), &host(*b)),
            Fault::Restart(n) => cluster.restart_node(*n).await?,
            Fault::Skew { node, skew_ms } => cluster.skew_clock(*node, *skew_ms),
        }
        faults.push(fault);
    }
    cluster.net.heal_all();
    for &id in &ids {
        cluster.skew_clock(id, 0);
    }
    // Operations after the heal see a whole cluster again (and true clocks).
    tokio::time::sleep(Duration::from_millis(run.settle_ms)).await;
    stop.cancel();
    for w in workers {
        let _ = w.await;
    }
    cluster.shutdown().await?;

    let mut events = std::mem::take(&mut *events.lock().expect("events lock"));
    events.sort_by_key(|e| e.time_ns);
    let verdict = kv::check_events(&events, Duration::from_millis(CHECK_BUDGET_MS))?;
    Ok(SimReport { run, faults, events, verdict })
}

/// Waits until a write at `level` succeeds (a leader exists for the
/// linearizable level; a majority answers for quorum).
async fn wait_ready(cluster: &SimCluster, level: Level) -> Result<(), SimError> {
    let client = cluster.client("ready-probe");
    let opts = capkv::client::CallOptions::new(level).timeout(Duration::from_millis(OP_TIMEOUT_MS));
    let deadline = Instant::now() + Duration::from_millis(READY_TIMEOUT_MS);
    while Instant::now() < deadline {
        if client.set(b"sim-ready", b"1", opts).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(SimError::NotReady)
}

async fn worker(
    c: u64,
    client: capkv::client::Client,
    level: RegisterLevel,
    seed: u64,
    started: Instant,
    events: Arc<Mutex<Vec<Event>>>,
    stop: CancellationToken,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut process = c;
    let mut next_value = (c as i64 + 1) * 1_000_000;
    // The last value this client read per key: what its cas expects.
    let mut seen: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
    let now_ns = || started.elapsed().as_nanos() as u64;
    // Quorum alone refuses cas; linearizable and mixed runs draw it.
    let with_cas = level.op_mix().cas_percent > 0;
    while !stop.is_cancelled() {
        // A single level draws nothing here, so its sequences stay the same.
        let op_level = match level.levels() {
            [one] => *one,
            levels => levels[rng.random_range(0..levels.len())],
        };
        let key = format!("k{}", rng.random_range(0..SIM_KEYS));
        let roll = rng.random_range(0..10u8);
        let op = match roll {
            0..=4 => OpSpec { f: OpKind::Read, key, value: Value::Null, level: op_level },
            8..=9 if with_cas => {
                next_value += 1;
                let expected = seen.get(&key).copied().unwrap_or(next_value - 1);
                OpSpec { f: OpKind::Cas, key, value: Value::Cas { expected, new: next_value }, level: op_level }
            }
            _ => {
                next_value += 1;
                OpSpec { f: OpKind::Write, key, value: Value::Int(next_value), level: op_level }
            }
        };
        let invoke = Event {
            process,
            kind: EventType::Invoke,
            f: op.f,
            key: op.key.clone(),
            value: op.value,
            time_ns: now_ns(),
            error: None,
        };
        events.lock().expect("events lock").push(invoke);
        let done = execute(&client, &op, Duration::from_millis(OP_TIMEOUT_MS), 0).await;
        if let (OpKind::Read, EventType::Ok, Value::Int(v)) = (op.f, done.kind, done.value) {
            seen.insert(op.key.clone(), v);
        }
        let event = Event {
            process,
            kind: done.kind,
            f: op.f,
            key: op.key,
            value: done.value,
            time_ns: now_ns(),
            error: done.error,
        };
        events.lock().expect("events lock").push(event);
        if done.kind == EventType::Info {
            // An operation with an unknown outcome never completes: its
            // process is retired and the client continues as a new one.
            process += SIM_CLIENTS;
        }
    }
}
