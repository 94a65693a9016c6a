//! The KV command family: put, delete and compare-and-set on user keys
//! (the linearizable level's commands, `levels::linear`).
//!
//! * **One keyspace with the quorum level.** A command may carry a
//!   dependency (`Dep`): the newest cell of the key its proposer read from
//!   a majority of replicas before proposing. The key's *base* is the larger
//!   (by version) of that and the state machine's own cell, and the larger
//!   one is kept as the state machine's cell. So a command sees every quorum
//!   write that finished before its proposer started it (ABD quorums
//!   intersect), and the choice stays deterministic: the dependency is part
//!   of the entry.
//! * **Deterministic versions.** An entry carries its proposer's HLC stamp.
//!   A put or delete of key k gets `hlc = max(stamp, base(k).hlc + 1)` and
//!   `node_id = proposer | LINEAR_VERSION_BIT`, so versions of a key strictly
//!   increase and never collide with eventual/quorum versions of the same
//!   node (the bit keeps the namespaces apart).
//! * **CAS** compares the base's value (absent or tombstone = no value) and
//!   swaps atomically; the new cell's version is `base.after_rmw()` (a
//!   carstamp: right after the base, before any later plain write; see
//!   `Version`). The reply says swapped or not and gives the current cell.
//! * Each write is also LWW-merged into the key's cell, so eventual and
//!   quorum reads see linearizable writes (the proposer also writes the
//!   result back to a majority before answering: `levels::linear`).
//!
//! * **Purge** (tombstone GC, `crate::tombstone_gc`): deletes the state
//!   machine's cell of each listed key whose version is at or below the
//!   purged tombstone's, asks every node to drop its own cell and hints
//!   of the key at or below it (`WriteOp::Purge`), and raises the *purge
//!   floor* ([`META_PURGE_FLOOR`]: the largest purged version). An absent
//!   key may hide a purged tombstone, so a write of a key without a base
//!   is placed above the floor, and a CAS on it is `floor.after_rmw()`:
//!   the carstamp rules then hold as if the tombstone were still there
//!   (a later write gets a version above every earlier one).
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
/// The purge floor: the largest version a `Purge` command purged
/// (hlc u64, node id u32, rmw u32, big-endian); absent = nothing purged.
pub const META_PURGE_FLOOR: &[u8] = b"m/purge_floor";

fn encode_version(v: Version) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    out.extend_from_slice(&v.hlc.to_be_bytes());
    out.extend_from_slice(&v.node_id.to_be_bytes());
    out.extend_from_slice(&v.rmw.to_be_bytes());
    out
}

fn decode_version(b: &[u8]) -> Option<Version> {
    if b.len() != 16 {
        return None;
    }
    Some(Version {
        hlc: u64::from_be_bytes(b[..8].try_into().ok()?),
        node_id: u32::from_be_bytes(b[8..12].try_into().ok()?),
        rmw: u32::from_be_bytes(b[12..].try_into().ok()?),
    })
}

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
    let v = rsm::Value::decode(&bytes[..])
        .map_err(|e| StoreError::Malformed { what: "state machine value", source: e.into() })?;
    Ok(Some(cell_of(v)))
}

/// The cell a stored value is, carstamp included (what quorum reads must
/// see of it: `read_cell`, and a snapshot install's merge into `cells`).
pub fn cell_of(v: rsm::Value) -> Cell {
    let version = version_of(&v);
    if v.tombstone {
        Cell::tombstone(version, Level::Linearizable)
    } else {
        Cell::value(v.value, version, Level::Linearizable)
    }
}

/// The version a stored value carries.
pub fn version_of(v: &rsm::Value) -> Version {
    Version { hlc: v.hlc, node_id: v.node_id, rmw: v.rmw }
}

/// The cell a CAS reply names: the new one when swapped, otherwise the one
/// the comparison failed on (a tombstone has a version but no value);
/// `None` when the key was absent.
pub fn cas_reply_cell(c: &rsm::CasResult) -> Option<Cell> {
    let version = Version { hlc: c.hlc, node_id: c.node_id, rmw: c.rmw };
    if c.found {
        Some(Cell::value(c.current.clone(), version, Level::Linearizable))
    } else if version != Version::ZERO {
        Some(Cell::tombstone(version, Level::Linearizable))
    } else {
        None
    }
}

/// The dependency a proposer attaches for the cell it read (`None`: none).
pub fn dep_of(cell: Option<&Cell>) -> Option<rsm::Dep> {
    cell.map(|c| rsm::Dep {
        value: c.value.clone().unwrap_or_default(),
        tombstone: c.is_tombstone(),
        hlc: c.version.hlc,
        node_id: c.version.node_id,
        rmw: c.version.rmw,
    })
}

impl<R: RsmRead> Applier<'_, R> {
    fn current(&self, key: &[u8]) -> Result<Option<rsm::Value>, ApplyError> {
        match self.get(&user_key(key))? {
            Some(b) => Ok(Some(Self::decode(&b, "value")?)),
            None => Ok(None),
        }
    }

    /// The largest version purged so far (`Version::ZERO`: none).
    fn purge_floor(&self) -> Result<Version, ApplyError> {
        match self.get(META_PURGE_FLOOR)? {
            Some(b) => decode_version(&b).ok_or_else(|| ApplyError::Corrupt("purge floor".into())),
            None => Ok(Version::ZERO),
        }
    }

    /// The key's base for a command with dependency `dep`: the larger of
    /// the state machine's cell and `dep`, kept as the state machine's cell.
    fn base(&mut self, key: &[u8], dep: Option<&rsm::Dep>) -> Result<Option<rsm::Value>, ApplyError> {
        let current = self.current(key)?;
        let Some(d) = dep else { return Ok(current) };
        let d =
            rsm::Value { value: d.value.clone(), tombstone: d.tombstone, hlc: d.hlc, node_id: d.node_id, rmw: d.rmw };
        if current.as_ref().is_some_and(|c| version_of(c) >= version_of(&d)) {
            return Ok(current);
        }
        self.put(user_key(key), d.encode_to_vec());
        // Merged into this node's cells too, like every cell the state
        // machine keeps (so an eventual read here sees what a linearizable
        // read here would).
        let version = version_of(&d);
        let cell = if d.tombstone {
            Cell::tombstone(version, Level::Linearizable)
        } else {
            Cell::value(d.value.clone(), version, Level::Linearizable)
        };
        self.ops.push(WriteOp::Merge { key: Bytes::copy_from_slice(key), cell });
        Ok(Some(d))
    }

    /// Stores `value` (None = tombstone) as `key`'s cell at `version`, in
    /// the state machine and merged into the key's cell.
    fn store(&mut self, key: &Bytes, base: Option<&rsm::Value>, version: Version, value: Option<Bytes>) {
        if let Some(b) = base {
            assert!(version > version_of(b), "state machine version regression on {key:?}");
        }
        let stored = rsm::Value {
            value: value.clone().unwrap_or_default(),
            tombstone: value.is_none(),
            hlc: version.hlc,
            node_id: version.node_id,
            rmw: version.rmw,
        };
        self.put(user_key(key), stored.encode_to_vec());
        let cell = match value {
            Some(v) => Cell::value(v, version, Level::Linearizable),
            None => Cell::tombstone(version, Level::Linearizable),
        };
        self.ops.push(WriteOp::Merge { key: key.clone(), cell });
    }

    /// A put or delete: a plain write with a fresh version above the base.
    fn write(
        &mut self,
        batch: &rsm::Batch,
        key: &Bytes,
        base: Option<&rsm::Value>,
        value: Option<Bytes>,
    ) -> Result<Version, ApplyError> {
        let floor = match base {
            Some(c) => c.hlc + 1,
            // An absent key may hide a purged tombstone: go above all of them.
            None => self.purge_floor()?.hlc + 1,
        };
        let version = Version::new(batch.stamp.max(floor), batch.proposer | LINEAR_VERSION_BIT);
        self.store(key, base, version, value);
        Ok(version)
    }

    pub(super) fn kv_put(&mut self, batch: &rsm::Batch, p: &rsm::Put) -> Result<reply::Result, ApplyError> {
        let base = self.base(&p.key, p.dep.as_ref())?;
        let v = self.write(batch, &p.key, base.as_ref(), Some(p.value.clone()))?;
        Ok(reply::Result::Written(rsm::Written { hlc: v.hlc, node_id: v.node_id }))
    }

    pub(super) fn kv_del(&mut self, batch: &rsm::Batch, d: &rsm::Del) -> Result<reply::Result, ApplyError> {
        let base = self.base(&d.key, d.dep.as_ref())?;
        let v = self.write(batch, &d.key, base.as_ref(), None)?;
        Ok(reply::Result::Written(rsm::Written { hlc: v.hlc, node_id: v.node_id }))
    }

    /// Tombstone GC: see the module docs. Deterministic: the state
    /// machine part depends on the entry and the `rsm` family only; each
    /// node's cells and hints follow through `WriteOp::Purge`.
    pub(super) fn kv_purge(&mut self, p: &rsm::Purge) -> Result<reply::Result, ApplyError> {
        let mut floor = self.purge_floor()?;
        let mut removed = 0u32;
        for e in &p.entries {
            let version = Version { hlc: e.hlc, node_id: e.node_id, rmw: e.rmw };
            // As `WriteOp::Purge`: at the purged version only a tombstone goes.
            if self
                .current(&e.key)?
                .is_some_and(|c| version_of(&c) < version || (version_of(&c) == version && c.tombstone))
            {
                self.delete(user_key(&e.key));
                removed += 1;
            }
            self.ops.push(WriteOp::Purge { key: e.key.clone(), version });
            floor = floor.max(version);
        }
        if floor > Version::ZERO {
            self.put(META_PURGE_FLOOR.to_vec(), encode_version(floor));
        }
        Ok(reply::Result::Purged(rsm::Purged { state_machine_cells: removed }))
    }

    pub(super) fn kv_cas(&mut self, _batch: &rsm::Batch, c: &rsm::Cas) -> Result<reply::Result, ApplyError> {
        let base = self.base(&c.key, c.dep.as_ref())?;
        let live = base.as_ref().filter(|v| !v.tombstone);
        let matches = match live {
            None => c.expect_absent,
            Some(v) => !c.expect_absent && v.value == c.expected,
        };
        if matches {
            // A read-modify-write of the base: ordered right after it. An
            // absent key's base is the purge floor (a purged tombstone may
            // have been its last write).
            let v = match base.as_ref() {
                Some(b) => version_of(b),
                None => self.purge_floor()?,
            }
            .after_rmw();
            self.store(&c.key, base.as_ref(), v, Some(c.new_value.clone()));
            return Ok(reply::Result::Cas(rsm::CasResult {
                swapped: true,
                found: true,
                current: c.new_value.clone(),
                hlc: v.hlc,
                node_id: v.node_id,
                rmw: v.rmw,
            }));
        }
        // Not swapped: the base is the answer (a tombstone's version too,
        // so the proposer can write it back like any cell it read).
        Ok(reply::Result::Cas(match base {
            Some(v) => rsm::CasResult {
                swapped: false,
                found: !v.tombstone,
                current: if v.tombstone { Bytes::new() } else { v.value.clone() },
                hlc: v.hlc,
                node_id: v.node_id,
                rmw: v.rmw,
            },
            None => rsm::CasResult::default(),
        }))
    }
}
