//! The load generator behind `kv bench`: closed-loop clients against capkv
//! (any level), against etcd 3.x for comparison, or against the machine's
//! own limits (bare gRPC round trip, fsync).
//!
//! Why it is shaped this way:
//! * **Closed loop, one connection per client.** Each client task owns its
//!   connection and has at most one request in flight, like etcd's own
//!   `benchmark` tool and the etcd baseline in `NOTES.md`, so the numbers of
//!   both stores come from the same generator, concurrency and value sizes.
//!   (Closed-loop latencies do not include queueing the system imposed on
//!   requests that were never sent — coordinated omission; they describe
//!   service time under a fixed concurrency, not an open arrival rate.)
//! * **Pure workload, thin I/O.** [`workload`] decides what each client asks
//!   (seeded, deterministic), [`stats`] aggregates what came back; both are
//!   unit-tested. [`target`] turns a [`workload::Request`] into a capkv,
//!   etcd, ping or fsync call; [`driver`] runs the phases.
//! * **Errors are data.** A failed request is counted by kind and the run
//!   goes on; only set-up (connecting, the probe, pre-population) aborts, so
//!   a level that is not built yet answers with one clear error instead of
//!   a full run of failures.
//! * **No printing.** The library returns a [`report::Report`] and exposes a
//!   [`driver::Progress`] the CLI polls for its progress bar.

pub mod config;
pub mod driver;
pub mod fsync;
pub mod pace;
pub mod report;
pub mod stats;
pub mod target;
pub mod workload;

pub use config::{BenchConfig, Operation, StopAfter, Target};
pub use driver::{run, Phase, Progress};
pub use report::Report;
pub use stats::{ErrorKind, OpError};

/// Why a benchmark could not run (individual request failures are counted
/// in the report instead).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("invalid benchmark settings: {0}")]
    Config(String),
    #[error("cannot connect to {endpoint}: {message}")]
    Connect { endpoint: String, message: String },
    /// The first request of a kind failed in a way retrying cannot fix
    /// (e.g. the level is not built on these nodes).
    #[error("{what} is not available: {source}")]
    Probe { what: String, source: OpError },
    #[error("pre-populating key {key} failed: {source}")]
    Populate { key: String, source: OpError },
    #[error("a benchmark client task failed: {0}")]
    Task(String),
}

impl BenchError {
    /// The kind of the request error behind this failure, if there was one.
    pub fn error_kind(&self) -> Option<ErrorKind> {
        match self {
            BenchError::Probe { source, .. } | BenchError::Populate { source, .. } => Some(source.kind),
            BenchError::Connect { .. } => Some(ErrorKind::Unavailable),
            BenchError::Config(_) | BenchError::Task(_) => None,
        }
    }
}
