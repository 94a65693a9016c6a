//! The whole-node simulation ring (see `capkv_jepsen::sim`): three real
//! nodes in this process on a simulated network, seeded faults, histories
//! checked for linearizability. No root, no ports, no child processes.
//!
//! Each run is deterministic (one thread, virtual time, everything seeded:
//! see `capkv_jepsen::sim`), so `CAPKV_SIM_SEED=S` replays a failure of
//! seed S exactly: it runs only seed S (every level); `CAPKV_SIM_SEEDS=N` runs N seeds per test instead of the
//! default (`scripts/sim.sh` runs thousands). The negative control runs its
//! own fixed seeds whatever these say.

use capkv::sim::cluster::SimSettings;
use capkv::Level;
use capkv_jepsen::checker::Outcome;
use capkv_jepsen::run::RegisterLevel;
use capkv_jepsen::sim::{run_seed, SimReport, SimRun};

/// Seeds per test in CI. Each takes under a second of real time (virtual
/// time does not wait).
const DEFAULT_SEEDS: u64 = 100;
/// The negative control's seeds: it passes when one of them is caught.
const NEGATIVE_CONTROL_SEEDS: [u64; 3] = [9_000, 9_001, 9_002];
/// Seeds of the snapshot-install ring (at most; `CAPKV_SIM_SEEDS` lowers it).
const SNAPSHOT_SEEDS: usize = 30;
/// The local-reads negative control's seeds.
const LOCAL_READS_SEEDS: std::ops::Range<u64> = 9_100..9_140;
/// The negative control's workload, with no fault: long enough for many
/// quorum writes each followed by a linearizable read of its key.
const NEGATIVE_CONTROL_WORKLOAD_MS: u64 = 2_000;

fn seeds(base: u64) -> Vec<u64> {
    if let Ok(s) = std::env::var("CAPKV_SIM_SEED") {
        return vec![s.parse().expect("CAPKV_SIM_SEED is a u64")];
    }
    let n =
        std::env::var("CAPKV_SIM_SEEDS").ok().map_or(DEFAULT_SEEDS, |s| s.parse().expect("CAPKV_SIM_SEEDS is a u64"));
    (0..n).map(|i| base + i).collect()
}

/// Runs `run` in a fresh temporary data dir.
fn simulate(run: SimRun) -> SimReport {
    let seed = run.seed;
    let dir = tempfile::tempdir().expect("temp dir");
    run_seed(run, dir.path()).unwrap_or_else(|e| panic!("seed {seed}: {e}"))
}

/// A negative control: runs `make_run(seed)` for each of `seeds` until one
/// is caught as not linearizable; fails when none is (`what` names the
/// broken guarantee).
fn first_caught(
    seeds: impl IntoIterator<Item = u64> + std::fmt::Debug + Clone,
    what: &str,
    make_run: impl Fn(u64) -> SimRun,
) {
    let mut seen = Vec::new();
    for seed in seeds.clone() {
        let report = simulate(make_run(seed));
        eprintln!("negative control: {}", report.describe());
        if report.outcome() == Outcome::NotLinearizable {
            return;
        }
        seen.push(report.describe());
    }
    panic!("no seed of {seeds:?} was caught {what}:\n{}", seen.join("\n"));
}

fn ring(level: impl Into<RegisterLevel> + Copy, base: u64) {
    for seed in seeds(base) {
        let report = simulate(SimRun::new(seed, level));
        assert_eq!(report.outcome(), Outcome::Linearizable, "{}", report.describe());
        let oks = report.events.iter().filter(|e| e.kind == capkv_jepsen::history::EventType::Ok).count();
        assert!(
            oks > 20,
            "seed {seed}: only {oks} operations succeeded; the ring tested little. {}",
            report.describe()
        );
        eprintln!("sim ok: {}", report.describe());
    }
}

#[test]
fn linearizable_level_survives_seeded_faults() {
    ring(Level::Linearizable, 1_000);
}

#[test]
fn quorum_level_survives_seeded_faults() {
    ring(Level::Quorum, 2_000);
}

// Proves (issue 21): quorum (ABD) and linearizable (Raft) reads, writes and
// cas on the same keys are linearizable together under the seeded faults:
// one keyspace, whichever level an operation names.
#[test]
fn mixed_levels_survive_seeded_faults() {
    ring(RegisterLevel::Mixed, 3_000);
}

// Proves: snapshot installs under the seeded faults keep both levels
// linearizable together. With a snapshot every 20 applied entries and 5
// kept for slow followers, a node that was isolated or restarting catches
// up by installing the leader's snapshot (the state machine and the cells
// it merges, carstamps included) rather than by the log.
#[test]
fn mixed_levels_survive_snapshot_installs() {
    for seed in seeds(5_000).into_iter().take(SNAPSHOT_SEEDS) {
        let report = simulate(SimRun {
            settings: SimSettings {
                raft_snapshot_entries: Some(20),
                raft_catch_up_entries: Some(5),
                ..SimSettings::default()
            },
            ..SimRun::new(seed, RegisterLevel::Mixed)
        });
        assert_eq!(report.outcome(), Outcome::Linearizable, "{}", report.describe());
        eprintln!("sim ok with snapshots: {}", report.describe());
    }
}

// Proves (negative control of the test above): with the level join turned
// off (`unsafe_skip_level_join`), a linearizable read does not see a quorum
// write that finished before it, and the checker says so — for at least one
// of a few fixed seeds, with no fault at all (2 keys, 4 clients, half the
// operations at each level: such write/read pairs come by the dozen).
#[test]
fn mixed_levels_without_the_join_are_caught() {
    first_caught(NEGATIVE_CONTROL_SEEDS, "without the level join", |seed| SimRun {
        faults: 0,
        settle_ms: NEGATIVE_CONTROL_WORKLOAD_MS,
        settings: SimSettings { unsafe_skip_level_join: true, ..SimSettings::default() },
        ..SimRun::new(seed, RegisterLevel::Mixed)
    });
}

// Proves (negative control of the linearizable ring): a node that serves
// linearizable reads from its own state machine (`unsafe_local_linear_reads`:
// no read index, no quorum read) returns stale values once partitions and
// restarts separate it from the leader, and the ring catches that on one of
// a few fixed seeds. The runs are deterministic, so which seeds are caught
// does not change from run to run.
#[test]
fn linearizable_local_reads_are_caught() {
    first_caught(LOCAL_READS_SEEDS, "with local linearizable reads", |seed| SimRun {
        settings: SimSettings { unsafe_local_linear_reads: true, ..SimSettings::default() },
        ..SimRun::new(seed, Level::Linearizable)
    });
}

// Proves (issue 20): a seed replays the whole run exactly. Two runs of one
// seed, with faults (partitions, delays, resets, restarts) and the mixed
// workload, give the same faults and the same history: every event, its
// process, value, error text and virtual time. A leak of real time, thread
// scheduling or unseeded randomness into the run makes them differ.
#[test]
fn same_seed_same_history() {
    assert!(
        capkv_jepsen::sim::select_is_seeded(),
        "built without the tokio_unstable cfg (.cargo/config.toml sets it; a RUSTFLAGS environment variable \
         replaces it): tokio::select! is not seeded, so a replay may differ"
    );
    for seed in seeds(4_000).into_iter().take(2) {
        let runs: Vec<_> = (0..2).map(|_| simulate(SimRun::new(seed, RegisterLevel::Mixed))).collect();
        let (a, b) = (&runs[0], &runs[1]);
        assert_eq!(a.faults, b.faults, "seed {seed}: the fault schedules differ");
        let first_difference = a.events.iter().zip(&b.events).position(|(x, y)| format!("{x:?}") != format!("{y:?}"));
        if let Some(i) = first_difference {
            panic!(
                "seed {seed}: the histories differ from event {i} of {}/{}:\n  {:?}\n  {:?}",
                a.events.len(),
                b.events.len(),
                a.events[i],
                b.events[i]
            );
        }
        assert_eq!(a.events.len(), b.events.len(), "seed {seed}: one history is a prefix of the other");
        assert!(a.faults.len() >= 4 && a.events.len() > 200, "seed {seed} tested little: {}", a.describe());
        eprintln!("replayed exactly: {}", a.describe());
    }
}
