use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use crossbeam::{
    channel::{bounded, select},
    thread,
};

use crate::linearization_info::LinearizationInfo;
use crate::linearizer::Linearizer;
use crate::model::{CheckResult, Event, EventModel, Model, Operation};
use crate::partition::{CheckEntry, Partition};

// ---------------------------------------------------------------------------
// Public entry points
// ---------------------------------------------------------------------------

/// Check whether an operation history is linearizable.
///
/// Pass `timeout = Some(d)` to bound the search.  Returns [`CheckResult::Unknown`]
/// if the timeout elapses before a definitive answer is found.
/// Pass `timeout = None` for an unlimited search.
pub fn check_operations<M: Model>(history: &[Operation<M>], timeout: Option<Duration>) -> CheckResult {
    let partitions = build_operation_partitions::<M>(history);
    check_partitions::<M>(partitions, timeout, false).0
}

/// Check an operation history and return both the verdict and diagnostic info.
pub fn check_operations_info<M: Model>(
    history: &[Operation<M>],
    timeout: Option<Duration>,
) -> (CheckResult, LinearizationInfo<M>) {
    let partitions = build_operation_partitions::<M>(history);
    check_partitions::<M>(partitions, timeout, true)
}

/// Check whether an event history is linearizable, returning only the verdict.
pub fn check_events<M: EventModel>(history: &[Event<M>], timeout: Option<Duration>) -> CheckResult {
    let partitions = build_event_partitions::<M>(history);
    check_partitions::<M>(partitions, timeout, false).0
}

/// Check an event history and return both the verdict and diagnostic info.
pub fn check_events_info<M: EventModel>(
    history: &[Event<M>],
    timeout: Option<Duration>,
) -> (CheckResult, LinearizationInfo<M>) {
    let partitions = build_event_partitions::<M>(history);
    check_partitions::<M>(partitions, timeout, true)
}

// ---------------------------------------------------------------------------
// Partition builders
// ---------------------------------------------------------------------------

fn build_operation_partitions<M: Model>(history: &[Operation<M>]) -> Vec<Partition<M>> {
    M::partition_operations(history).into_iter().map(|ops| Partition::from_operations(&ops)).collect()
}

fn build_event_partitions<M: EventModel>(history: &[Event<M>]) -> Vec<Partition<M>> {
    M::partition_events(history).into_iter().map(|evs| Partition::from_events(&evs)).collect()
}

// ---------------------------------------------------------------------------
// Dispatch
// ---------------------------------------------------------------------------

/// How the search on one partition ended.
///
/// A search stopped by the kill flag (timeout, or another partition already
/// found illegal) proves nothing about its partition: it must never be
/// reported as `Illegal`. (porcupine-rs 0.3.0 returned `false` for a killed
/// search, so a timed-out `check_*_info_timeout` answered `Illegal`.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SearchOutcome {
    /// A complete linearization was found.
    Linearizable,
    /// The search space was exhausted without a linearization.
    Illegal,
    /// The search was stopped before it could decide.
    Killed,
}

impl SearchOutcome {
    fn as_check_result(self) -> CheckResult {
        match self {
            SearchOutcome::Linearizable => CheckResult::Ok,
            SearchOutcome::Illegal => CheckResult::Illegal,
            SearchOutcome::Killed => CheckResult::Unknown,
        }
    }
}

fn check_partitions<M: Model>(
    partitions: Vec<Partition<M>>,
    timeout: Option<Duration>,
    compute_info: bool,
) -> (CheckResult, LinearizationInfo<M>) {
    match partitions.len() {
        0 => (CheckResult::Ok, LinearizationInfo::empty()),

        // Fast path: single partition, no timeout, no info needed.
        1 if timeout.is_none() && !compute_info => {
            let kill = AtomicBool::new(false);
            let (outcome, _) = check_single(&partitions[0], &kill, false);
            (outcome.as_check_result(), LinearizationInfo::empty())
        }

        _ => check_parallel(partitions, timeout, compute_info),
    }
}

// ---------------------------------------------------------------------------
// Parallel driver
// ---------------------------------------------------------------------------

/// The longest partial linearizations of one partition (see `Linearizer`).
type Longest = Vec<Option<Arc<Vec<usize>>>>;

/// Check every partition on a bounded pool of worker threads.
///
/// At most `available_parallelism()` threads run at once (porcupine-rs 0.3.0
/// spawned one thread per partition, so a history with thousands of keys
/// started thousands of threads). Workers take partitions in order from a
/// shared counter and report `(index, outcome, longest)` on a channel.
///
/// The verdict: `Illegal` if any partition is illegal; otherwise `Unknown` if
/// any partition's search was stopped (timeout) or never ran; otherwise `Ok`.
fn check_parallel<M: Model>(
    partitions: Vec<Partition<M>>,
    timeout: Option<Duration>,
    compute_info: bool,
) -> (CheckResult, LinearizationInfo<M>) {
    let total = partitions.len();
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, total);

    // Extract the ops vecs upfront so we can move them into LinearizationInfo
    // without also moving the partitions (which are borrowed by the threads).
    let partition_ops: Vec<Vec<crate::model::Operation<M>>> = partitions.iter().map(|p| p.ops.clone()).collect();

    // Every partition is reported exactly once, so bounded(total) never
    // blocks a sender.
    let (tx, rx) = bounded::<(usize, SearchOutcome, Longest)>(total);
    let kill = AtomicBool::new(false);
    let next_partition = AtomicUsize::new(0);

    thread::scope(|s| {
        for _ in 0..workers {
            let tx = tx.clone();
            let (kill, next_partition, partitions) = (&kill, &next_partition, &partitions);
            s.spawn(move |_| {
                loop {
                    let i = next_partition.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        break;
                    }
                    let (outcome, longest) = if kill.load(Ordering::Relaxed) {
                        (SearchOutcome::Killed, Vec::new())
                    } else {
                        check_single(&partitions[i], kill, compute_info)
                    };
                    let _ = tx.send((i, outcome, longest)); // never blocks: bounded(total)
                }
            });
        }

        // Drop our copy of the sender so the channel closes when every
        // worker has finished.
        drop(tx);

        // Fires once after the deadline; `never()` when there is no deadline.
        let deadline = timeout.map_or_else(crossbeam::channel::never, crossbeam::channel::after);

        let mut outcomes: Vec<Option<SearchOutcome>> = vec![None; total];
        let mut all_longest: Vec<Longest> = vec![Vec::new(); total];

        // Receive until every worker has finished. After the deadline or an
        // illegal partition (when no info is wanted) the kill flag makes the
        // remaining searches stop at their next step, so this ends promptly.
        loop {
            select! {
                recv(rx) -> msg => match msg {
                    Ok((i, outcome, longest)) => {
                        outcomes[i] = Some(outcome);
                        if compute_info {
                            all_longest[i] = longest;
                        }
                        if outcome == SearchOutcome::Illegal && !compute_info {
                            // Fast termination: the verdict is decided and
                            // no partial linearizations are wanted.
                            kill.store(true, Ordering::Relaxed);
                        }
                    }
                    Err(_) => break, // all workers done
                },
                recv(deadline) -> _ => kill.store(true, Ordering::Relaxed),
            }
        }

        let results: Vec<CheckResult> =
            outcomes.iter().map(|o| o.unwrap_or(SearchOutcome::Killed).as_check_result()).collect();
        let result = if results.contains(&CheckResult::Illegal) {
            CheckResult::Illegal
        } else if results.contains(&CheckResult::Unknown) {
            CheckResult::Unknown
        } else {
            CheckResult::Ok
        };

        let info = if compute_info {
            LinearizationInfo::from_longest(all_longest, partition_ops, results)
        } else {
            LinearizationInfo::empty()
        };

        (result, info)
    })
    .expect("a porcupine-rs worker thread panicked")
}

// ---------------------------------------------------------------------------
// Core loop — one partition
// ---------------------------------------------------------------------------

/// Run the search on one partition.
///
/// Returns the outcome and `longest`, the per-operation partial
/// linearization data (empty when `compute_info` is `false`).
fn check_single<M: Model>(partition: &Partition<M>, kill: &AtomicBool, compute_info: bool) -> (SearchOutcome, Longest) {
    let n = partition.check_history.len();
    let mut linearizer = Linearizer::<M>::new(partition, compute_info);
    let mut current = linearizer.front();

    while current < n {
        // Cooperative cancellation — checked at the top of every iteration.
        if kill.load(Ordering::Relaxed) {
            return (SearchOutcome::Killed, linearizer.into_longest());
        }

        match partition.check_history[current] {
            CheckEntry::Call { .. } => {
                if let Some(next_state) = linearizer.try_linearize(current) {
                    linearizer.lift(current, next_state);
                    current = linearizer.front(); // restart from the head
                } else {
                    current = linearizer.next_of(current); // this candidate is exhausted
                }
            }
            CheckEntry::Return { .. } => {
                // A Return is at the head without its Call being lifted — every
                // candidate that could precede it has been tried.  Before
                // backtracking, record the current stack depth as the longest
                // partial linearization seen so far for each stacked operation.
                linearizer.update_longest();

                match linearizer.backtrack() {
                    Some(pos) => current = linearizer.next_of(pos),
                    None => return (SearchOutcome::Illegal, linearizer.into_longest()),
                }
            }
        }
    }

    // Every entry was lifted: complete linearization found.
    linearizer.finalize_longest();
    (SearchOutcome::Linearizable, linearizer.into_longest())
}
