//! The eventual level (DESIGN §4, first column).
//!
//! * get: the local replica's cell, at once; the key is queued for a
//!   background read repair ([`read_repair`]).
//! * set/del: a durable local write with a fresh version (above the key's
//!   current one), acknowledged, then replicated in the background
//!   ([`replication`]). The write and a hint per peer land in one batch, so a
//!   peer that is down, paused or unreachable gets the write later even if
//!   this node crashes right after the ack (hinted handoff).
//! * cas: atomic on this node only. Two nodes can both swap from the same
//!   old value; LWW then keeps one of the two writes (lost update). This is
//!   the documented price of availability: use `linearizable` for CAS.
//! * [`anti_entropy`] compares per-bucket digests with each peer in turn so
//!   replicas converge even when hints were lost.
//!
//! Stays available on any single live node: nothing here waits for a peer.

pub mod anti_entropy;
pub mod read_repair;
pub mod replication;

use std::sync::Arc;

use bytes::Bytes;

use super::{CasReply, LevelError};
use crate::level::Level;
use crate::metrics::{inc, Metrics};
use crate::store::{Cell, OpOutcome, Store, WriteOp};

pub struct Eventual {
    store: Arc<Store>,
    replication: Arc<replication::Replication>,
    repair: read_repair::ReadRepair,
    metrics: Arc<Metrics>,
    hinted_handoff: bool,
}

impl Eventual {
    pub fn new(
        store: Arc<Store>,
        replication: Arc<replication::Replication>,
        repair: read_repair::ReadRepair,
        metrics: Arc<Metrics>,
        hinted_handoff: bool,
    ) -> Self {
        Eventual { store, replication, repair, metrics, hinted_handoff }
    }

    /// The local cell (tombstones included; callers treat them as absent).
    pub fn get(&self, key: Bytes) -> Result<Option<Cell>, LevelError> {
        inc(&self.metrics.eventual_gets);
        let cell = self.store.get_cell(&key)?;
        self.repair.enqueue(key);
        Ok(cell)
    }

    /// Writes `value` (`None` deletes) and returns the new cell.
    pub async fn write(&self, key: Bytes, value: Option<Bytes>) -> Result<Cell, LevelError> {
        inc(&self.metrics.eventual_writes);
        let op = WriteOp::Fresh { key: key.clone(), value, origin: Level::Eventual, hints: self.hinted_handoff };
        match self.store.write(vec![op], true).await?.pop() {
            Some(OpOutcome::Written(cell)) => {
                self.replication.enqueue(key, cell.clone());
                Ok(cell)
            }
            other => unreachable!("writer answered a Fresh op with {other:?}"),
        }
    }

    pub async fn cas(&self, key: Bytes, expected: Option<Bytes>, new_value: Bytes) -> Result<CasReply, LevelError> {
        inc(&self.metrics.eventual_writes);
        let op =
            WriteOp::Cas { key: key.clone(), expected, new_value, origin: Level::Eventual, hints: self.hinted_handoff };
        match self.store.write(vec![op], true).await?.pop() {
            Some(OpOutcome::Cas { swapped, current }) => {
                if swapped {
                    let cell = current.clone().expect("a swap produces a cell");
                    self.replication.enqueue(key, cell);
                }
                Ok(CasReply { swapped, current })
            }
            other => unreachable!("writer answered a Cas op with {other:?}"),
        }
    }
}

impl super::KvLevel for Eventual {
    const LEVEL: Level = Level::Eventual;

    async fn get(&self, key: Bytes, _call: super::Call) -> Result<Option<Cell>, LevelError> {
        Eventual::get(self, key)
    }

    async fn write(
        &self,
        key: Bytes,
        value: Option<Bytes>,
        _call: super::Call,
    ) -> Result<crate::clock::Version, LevelError> {
        Ok(Eventual::write(self, key, value).await?.version)
    }

    async fn cas(
        &self,
        key: Bytes,
        expected: Option<Bytes>,
        new_value: Bytes,
        _call: super::Call,
    ) -> Result<CasReply, LevelError> {
        Eventual::cas(self, key, expected, new_value).await
    }
}
