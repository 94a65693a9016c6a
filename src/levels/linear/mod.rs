//! The linearizable level (DESIGN §4, third column): the KV adapter over the
//! replicated state machine (`crate::rsm`). Gets wait for a read index and
//! read the state machine's value of the key; set/del/cas become KV
//! commands (`rsm::state_machine::kv`) answered when applied.
//!
//! The Raft driver, storage, snapshots and the state machine used to live
//! here; they moved to `crate::rsm` (issue 20). The re-exports below keep
//! the old paths other rooms use compiling.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

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
    /// TEST ONLY (negative control): serve reads without a read index.
    unsafe_local_reads: bool,
    metrics: Arc<Metrics>,
}

impl Linear {
    /// Starts the replicated state machine (`Rsm::start`) and the level over it.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        id: u32,
        store: Arc<Store>,
        peers: Arc<Peers>,
        clock: Arc<Clock>,
        metrics: Arc<Metrics>,
        settings: RaftSettings,
        unsafe_local_reads: bool,
        cancel: CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<Arc<Linear>, StoreError> {
        let rsm = Rsm::start(id, store.clone(), peers, clock, metrics.clone(), settings, cancel, tracker).await?;
        Ok(Arc::new(Linear { rsm, store, unsafe_local_reads, metrics }))
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
    pub async fn get(&self, key: &[u8], timeout: Duration) -> Result<Option<Cell>, LevelError> {
        crate::metrics::inc(&self.metrics.linearizable_gets);
        if !self.unsafe_local_reads {
            self.rsm.barrier(timeout).await?;
        }
        Ok(kv::read_cell(&DbRsm(self.store.db()), key)?)
    }

    pub async fn write(
        &self,
        caller: Caller,
        key: Bytes,
        value: Option<Bytes>,
        timeout: Duration,
    ) -> Result<Version, LevelError> {
        let op = match value {
            Some(value) => Op::Put(rsm::Put { key, value }),
            None => Op::Del(rsm::Del { key }),
        };
        match self.rsm.propose(caller, op, timeout).await?.result {
            Some(reply::Result::Written(w)) => Ok(Version::new(w.hlc, w.node_id)),
            other => Err(LevelError::Indeterminate(format!("unexpected reply to a write: {other:?}"))),
        }
    }

    pub async fn cas(
        &self,
        caller: Caller,
        key: Bytes,
        expected: Option<Bytes>,
        new_value: Bytes,
        timeout: Duration,
    ) -> Result<CasReply, LevelError> {
        let op = Op::Cas(rsm::Cas {
            key,
            expect_absent: expected.is_none(),
            expected: expected.unwrap_or_default(),
            new_value,
        });
        match self.rsm.propose(caller, op, timeout).await?.result {
            Some(reply::Result::Cas(c)) => Ok(CasReply {
                swapped: c.swapped,
                current: c.found.then(|| Cell::value(c.current, Version::new(c.hlc, c.node_id), Level::Linearizable)),
            }),
            other => Err(LevelError::Indeterminate(format!("unexpected reply to a cas: {other:?}"))),
        }
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
