//! Where blocking work runs.
//!
//! On the node's multi-threaded runtime, blocking work (RocksDB scans,
//! snapshot files) goes to tokio's blocking pool so that it does not hold a
//! worker. On a current-thread runtime — the whole-node simulation
//! (`crate::sim`), which runs every node of a cluster on one thread with
//! paused time so that a seed replays the same schedule — work on another
//! thread would race the simulated clock: while the runtime waits for it,
//! tokio advances paused time to the next timer, and how far depends on
//! the other thread's speed. There the work runs on the runtime's own
//! thread instead, as a task (or in place), so it takes no simulated time
//! and its place in the schedule is fixed.

use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::task::JoinHandle;

/// Whether the caller runs on a current-thread tokio runtime.
pub fn on_one_thread() -> bool {
    Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::CurrentThread)
}

/// `tokio::task::spawn_blocking`, except on a current-thread runtime, where
/// `f` runs as an ordinary task of that runtime (see the module docs).
pub fn spawn_blocking<F, R>(f: F) -> JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    if on_one_thread() {
        tokio::spawn(async move { f() })
    } else {
        tokio::task::spawn_blocking(f)
    }
}

/// `tokio::task::block_in_place`, except on a current-thread runtime (where
/// tokio's would panic), where `f` simply runs.
pub fn block_in_place<F, R>(f: F) -> R
where
    F: FnOnce() -> R,
{
    if on_one_thread() {
        f()
    } else {
        tokio::task::block_in_place(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn on_one_thread_blocking_work_runs_on_the_runtime_thread() {
        assert!(on_one_thread());
        let me = std::thread::current().id();
        let ran_on = spawn_blocking(move || std::thread::current().id()).await.unwrap();
        assert_eq!(ran_on, me);
        assert_eq!(block_in_place(|| std::thread::current().id()), me);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn on_many_threads_blocking_work_leaves_the_worker() {
        assert!(!on_one_thread());
        let me = std::thread::current().id();
        let ran_on = spawn_blocking(move || std::thread::current().id()).await.unwrap();
        assert_ne!(ran_on, me);
    }
}
