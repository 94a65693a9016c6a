//! The workload: per-key register operations drawn from a seeded RNG.
//!
//! Each key is an independent register. An operation is a read, a write of
//! a small integer, or a compare-and-set `[expected, new]`. Promises:
//! - **values written are unique per key** (1, 2, 3, … in generation
//!   order), so a value read names the one write (or cas) that wrote it;
//!   the convergence and stale-read checkers rely on this;
//! - a cas expects, most of the time, the value most recently generated for
//!   its key (so swaps succeed often enough to matter), otherwise one of the
//!   last few values, or 0 (never written: the compare must fail);
//! - **bounded keys**: `keys` keys are active at a time; a key that has had
//!   `ops_per_key` operations is retired and replaced by a fresh one, as
//!   Jepsen's independent-key generators do. That bounds the operations the
//!   linearizability search sees per key, which is what keeps it tractable;
//! - **a level per operation**: drawn from the config's levels (for the
//!   mixed levels, see `run::RegisterLevel`), with no draw at all when there
//!   is one level, so single-level sequences do not depend on it;
//! - the sequence of operations is a pure function of the seed and the
//!   config (which client runs which operation depends on timing).

use std::collections::VecDeque;

use capkv::Level;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::history::{OpKind, Value};

/// How many recent values per key a cas may expect.
pub const RECENT_VALUES_MAX: usize = 8;
/// Percent of cas operations that expect the most recent value.
pub const CAS_EXPECT_LATEST_PERCENT: u32 = 70;
/// Percent of cas operations that expect a value never written (0).
pub const CAS_EXPECT_UNWRITTEN_PERCENT: u32 = 5;
/// Most keys active at once.
pub const KEYS_MAX: usize = 10_000;

/// The share of each operation, in percent (summing to 100).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpMix {
    /// Reads.
    pub read_percent: u32,
    /// Writes.
    pub write_percent: u32,
    /// Compare-and-sets.
    pub cas_percent: u32,
}

impl OpMix {
    /// Half reads, 30 % writes, 20 % cas: for levels that offer cas.
    pub const WITH_CAS: OpMix = OpMix { read_percent: 50, write_percent: 30, cas_percent: 20 };
    /// Half reads, half writes: for the quorum level, which refuses cas by
    /// design (a register cannot compare-and-set).
    pub const READ_WRITE: OpMix = OpMix { read_percent: 50, write_percent: 50, cas_percent: 0 };
}

/// What to generate.
#[derive(Clone, Copy, Debug)]
pub struct GeneratorConfig {
    /// Keys active at a time (1..=[`KEYS_MAX`]).
    pub keys: usize,
    /// Operations per key before it is retired (≥ 1).
    pub ops_per_key: u64,
    /// The mix.
    pub mix: OpMix,
    /// The levels an operation's level is drawn from, uniformly (not
    /// empty).
    pub levels: &'static [Level],
    /// The seed.
    pub seed: u64,
}

/// One operation to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpSpec {
    /// Which operation.
    pub f: OpKind,
    /// The key.
    pub key: String,
    /// `null` (read), the integer (write) or `[expected, new]` (cas).
    pub value: Value,
    /// The consistency level it runs at.
    pub level: Level,
}

#[derive(Debug)]
struct KeyState {
    name: String,
    ops: u64,
    next_value: i64,
    recent: VecDeque<i64>,
}

/// See the module docs.
#[derive(Debug)]
pub struct Generator {
    config: GeneratorConfig,
    rng: ChaCha8Rng,
    active: Vec<KeyState>,
    keys_created: u64,
}

impl Generator {
    /// A generator with `config.keys` fresh keys.
    pub fn new(config: GeneratorConfig) -> Generator {
        assert!((1..=KEYS_MAX).contains(&config.keys), "keys must be in 1..={KEYS_MAX}");
        assert!(config.ops_per_key >= 1, "a key has at least one operation");
        let mix = config.mix;
        assert_eq!(mix.read_percent + mix.write_percent + mix.cas_percent, 100, "the mix sums to 100 %");
        assert!(!config.levels.is_empty(), "at least one level");
        let mut generator =
            Generator { config, rng: ChaCha8Rng::seed_from_u64(config.seed), active: Vec::new(), keys_created: 0 };
        for _ in 0..config.keys {
            let key = generator.fresh_key();
            generator.active.push(key);
        }
        generator
    }

    /// The next operation.
    pub fn next_op(&mut self) -> OpSpec {
        let slot = self.rng.random_range(0..self.active.len());
        let roll = self.rng.random_range(0..100);
        let mix = self.config.mix;
        let f = if roll < mix.read_percent {
            OpKind::Read
        } else if roll < mix.read_percent + mix.write_percent {
            OpKind::Write
        } else {
            OpKind::Cas
        };
        let value = match f {
            OpKind::Read => Value::Null,
            OpKind::Write => Value::Int(self.take_value(slot)),
            OpKind::Cas => {
                let expected = self.pick_expected(slot);
                Value::Cas { expected, new: self.take_value(slot) }
            }
        };
        let level = match self.config.levels {
            [one] => *one,
            levels => levels[self.rng.random_range(0..levels.len())],
        };
        let key = &mut self.active[slot];
        let op = OpSpec { f, key: key.name.clone(), value, level };
        key.ops += 1;
        if key.ops >= self.config.ops_per_key {
            self.active[slot] = self.fresh_key();
        }
        op
    }

    /// Every key generated so far, retired or active, in creation order.
    pub fn keys_used(&self) -> Vec<String> {
        (0..self.keys_created).map(key_name).collect()
    }

    fn fresh_key(&mut self) -> KeyState {
        let name = key_name(self.keys_created);
        self.keys_created += 1;
        KeyState { name, ops: 0, next_value: 1, recent: VecDeque::new() }
    }

    fn take_value(&mut self, slot: usize) -> i64 {
        let key = &mut self.active[slot];
        let value = key.next_value;
        key.next_value += 1;
        if key.recent.len() == RECENT_VALUES_MAX {
            key.recent.pop_front();
        }
        key.recent.push_back(value);
        value
    }

    fn pick_expected(&mut self, slot: usize) -> i64 {
        let roll = self.rng.random_range(0..100);
        let recent = &self.active[slot].recent;
        match recent.back() {
            None => 0,
            Some(_) if roll < CAS_EXPECT_UNWRITTEN_PERCENT => 0,
            Some(&latest) if roll < CAS_EXPECT_UNWRITTEN_PERCENT + CAS_EXPECT_LATEST_PERCENT => latest,
            Some(_) => recent[self.rng.random_range(0..recent.len())],
        }
    }
}

/// The name of the `index`-th key: `k0`, `k1`, …
pub fn key_name(index: u64) -> String {
    format!("k{index}")
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    fn config(seed: u64) -> GeneratorConfig {
        GeneratorConfig { keys: 5, ops_per_key: 100, mix: OpMix::WITH_CAS, levels: &[Level::Linearizable], seed }
    }

    fn draw(config: GeneratorConfig, n: usize) -> (Vec<OpSpec>, Vec<String>) {
        let mut g = Generator::new(config);
        let ops = (0..n).map(|_| g.next_op()).collect();
        (ops, g.keys_used())
    }

    // Proves: every value written (write or cas new) is unique per key, so a
    // read's value identifies its write.
    #[test]
    fn written_values_are_unique_per_key() {
        let (ops, _) = draw(config(1), 10_000);
        let mut seen: BTreeSet<(String, i64)> = BTreeSet::new();
        for op in &ops {
            let written = match op.value {
                Value::Int(v) => v,
                Value::Cas { new, .. } => new,
                Value::Null => continue,
            };
            assert!(written > 0);
            assert!(seen.insert((op.key.clone(), written)), "{} written twice to {}", written, op.key);
        }
    }

    // Proves: each key gets exactly ops_per_key operations before it is
    // retired, at most `keys` keys are active, and keys_used lists them all.
    #[test]
    fn keys_rotate_after_ops_per_key() {
        let (ops, used) = draw(config(2), 1_000);
        let mut per_key: BTreeMap<&str, u64> = BTreeMap::new();
        for op in &ops {
            *per_key.entry(&op.key).or_insert(0) += 1;
        }
        assert_eq!(per_key.values().sum::<u64>(), 1_000);
        assert!(per_key.values().all(|&n| n <= 100));
        // Only the (at most 5) keys still active may have fewer.
        assert!(per_key.values().filter(|&&n| n < 100).count() <= 5);
        assert!(per_key.len() > 5, "keys were retired");
        assert!(used.len() >= per_key.len() && used.len() <= per_key.len() + 5);
        assert!(per_key.keys().all(|k| used.iter().any(|u| u == k)));
    }

    // Proves: the mix is respected (roughly) and cas expectations are values
    // generated for the key before, or 0.
    #[test]
    fn mix_and_cas_expectations() {
        let (ops, _) = draw(config(3), 20_000);
        let count = |f| ops.iter().filter(|op| op.f == f).count() as f64 / ops.len() as f64;
        assert!((count(OpKind::Read) - 0.5).abs() < 0.02);
        assert!((count(OpKind::Write) - 0.3).abs() < 0.02);
        assert!((count(OpKind::Cas) - 0.2).abs() < 0.02);
        let mut generated: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
        let mut latest_hits = 0;
        let mut cas = 0;
        for op in &ops {
            let values = generated.entry(op.key.clone()).or_default();
            match op.value {
                Value::Cas { expected, new } => {
                    assert!(expected == 0 || values.contains(&expected), "{op:?}");
                    cas += 1;
                    if values.last() == Some(&expected) {
                        latest_hits += 1;
                    }
                    values.insert(new);
                }
                Value::Int(v) => {
                    values.insert(v);
                }
                Value::Null => {}
            }
        }
        assert!(latest_hits as f64 / cas as f64 > 0.6, "{latest_hits}/{cas}");
        let (rw, _) = draw(GeneratorConfig { mix: OpMix::READ_WRITE, ..config(3) }, 2_000);
        assert!(rw.iter().all(|op| op.f != OpKind::Cas));
    }

    // Proves: with several levels every operation kind is drawn at each of
    // them, in roughly equal shares, on the same keys; with one level every
    // operation has it, and the sequence is the one level-free draws give.
    #[test]
    fn levels_are_drawn_per_operation() {
        let mixed = GeneratorConfig { levels: &[Level::Quorum, Level::Linearizable], ..config(4) };
        let (ops, _) = draw(mixed, 6_000);
        for level in [Level::Quorum, Level::Linearizable] {
            let share = ops.iter().filter(|op| op.level == level).count() as f64 / ops.len() as f64;
            assert!((share - 0.5).abs() < 0.03, "{level}: {share}");
            for f in [OpKind::Read, OpKind::Write, OpKind::Cas] {
                assert!(ops.iter().any(|op| op.level == level && op.f == f), "no {f} at {level}");
            }
        }
        let (one, _) = draw(GeneratorConfig { levels: &[Level::Quorum], ..config(4) }, 500);
        let (other, _) = draw(config(4), 500);
        assert!(one.iter().all(|op| op.level == Level::Quorum));
        let strip = |ops: Vec<OpSpec>| ops.into_iter().map(|op| (op.f, op.key, op.value)).collect::<Vec<_>>();
        assert_eq!(strip(one), strip(other));
    }

    // Proves: the operation sequence is a function of the seed.
    #[test]
    fn deterministic_per_seed() {
        assert_eq!(draw(config(7), 500), draw(config(7), 500));
        assert_ne!(draw(config(7), 500).0, draw(config(8), 500).0);
    }
}
