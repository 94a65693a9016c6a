//! capkv's Jepsen-style testing: the history format the harness records and
//! the linearizability checker that judges it.
//!
//! - [`history`]: the `history.jsonl` format (events, writer, reader,
//!   pairing of invokes with completions).
//!
//! The harness that starts nodes and injects faults will live here too.

pub mod history;
