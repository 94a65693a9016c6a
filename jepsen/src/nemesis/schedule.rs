//! When faults happen: a pure plan of fault and heal windows over the run.
//!
//! ```text
//! 0        heal_ms      +fault_ms   +heal_ms     +fault_ms          run_ms
//! |-- quiet --|== fault 1 ==|-- heal --|== fault 2 ==|-- heal --| … |HealAll
//! ```
//!
//! Promises of [`plan`] (tested below):
//! - the run starts with a quiet window of `heal_ms` (the cluster warms up,
//!   clients get a baseline);
//! - at most one fault is active at a time: every `Start` is followed by
//!   its `Heal` `fault_ms` later, then `heal_ms` of quiet before the next;
//! - only whole fault windows are planned, all ending by `run_ms`;
//! - the kinds rotate through shuffled rounds, so each kind given occurs
//!   once before any occurs twice;
//! - the last step is always `HealAll` at `run_ms`: whatever happened, the
//!   cluster is healed before the final reads;
//! - the plan is a function of the RNG's seed and the spec.

use rand::seq::SliceRandom;
use rand::Rng;

use super::{Fault, NemesisKind};
use crate::cluster::NodeId;

/// What to plan.
#[derive(Clone, Debug)]
pub struct ScheduleSpec {
    /// Length of the run (client operations), in ms.
    pub run_ms: u64,
    /// Length of a fault window, in ms (> 0).
    pub fault_ms: u64,
    /// Length of the quiet window before each fault, in ms.
    pub heal_ms: u64,
    /// The kinds to use; empty means no faults.
    pub kinds: Vec<NemesisKind>,
    /// The nodes faults may target.
    pub nodes: Vec<NodeId>,
}

/// What to do at a step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Inject a fault.
    Start(Fault),
    /// Heal that fault.
    Heal(Fault),
    /// Heal everything: restart dead nodes, resume paused ones, remove
    /// every cut, reset every clock.
    HealAll,
}

/// One step of the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// When, in ms since the run started.
    pub at_ms: u64,
    /// What.
    pub action: Action,
}

/// Plans the run's faults; see the module docs.
pub fn plan(spec: &ScheduleSpec, rng: &mut impl Rng) -> Vec<Step> {
    assert!(spec.fault_ms > 0, "a fault window has a length");
    let mut steps = Vec::new();
    let mut round: Vec<NemesisKind> = Vec::new();
    let mut start_ms = spec.heal_ms;
    while !spec.kinds.is_empty() && start_ms + spec.fault_ms <= spec.run_ms {
        if round.is_empty() {
            round = spec.kinds.clone();
            round.shuffle(rng);
        }
        let kind = round.pop().expect("a non-empty round");
        let fault = Fault::plan(kind, &spec.nodes, rng);
        steps.push(Step { at_ms: start_ms, action: Action::Start(fault.clone()) });
        steps.push(Step { at_ms: start_ms + spec.fault_ms, action: Action::Heal(fault) });
        start_ms += spec.fault_ms + spec.heal_ms;
    }
    steps.push(Step { at_ms: spec.run_ms, action: Action::HealAll });
    steps
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    fn spec(run_ms: u64, kinds: &[NemesisKind]) -> ScheduleSpec {
        ScheduleSpec { run_ms, fault_ms: 5_000, heal_ms: 3_000, kinds: kinds.to_vec(), nodes: vec![1, 2, 3] }
    }

    fn plan_seeded(spec: &ScheduleSpec, seed: u64) -> Vec<Step> {
        plan(spec, &mut ChaCha8Rng::seed_from_u64(seed))
    }

    // Proves: windows alternate quiet / fault / heal with the given lengths,
    // one fault at a time, every fault healed, all within the run, and the
    // plan ends with HealAll at the end of the run.
    #[test]
    fn windows_alternate_and_end_healed() {
        let s = spec(60_000, &NemesisKind::ALL);
        let steps = plan_seeded(&s, 1);
        let (last, windows) = steps.split_last().unwrap();
        assert_eq!(last, &Step { at_ms: 60_000, action: Action::HealAll });
        // 60 s = 3 s quiet + 7 × (5 s fault + 3 s heal) + 1 s.
        assert_eq!(windows.len(), 2 * 7);
        let mut expected_start = s.heal_ms;
        for pair in windows.chunks(2) {
            let (Action::Start(started), Action::Heal(healed)) = (&pair[0].action, &pair[1].action) else {
                panic!("not a start/heal pair: {pair:?}");
            };
            assert_eq!(started, healed);
            assert_eq!(pair[0].at_ms, expected_start);
            assert_eq!(pair[1].at_ms, expected_start + s.fault_ms);
            assert!(pair[1].at_ms <= s.run_ms);
            expected_start += s.fault_ms + s.heal_ms;
        }
        assert!(steps.windows(2).all(|w| w[0].at_ms <= w[1].at_ms), "steps in time order");
    }

    // Proves: kinds rotate in rounds — each kind once before any twice — so
    // a run with as many windows as kinds exercises them all.
    #[test]
    fn every_kind_occurs_in_each_round() {
        let s = spec(60_000, &NemesisKind::ALL);
        for seed in 0..20 {
            let kinds: Vec<NemesisKind> = plan_seeded(&s, seed)
                .iter()
                .filter_map(|step| match &step.action {
                    Action::Start(f) => Some(f.kind()),
                    _ => None,
                })
                .collect();
            for round in kinds.chunks(NemesisKind::ALL.len()) {
                let mut counts = BTreeMap::new();
                for k in round {
                    *counts.entry(*k).or_insert(0) += 1;
                }
                assert!(counts.values().all(|&c| c == 1), "seed {seed}: {kinds:?}");
            }
            assert_eq!(kinds.len(), 7);
        }
    }

    // Proves: the plan is a function of the seed: same seed, same faults at
    // the same times; another seed, another plan.
    #[test]
    fn plan_is_deterministic_per_seed() {
        let s = spec(60_000, &NemesisKind::ALL);
        assert_eq!(plan_seeded(&s, 5), plan_seeded(&s, 5));
        assert_ne!(plan_seeded(&s, 5), plan_seeded(&s, 6));
    }

    // Proves: no nemesis, or a run too short for one whole fault window,
    // plans nothing but the final HealAll.
    #[test]
    fn nothing_to_plan() {
        let only_heal_all = vec![Step { at_ms: 60_000, action: Action::HealAll }];
        assert_eq!(plan_seeded(&spec(60_000, &[]), 1), only_heal_all);
        let short = spec(7_999, &[NemesisKind::Kill]);
        assert_eq!(plan_seeded(&short, 1), vec![Step { at_ms: 7_999, action: Action::HealAll }]);
        let exact = spec(8_000, &[NemesisKind::Kill]);
        assert_eq!(plan_seeded(&exact, 1).len(), 3);
    }
}
