//! capkv's Jepsen-style testing: the history format the harness records and
//! the linearizability checker that judges it.
//!
//! - [`history`]: the `history.jsonl` format (events, writer, reader,
//!   pairing of invokes with completions).
//! - [`checker`]: bounded linearizability checks with porcupine-rs, for
//!   capkv histories and for the published reference histories (Jepsen etcd
//!   logs, Porcupine kv logs) the checker is validated on.
//!
//! The harness that starts nodes and injects faults will live here too.

pub mod checker;
pub mod history;
