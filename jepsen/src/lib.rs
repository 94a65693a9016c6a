//! capkv's Jepsen-style testing: the history format the harness records,
//! the linearizability checker that judges it, and the harness's parts.
//!
//! - [`history`]: the `history.jsonl` format (events, writer, reader,
//!   pairing of invokes with completions).
//! - [`checker`]: bounded linearizability checks with porcupine-rs, replica
//!   convergence and stale-read statistics for the eventual level.
//! - [`cluster`]: the node processes, one loopback address each.
//! - [`generator`]: the seeded per-key register workload.
//! - [`client`]: worker processes that run it and record each operation.
//! - [`nemesis`]: faults (kill, pause, partition, clock), their planning
//!   from a seed, their schedule, and the driver that applies them.
//! - [`record`]: the run clock and the recorder behind the history file.

pub mod checker;
pub mod client;
pub mod cluster;
pub mod generator;
pub mod history;
pub mod nemesis;
pub mod record;
pub mod stats;
pub mod validity;
