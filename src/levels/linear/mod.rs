//! The linearizable level (DESIGN §4, third column): the KV adapter over the
//! replicated state machine (`crate::rsm`), joined with the quorum level's
//! order so that both are one keyspace, linearizable together
//! (docs/consistency.md, "One keyspace"):
//!
//! * **set/del/cas**: read the key from a majority (a quorum get), propose
//!   the KV command with that cell as its dependency, wait until applied,
//!   then write the resulting cell back to a majority (a quorum impose) and
//!   answer. The dependency makes the command see every quorum write that
//!   finished before it began; the write-back makes every later quorum read
//!   see the command.
//! * **get**: a read index (the Raft order) and a quorum read in parallel;
//!   the answer is the newer of the state machine's cell and the majority's,
//!   written back to a majority first if only the state machine had it.
//!
//! `--unsafe-skip-level-join` (TEST ONLY) leaves out the quorum steps: the
//! negative control that shows the mixed-level checker can fail.
//!
//! The Raft driver, storage, snapshots and the state machine used to live
//! here; they moved to `crate::rsm` (issue 20). The re-exports below keep
//! the old paths other rooms use compiling.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::quorum::Quorum;
use super::{CasReply, LevelError};
use crate::clock::{Clock, Version};
use crate::level::Level;
use crate::metrics::Metrics;
use crate::node::peers::Peers;
use crate::proto::rsm::{self, command::Op, reply};
use crate::rsm::state_machine::kv;
use crate::rsm::{DbRsm, Rsm};
use crate::store::{Cell, Store, StoreError};

pub use crate::rsm::driver as raft_node;
pub use crate::rsm::{logger, snapshot, state_machine, storage, transport};
pub use crate::rsm::{Caller, RaftSettings, RaftView, ReadMode};

pub struct Linear {
    rsm: Arc<Rsm>,
    store: Arc<Store>,
    /// The quorum level's shell, for the join steps (majority read before
    /// a proposal, write-back after it).
    quorum: Arc<Quorum>,
    switches: TestSwitches,
    metrics: Arc<Metrics>,
}

/// TEST ONLY switches of this level (negative controls).
#[derive(Clone, Copy, Debug, Default)]
pub struct TestSwitches {
    /// Serve reads from the local state machine alone, without a read
    /// index (and without the quorum read of the join).
    pub local_reads: bool,
    /// Leave out the join with the quorum order.
    pub skip_level_join: bool,
}

/// Time left until `deadline` (zero once past).
fn left(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

impl Linear {
    /// Starts the replicated state machine (`Rsm::start`) and the level over it.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        id: u32,
        store: Arc<Store>,
        peers: Arc<Peers>,
        quorum: Arc<Quorum>,
        clock: Arc<Clock>,
        metrics: Arc<Metrics>,
        settings: RaftSettings,
        switches: TestSwitches,
        seed: Option<u64>,
        cancel: CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<Arc<Linear>, StoreError> {
        let rsm = Rsm::start(id, store.clone(), peers, clock, metrics.clone(), settings, seed, cancel, tracker).await?;
        Ok(Arc::new(Linear { rsm, store, quorum, switches, metrics }))
    }

    fn joined(&self) -> bool {
        !self.switches.skip_level_join
    }

    /// The join's first step: the newest cell of `key` on a majority.
    async fn majority_cell(&self, key: &Bytes, timeout: Duration) -> Result<Option<Cell>, LevelError> {
        if !self.joined() {
            return Ok(None);
        }
        self.quorum.get(key.clone(), timeout).await
    }

    /// The join's last step for a command's result: on a majority before
    /// the answer. The command is applied already, so failing here makes
    /// the outcome indeterminate to the client (a retry with the same
    /// request id gets the same reply and writes it back again).
    ///
    /// `applied_at`: the applied index this node answered the command at
    /// (0 when unknown): replicas that have applied that far hold the cell
    /// already, so only the others write it.
    async fn write_back(&self, key: Bytes, cell: Cell, applied_at: u64, deadline: Instant) -> Result<(), LevelError> {
        if !self.joined() {
            return Ok(());
        }
        let version = cell.version;
        self.quorum
            .impose(key, cell, applied_at, left(deadline))
            .await
            .map_err(|e| LevelError::NotWrittenBack { version, source: Box::new(e) })
    }

    /// The replicated state machine under this level (topics share it).
    pub fn rsm(&self) -> &Arc<Rsm> {
        &self.rsm
    }

    pub fn view(&self) -> RaftView {
        self.rsm.view()
    }

    /// The Raft leader this node knows of (`0`: none known).
    pub fn leader_id(&self) -> u64 {
        self.rsm.leader_id()
    }

    /// Linearizable read of `key` (tombstones come back as such).
    pub async fn get(&self, key: &Bytes, timeout: Duration) -> Result<Option<Cell>, LevelError> {
        crate::metrics::inc(&self.metrics.linearizable_gets);
        let deadline = Instant::now() + timeout;
        if self.switches.local_reads {
            return Ok(kv::read_cell(&DbRsm(self.store.db()), key)?);
        }
        let (barrier, majority) = tokio::join!(self.rsm.barrier(timeout), self.majority_cell(key, timeout));
        barrier?;
        let majority = majority?;
        // Read after the barrier: the state machine has applied at least
        // everything committed before this get began.
        let own = kv::read_cell(&DbRsm(self.store.db()), key)?;
        match own {
            Some(own) if majority.as_ref().is_none_or(|m| own.version > m.version) => {
                // Applied, but maybe not yet on a majority's cells (its
                // proposer may still be writing it back): make it so before
                // answering, or a later quorum read could miss what this
                // read returned.
                // Its entry's index is not known here: every replica writes.
                self.write_back(key.clone(), own.clone(), 0, deadline)
                    .await
                    .map_err(|e| LevelError::GetNotWrittenBack { source: Box::new(e) })?;
                Ok(Some(own))
            }
            _ => Ok(majority),
        }
    }

    pub async fn write(
        &self,
        caller: Caller,
        key: Bytes,
        value: Option<Bytes>,
        timeout: Duration,
    ) -> Result<Version, LevelError> {
        let deadline = Instant::now() + timeout;
        let dep = kv::dep_of(self.majority_cell(&key, timeout).await?.as_ref());
        let op = match value.clone() {
            Some(value) => Op::Put(rsm::Put { key: key.clone(), value, dep }),
            None => Op::Del(rsm::Del { key: key.clone(), dep }),
        };
        let applied = self.rsm.propose_applied(caller, op, left(deadline)).await?;
        let version = match applied.reply.result {
            Some(reply::Result::Written(w)) => Version::new(w.hlc, w.node_id),
            other => return Err(LevelError::UnexpectedReply { command: "write", reply: format!("{other:?}") }),
        };
        let cell = Cell { value, version, origin: Level::Linearizable };
        self.write_back(key, cell, applied.index, deadline).await?;
        Ok(version)
    }

    pub async fn cas(
        &self,
        caller: Caller,
        key: Bytes,
        expected: Option<Bytes>,
        new_value: Bytes,
        timeout: Duration,
    ) -> Result<CasReply, LevelError> {
        let deadline = Instant::now() + timeout;
        let read = self.majority_cell(&key, timeout).await?;
        let read_version = read.as_ref().map_or(Version::ZERO, |c| c.version);
        let op = Op::Cas(rsm::Cas {
            key: key.clone(),
            expect_absent: expected.is_none(),
            expected: expected.unwrap_or_default(),
            new_value,
            dep: kv::dep_of(read.as_ref()),
        });
        let applied = self.rsm.propose_applied(caller, op, left(deadline)).await?;
        let c = match applied.reply.result {
            Some(reply::Result::Cas(c)) => c,
            other => return Err(LevelError::UnexpectedReply { command: "cas", reply: format!("{other:?}") }),
        };
        let cell = kv::cas_reply_cell(&c);
        // The new cell, or the one the comparison failed on when that is
        // newer than what the majority had (the state machine's own).
        if let Some(cell) = cell.clone().filter(|c| c.version > read_version) {
            self.write_back(key, cell, applied.index, deadline).await?;
        }
        Ok(CasReply { swapped: c.swapped, current: cell.filter(|c| !c.is_tombstone()) })
    }
}

impl crate::levels::KvLevel for Linear {
    const LEVEL: crate::level::Level = crate::level::Level::Linearizable;

    async fn get(&self, key: Bytes, call: crate::levels::Call) -> Result<Option<Cell>, LevelError> {
        Linear::get(self, &key, call.timeout).await
    }

    async fn write(&self, key: Bytes, value: Option<Bytes>, call: crate::levels::Call) -> Result<Version, LevelError> {
        Linear::write(self, call.caller, key, value, call.timeout).await
    }

    async fn cas(
        &self,
        key: Bytes,
        expected: Option<Bytes>,
        new_value: Bytes,
        call: crate::levels::Call,
    ) -> Result<CasReply, LevelError> {
        Linear::cas(self, call.caller, key, expected, new_value, call.timeout).await
    }
}
