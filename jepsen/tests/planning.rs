//! The nemesis plan of a whole run, through the public API and without any
//! process: a seed reproduces the same faults at the same times, every
//! partition of 3 or 5 nodes cuts only links across its sides and leaves a
//! connected majority, kill/pause hit only a minority, and every plan ends
//! with everything healed before the final reads. (Unit tests next to the
//! code cover each planner on its own.)

use std::collections::BTreeSet;

use capkv_jepsen::nemesis::schedule::{self, Action, ScheduleSpec, Step};
use capkv_jepsen::nemesis::{minority_size, Fault, NemesisKind};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn plan(nodes: u32, seed: u64) -> Vec<Step> {
    let spec = ScheduleSpec {
        run_ms: 120_000,
        fault_ms: 4_000,
        heal_ms: 2_000,
        kinds: NemesisKind::ALL.to_vec(),
        nodes: (1..=nodes).collect(),
    };
    schedule::plan(&spec, &mut ChaCha8Rng::seed_from_u64(seed))
}

fn faults(steps: &[Step]) -> Vec<&Fault> {
    steps
        .iter()
        .filter_map(|s| match &s.action {
            Action::Start(f) => Some(f),
            _ => None,
        })
        .collect()
}

// Proves: the same seed gives the same plan, step for step.
#[test]
fn a_seed_reproduces_the_plan() {
    for nodes in [3, 5] {
        for seed in 0..10 {
            assert_eq!(plan(nodes, seed), plan(nodes, seed));
        }
    }
}

// Proves: every planned fault respects its bounds on 3 and 5 nodes —
// partitions cut exactly the links across their two sides and leave some
// majority fully connected; kill and pause target a non-empty minority;
// clock offsets are non-zero. (kill-isr picks its targets when it starts.)
#[test]
fn every_fault_respects_its_bounds() {
    for nodes in [3u32, 5] {
        let all: Vec<u32> = (1..=nodes).collect();
        let majority = nodes as usize / 2 + 1;
        for seed in 0..50 {
            for fault in faults(&plan(nodes, seed)) {
                match fault {
                    Fault::Partition(p) => {
                        let [left, right] = &p.sides;
                        for x in &all {
                            for y in &all {
                                let across =
                                    (left.contains(x) && right.contains(y)) || (left.contains(y) && right.contains(x));
                                assert_eq!(p.connected(*x, *y), !across, "{p}");
                            }
                        }
                        let mut biggest: BTreeSet<u32> = right.clone();
                        biggest.extend(p.bridge);
                        assert!(biggest.len() >= majority, "{p}");
                        assert!(biggest.iter().all(|x| biggest.iter().all(|y| p.connected(*x, *y))), "{p}");
                    }
                    Fault::Kill { nodes: targets } | Fault::Pause { nodes: targets } => {
                        assert!(!targets.is_empty() && targets.len() <= minority_size(all.len()), "{fault}");
                    }
                    Fault::Clock { offsets_ms } => {
                        assert!(!offsets_ms.is_empty() && offsets_ms.values().all(|ms| *ms != 0), "{fault}");
                    }
                    // Planned as a number only; its targets are chosen from
                    // the topic's metadata when it starts (and bounded to a
                    // minority there: `kill_isr::choose`, unit-tested).
                    Fault::KillIsr { .. } => {}
                    // Also a number: the slot is `pick mod N` when it
                    // starts, one member at a time.
                    Fault::Membership { .. } => {}
                }
            }
        }
    }
}

// Proves: every plan heals each fault before the next starts and ends with
// HealAll at the end of the run, so the final reads see a healed cluster.
#[test]
fn every_plan_ends_healed() {
    for seed in 0..20 {
        let steps = plan(5, seed);
        let mut active: Option<&Fault> = None;
        for step in &steps {
            match &step.action {
                Action::Start(f) => {
                    assert!(active.is_none(), "seed {seed}: {f} starts while {active:?} is active");
                    active = Some(f);
                }
                Action::Heal(f) => {
                    assert_eq!(active, Some(f), "seed {seed}");
                    active = None;
                }
                Action::HealAll => active = None,
            }
        }
        assert_eq!(steps.last().unwrap(), &Step { at_ms: 120_000, action: Action::HealAll });
        assert!(active.is_none());
        let kinds: BTreeSet<NemesisKind> = faults(&steps).iter().map(|f| f.kind()).collect();
        assert_eq!(kinds.len(), NemesisKind::ALL.len(), "seed {seed}: every kind used");
    }
}
