//! One harness run, start to finish: a fresh cluster, the workload under
//! the nemesis's faults, the heal, the final reads, the check and the
//! report.
//!
//! - [`config`]: what a run is given ([`RunConfig`], validated), how it
//!   fails ([`RunError`]) and what it gives back ([`RunOutcome`]);
//! - [`phases`]: the steps every workload shares (run directory, cluster
//!   and firewall, fault plan and nemesis, teardown, the verdict's common
//!   reasons, the report's files);
//! - [`register`]: the register workload's run ([`run_register`]).
//!
//! The topic workload's run is `crate::topic::run`, built on [`config`]
//! and [`phases`]; nothing here depends on it. Choosing between the two by
//! [`Workload`] is the caller's (the `jepsen` subcommand of `kv-jepsen`).
//!
//! The verdict combines the checkers (see [`crate::validity`]) and is
//! *unknown* rather than valid when the run could not test what it meant to:
//! no operation succeeded, a fault could not be applied or healed, a node
//! crashed by itself, or the run was interrupted.
//!
//! Everything runs on the caller's runtime, which must be a current-thread
//! runtime on a thread that outlives the run (see [`crate::cluster`]).

pub mod config;
pub mod phases;
pub mod register;

pub use config::{
    CheckerKind, RegisterLevel, RunConfig, RunError, RunOutcome, TopicOptions, Workload, RATE_MAX_HZ, TIME_MAX,
    VALUE_BYTES_MAX,
};
pub use phases::{PROBE_TIMEOUT_MS, PROGRESS_INTERVAL_MS};
pub use register::{
    run_register, CONVERGE_POLL_MS, CONVERGE_READ_TIMEOUT_MS, FINAL_READ_ATTEMPTS, FINAL_READ_TIMEOUT_MIN_MS, PROBE_KEY,
};
