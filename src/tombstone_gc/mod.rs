//! Tombstone garbage collection (`kv serve --gc-grace`, issue 22).
//!
//! Why it exists: a delete leaves a tombstone cell so that last-writer-wins
//! can tell "deleted" from "never reached this replica"; without GC every
//! deleted key costs space forever. What it promises: a tombstone is
//! purged only when
//!
//! 1. it is older than the grace period (its version's physical time plus
//!    `gc_grace_ms` is behind this node's wall clock), and
//! 2. every replica was seen to *cover* it: to hold that version or a newer
//!    one, with no hint of the key left holding an older cell
//!    ([`crate::store::Store::gc_covers`], asked with the peer RPC
//!    `GcCheck`; a peer that does not answer covers nothing).
//!
//! and then on every node at once, through Raft: the Raft leader proposes
//! a `Purge` command (`rsm::state_machine::kv`), whose apply deletes, on
//! each node, the key's cell and hints at or below the tombstone's version
//! and, deterministically, the state machine's own cell of the key. So a
//! node that was down when the purge was decided still applies it, after
//! every older entry of the log; and the state machine stays a function
//! of the log, snapshots included.
//!
//! Why no deleted value comes back (docs/consistency.md, "Tombstone GC"):
//! a value can only come back if a cell older than the tombstone reaches a
//! node after the node dropped the tombstone. By (2) no replica holds such
//! a cell and no hint will deliver one; cells older than the tombstone
//! still travelling (a replication batch, a read repair or anti-entropy
//! push, a quorum write's message) were sent before the tombstone existed
//! and are assumed to land within the grace period (1); a Raft entry that
//! merges an older cell comes before the `Purge` in the log. A node that
//! was down is covered by (2): until it holds the tombstone, nobody purges.
//!
//! [`rule`] is the decision, pure and unit-tested; [`shell`] the periodic
//! task (bounded: [`rule::GC_BATCH_KEYS`] tombstones per pass, at most
//! [`rule::GC_SCAN_CELLS_MAX`] cells scanned per pass, one pass per
//! [`rule::pass_interval_ms`]).

pub mod rule;
pub mod shell;

pub use shell::{start, GcSettings};
