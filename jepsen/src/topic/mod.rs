//! The topic workload (`--workload topic`): what capkv's topic log
//! promises acknowledged messages, tested under faults.
//!
//! A run creates one topic, lets producers send unique messages with the
//! chosen acks while the nemesis works, heals, waits for the partitions to
//! settle, reads every partition from offset 0 to its high watermark, and
//! checks that no acknowledged message was lost, duplicated or reordered.
//!
//! - [`history`]: the topic history format (`send` and `poll` events);
//! - [`recorder`]: recording it while the run goes;
//! - [`workload`]: the producer processes;
//! - [`consume`]: the settle wait and the final read;
//! - [`checker`]: the verdict (pure, tested on hand-written histories);
//! - [`run`]: one run from start to verdict.
//!
//! The topic and its producers' settings ([`TopicOptions`]) are part of a
//! run's configuration, so they live in [`crate::run::config`] with the
//! rest of it and are re-exported here.
//!
//! `docs/jepsen.md` ("The topic workload") is the user-facing description.

pub mod checker;
pub mod consume;
pub mod history;
pub mod recorder;
pub mod run;
pub mod workload;

pub use crate::run::config::{TopicOptions, PARTITIONS_MAX, REPLICA_LAG_TIME_MAX_DEFAULT_MS};

/// The topic every run creates (each run has a fresh cluster).
pub const TOPIC_NAME: &str = "jepsen";
