//! The KV command family: put, delete and compare-and-set on user keys
//! (the linearizable level's commands, `levels::linear`).
//!
//! * **Deterministic versions.** An entry carries its proposer's HLC stamp.
//!   A write to key k gets `hlc = max(stamp, current(k).hlc + 1)` and
//!   `node_id = proposer | LINEAR_VERSION_BIT`, so versions of a key strictly
//!   increase and never collide with eventual/quorum versions of the same
//!   node (the bit keeps the namespaces apart).
//! * **CAS** compares the state machine's value (absent or tombstone = no
//!   value) and swaps atomically; the reply says swapped or not and gives
//!   the current value.
//! * Each write is also LWW-merged into the key's cell, so eventual and
//!   quorum reads see linearizable writes.
//!
//! Values live in the `rsm` family under [`KEY_PREFIX`] + user key.

use bytes::Bytes;
use prost::Message;

use super::{Applier, ApplyError, RsmRead};
use crate::clock::Version;
use crate::level::Level;
use crate::proto::rsm::{self, reply};
use crate::store::{Cell, StoreError, WriteOp};

/// Set in the node id of versions produced by the state machine.
pub const LINEAR_VERSION_BIT: u32 = 1 << 31;
pub const KEY_PREFIX: u8 = b'k';

pub fn user_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + key.len());
    k.push(KEY_PREFIX);
    k.extend_from_slice(key);
    k
}

/// The state machine's cell of `key` as `read` holds it (tombstones come
/// back as such); `None` when the key was never written through Raft.
pub fn read_cell(read: &impl RsmRead, key: &[u8]) -> Result<Option<Cell>, StoreError> {
    let Some(bytes) = read.get(&user_key(key))? else { return Ok(None) };
    let v = rsm::Value::decode(&bytes[..]).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let version = Version::new(v.hlc, v.node_id);
    Ok(Some(if v.tombstone {
        Cell::tombstone(version, Level::Linearizable)
    } else {
        Cell::value(v.value, version, Level::Linearizable)
    }))
}

impl<R: RsmRead> Applier<'_, R> {
    fn current(&self, key: &[u8]) -> Result<Option<rsm::Value>, ApplyError> {
        match self.get(&user_key(key))? {
            Some(b) => Ok(Some(Self::decode(&b, "value")?)),
            None => Ok(None),
        }
    }

    /// Writes `value` (None = tombstone) to `key` with the next version.
    fn write(
        &mut self,
        batch: &rsm::Batch,
        key: &Bytes,
        current: Option<&rsm::Value>,
        value: Option<Bytes>,
    ) -> Version {
        let floor = current.map_or(0, |c| c.hlc + 1);
        let version = Version::new(batch.stamp.max(floor), batch.proposer | LINEAR_VERSION_BIT);
        if let Some(c) = current {
            assert!(version > Version::new(c.hlc, c.node_id), "state machine version regression on {key:?}");
        }
        let stored = rsm::Value {
            value: value.clone().unwrap_or_default(),
            tombstone: value.is_none(),
            hlc: version.hlc,
            node_id: version.node_id,
        };
        self.put(user_key(key), stored.encode_to_vec());
        let cell = match value {
            Some(v) => Cell::value(v, version, Level::Linearizable),
            None => Cell::tombstone(version, Level::Linearizable),
        };
        self.ops.push(WriteOp::Merge { key: key.clone(), cell });
        version
    }

    pub(super) fn kv_put(&mut self, batch: &rsm::Batch, p: &rsm::Put) -> Result<reply::Result, ApplyError> {
        let cur = self.current(&p.key)?;
        let v = self.write(batch, &p.key, cur.as_ref(), Some(p.value.clone()));
        Ok(reply::Result::Written(rsm::Written { hlc: v.hlc, node_id: v.node_id }))
    }

    pub(super) fn kv_del(&mut self, batch: &rsm::Batch, d: &rsm::Del) -> Result<reply::Result, ApplyError> {
        let cur = self.current(&d.key)?;
        let v = self.write(batch, &d.key, cur.as_ref(), None);
        Ok(reply::Result::Written(rsm::Written { hlc: v.hlc, node_id: v.node_id }))
    }

    pub(super) fn kv_cas(&mut self, batch: &rsm::Batch, c: &rsm::Cas) -> Result<reply::Result, ApplyError> {
        let cur = self.current(&c.key)?;
        let live = cur.as_ref().filter(|v| !v.tombstone);
        let matches = match live {
            None => c.expect_absent,
            Some(v) => !c.expect_absent && v.value == c.expected,
        };
        if matches {
            let v = self.write(batch, &c.key, cur.as_ref(), Some(c.new_value.clone()));
            return Ok(reply::Result::Cas(rsm::CasResult {
                swapped: true,
                found: true,
                current: c.new_value.clone(),
                hlc: v.hlc,
                node_id: v.node_id,
            }));
        }
        Ok(reply::Result::Cas(match live {
            Some(v) => {
                rsm::CasResult { swapped: false, found: true, current: v.value.clone(), hlc: v.hlc, node_id: v.node_id }
            }
            None => rsm::CasResult::default(),
        }))
    }
}
