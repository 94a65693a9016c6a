//! Linearizability checking of recorded histories, on top of porcupine-rs
//! (Porcupine's WGL search with per-key partitioning and a state cache).
//!
//! Promises:
//! - every check is bounded by a time budget; a search that does not finish
//!   within it answers [`Outcome::Unknown`], never a guess;
//! - a [`Verdict`] says linearizable / not linearizable / unknown, how many
//!   operations were checked and how long it took, and for a violation an
//!   [`Explanation`] in words;
//! - [`Verdict::write_html`] writes porcupine-rs's interactive visualization.
//!
//! One module per input: [`kv`] (capkv's `history.jsonl`), [`etcd_log`]
//! (Jepsen etcd logs) and [`porcupine_kv`] (Porcupine's kv logs), the last
//! two being the published reference histories the checker is validated on.
//! [`register`] is the per-key register model the first two share.
//!
//! Beside linearizability, for the eventual level: [`convergence`] (do all
//! replicas hold the right value after the faults are healed?) and
//! [`stale_reads`] (how often and how far reads lagged acknowledged writes).
//!
//! Memory: porcupine-rs's state cache grows while it searches (tens of MB per
//! second of search on one core); the budget is what bounds it.

pub mod convergence;
mod edn;
pub mod etcd_log;
mod explanation;
pub mod kv;
pub mod porcupine_kv;
pub mod register;
pub mod stale_reads;
mod visualize;

use std::fmt;
use std::fs::File;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use porcupine_rs::{CheckResult, Operation};

pub use explanation::{
    Explain, Explanation, KeyViolation, PrefixStep, StuckOp, DISPLAY_KEYS_MAX, DISPLAY_PREFIX_STEPS_MAX,
};

use crate::history::HistoryError;
use visualize::{Linearization, Visualize};

/// Porcupine's time for "never returned": an operation with unknown outcome
/// may be linearized after every other operation.
pub const RETURN_NEVER: i64 = i64::MAX;

/// Where an operation came from, for explanations and the HTML page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpOrigin {
    /// The client process that ran it.
    pub process: u64,
    /// 1-based line of its invocation in the source file.
    pub line: usize,
}

impl fmt::Display for OpOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "process {}, line {}", self.process, self.line)
    }
}

/// The answer of a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Some order of the operations respects real time and the model.
    Linearizable,
    /// No such order exists (at least one key is offending).
    NotLinearizable,
    /// The search did not finish within its budget.
    Unknown,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Linearizable => "linearizable",
            Outcome::NotLinearizable => "not-linearizable",
            Outcome::Unknown => "unknown",
        })
    }
}

/// The result of checking one history.
pub struct Verdict {
    /// The answer.
    pub result: Outcome,
    /// How many operations were checked (after dropping those that constrain
    /// nothing: failed operations and reads with unknown outcome).
    pub ops: usize,
    /// Wall-clock time of the search and of building the explanation.
    pub elapsed: Duration,
    /// For [`Outcome::NotLinearizable`]: why, per offending key.
    pub explanation: Option<Explanation>,
    linearization: Box<dyn Visualize>,
}

impl fmt::Debug for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verdict")
            .field("result", &self.result)
            .field("ops", &self.ops)
            .field("elapsed", &self.elapsed)
            .field("explanation", &self.explanation)
            .finish_non_exhaustive()
    }
}

impl Verdict {
    /// Writes porcupine-rs's interactive HTML visualization of this check
    /// (every key, with the partial linearizations found) to `path`.
    pub fn write_html(&self, path: &Path) -> Result<(), CheckError> {
        self.linearization.write_html(path).map_err(|source| CheckError::WriteHtml { path: path.to_path_buf(), source })
    }
}

/// Why a file could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The file could not be opened.
    #[error("cannot open {}: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A capkv `history.jsonl` is malformed.
    #[error(transparent)]
    History(#[from] HistoryError),
    /// A Jepsen etcd log or Porcupine kv log is malformed or unreadable.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The HTML visualization could not be written.
    #[error("cannot write {}: {source}", path.display())]
    WriteHtml {
        /// The HTML file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

/// Why a reference log (Jepsen etcd, Porcupine kv) could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Reading failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// A line is malformed or does not fit the history (e.g. a completion
    /// without an invoke).
    #[error("line {line}: {message}")]
    Malformed {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// The input formats [`check_file`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// A Jepsen etcd log (single compare-and-set register).
    JepsenEtcd,
    /// A Porcupine kv log (EDN maps: get / put / append on strings).
    PorcupineKv,
    /// A capkv `history.jsonl`.
    Jsonl,
}

/// Loads `path` in `format` and checks it within `budget`.
pub fn check_file(format: Format, path: &Path, budget: Duration) -> Result<Verdict, CheckError> {
    let file = File::open(path).map_err(|source| CheckError::Open { path: path.to_path_buf(), source })?;
    let input = BufReader::new(file);
    Ok(match format {
        Format::JepsenEtcd => etcd_log::check(&etcd_log::load(input)?, budget),
        Format::PorcupineKv => porcupine_kv::check(&porcupine_kv::load(input)?, budget),
        Format::Jsonl => kv::check(&kv::load(input)?, budget),
    })
}

/// Runs porcupine-rs on `history` within `budget` and turns its answer into a
/// [`Verdict`].
pub(crate) fn check_operations<M: Explain + 'static>(history: &[Operation<M>], budget: Duration) -> Verdict {
    let started = Instant::now();
    let (result, info) = porcupine_rs::check_operations_info_timeout(history, budget);
    let (result, explanation) = match result {
        CheckResult::Ok => (Outcome::Linearizable, None),
        CheckResult::Unknown => (Outcome::Unknown, None),
        CheckResult::Illegal => {
            let explanation = explanation::explain(&info);
            assert!(explanation.is_some(), "porcupine-rs answered Illegal without an illegal partition");
            (Outcome::NotLinearizable, explanation)
        }
    };
    Verdict {
        result,
        ops: history.len(),
        elapsed: started.elapsed(),
        explanation,
        linearization: Box::new(Linearization(info)),
    }
}
