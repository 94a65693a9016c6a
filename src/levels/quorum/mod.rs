//! The quorum consistency level: linearizable get/set/del **per key**, with
//! no leader, by the ABD algorithm for a multi-writer atomic register
//! (Attiya, Bar-Noy, Dolev, "Sharing memory robustly in message-passing
//! systems", JACM 1995; multi-writer variant: Lynch & Shvartsman, "Robust
//! emulation of shared memory using dynamic quorum-acknowledged broadcasts",
//! FTCS 1997).
//!
//! This module is the sans-I/O core: it decides *what* to send and *when* an
//! operation is answered, and never touches a socket, a clock or an RNG.
//!
//! - [`core`]: the coordinator state machine for one client operation
//!   ([`Coordinator::step`] takes an [`Input`], returns [`Effect`]s).
//! - [`replica`]: the replica side (read a cell; keep a written cell only if
//!   it supersedes the current one; refuse messages of an older
//!   configuration epoch; serve state-transfer pulls).
//! - [`config`]: the replica set and its epoch ([`ReplicaConfig`]); joint
//!   (old and new set) during a membership change.
//! - [`reconfig`]: the membership-change driver ([`Reconfig`]): joint
//!   epoch, state transfer, new epoch (docs/consistency.md, "Changing the
//!   replica set").
//!
//! And the I/O around them: [`shell`] (one client operation: the
//! coordinator's messages to the replicas, through [`mux`]; [`hedge`]
//! picks whom a read asks first and when it asks the rest), [`held`] (the
//! configuration this node holds, persisted, and the replica rule on the
//! node's store) and [`reconfig_task`] (on the Raft leader, runs
//! [`Reconfig`] whenever the Raft voters differ from the replica set).
//!
//! Test-only: `sim` (a deterministic simulated network driven by one seeded
//! RNG), `linearizability` (a brute-force per-key linearizability checker,
//! read/write/CAS; `levels::join_sim` uses it too)
//! and `tests` (scenarios and random schedules checked by it);
//! `reconfig_sim` and `reconfig_tests` (the same, across replica-set
//! changes, with negative controls).
//!
//! How a shell drives it (one coordinator per client operation):
//!
//! ```ignore
//! let mut coord = Coordinator::new(Op::get(key), replicas, QuorumConfig::default())?;
//! let mut effects = coord.step(Input::Start);
//! loop {
//!     for effect in std::mem::take(&mut effects) {
//!         match effect {
//!             // In parallel; each reply or error comes back on `tx` as
//!             // Input::ReadReply / WriteAck / Failed { phase: msg.phase(), .. }.
//!             Effect::Send { to, msg } => spawn_rpc(to, msg, tx.clone()),
//!             Effect::NeedVersion { above } => {
//!                 effects.extend(coord.step(Input::Version(clock.next_after(above))))
//!             }
//!             Effect::Done(result) => return result, // replies still in flight are dropped
//!         }
//!     }
//!     if effects.is_empty() {
//!         let input = tokio::select! {
//!             Some(input) = rx.recv() => input,
//!             _ = tokio::time::sleep_until(deadline) => Input::Deadline,
//!         };
//!         effects = coord.step(input);
//!     }
//! }
//! ```

pub mod config;
pub mod core;
pub mod hedge;
pub mod held;
pub mod mux;
pub mod reconfig;
pub mod reconfig_task;
pub mod replica;
pub mod shell;

#[cfg(test)]
pub(crate) mod linearizability;
#[cfg(test)]
mod reconfig_sim;
#[cfg(test)]
mod reconfig_tests;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

pub use self::config::ReplicaConfig;
pub use self::core::{
    majority, Coordinator, Effect, Input, Message, Op, Outcome, Phase, QuorumConfig, QuorumError, ReadFanout,
    ReplicaSetError, MAX_REPLICAS,
};
pub use self::reconfig::{Reconfig, ReconfigError};
pub use self::replica::{PullReply, Replica};
pub use self::shell::Quorum;
