//! The whole-node simulation ring (see `capkv_jepsen::sim`): three real
//! nodes in this process on a simulated network, seeded faults, histories
//! checked for linearizability. No root, no ports, no child processes.
//!
//! `CAPKV_SIM_SEED=S` runs only seed S (both levels), e.g. to reproduce a
//! failure; `CAPKV_SIM_SEEDS=N` runs N seeds per test instead of the
//! default (`scripts/sim.sh` runs thousands).

use capkv::Level;
use capkv_jepsen::checker::Outcome;
use capkv_jepsen::sim::{run_seed, SimRun};

/// Seeds per test in CI. Each takes a few seconds of real time.
const DEFAULT_SEEDS: u64 = 10;

fn seeds(base: u64) -> Vec<u64> {
    if let Ok(s) = std::env::var("CAPKV_SIM_SEED") {
        return vec![s.parse().expect("CAPKV_SIM_SEED is a u64")];
    }
    let n =
        std::env::var("CAPKV_SIM_SEEDS").ok().map_or(DEFAULT_SEEDS, |s| s.parse().expect("CAPKV_SIM_SEEDS is a u64"));
    (0..n).map(|i| base + i).collect()
}

async fn ring(level: Level, base: u64) {
    for seed in seeds(base) {
        let dir = tempfile::tempdir().expect("temp dir");
        let report =
            run_seed(SimRun::new(seed, level), dir.path()).await.unwrap_or_else(|e| panic!("seed {seed}: {e}"));
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linearizable_level_survives_seeded_faults() {
    ring(Level::Linearizable, 1_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_level_survives_seeded_faults() {
    ring(Level::Quorum, 2_000).await;
}
