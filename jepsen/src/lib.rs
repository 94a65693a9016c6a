//! capkv's Jepsen-style testing: a harness that starts real `kv serve`
//! processes, injects faults, records what clients saw as a history, and
//! checks it.
//!
//! - [`history`]: the `history.jsonl` format (events, writer, reader,
//!   pairing of invokes with completions).
//! - [`checker`]: bounded linearizability checks with porcupine-rs (also
//!   validated on published reference histories), replica convergence and
//!   stale-read statistics for the eventual level.
//! - [`cluster`]: the node processes, one loopback address each.
//! - [`nemesis`]: faults (kill, pause, partition, clock), their planning
//!   from a seed, their schedule, and the driver that applies them.
//! - [`generator`]: the seeded per-key register workload.
//! - [`client`]: worker processes that run it and record each operation.
//! - [`record`]: the run clock and the recorder behind the history file.
//! - [`run`]: one run from start to verdict (its config, the phases every
//!   workload shares, the register run); [`report`]: its files.
//! - [`topic`]: the topic workload (producers, final read, checker of lost,
//!   duplicated and reordered messages, its run on [`run`]'s phases).
//!
//! `docs/jepsen.md` is the user-facing description.

pub mod checker;
pub mod client;
pub mod cluster;
pub mod generator;
pub mod history;
pub mod nemesis;
pub mod record;
pub mod report;
pub mod run;
pub mod sim;
pub mod stats;
pub mod topic;
pub mod validity;
