//! The version every write in capkv carries: (HLC stamp, writer node id),
//! totally ordered and unique per writer, so "keep the larger version"
//! (last-writer-wins) converges. The clock that issues stamps lives in the
//! node (`capkv::clock`); what a stamp *means* is part of the wire contract
//! (clients print versions and send them back), so it lives here.

/// Node identifier as configured in `--cluster` (1, 2, 3, ...).
pub type NodeId = u32;

/// Milliseconds since the Unix epoch at hlc-gen's custom epoch (2024-01-01).
pub const HLC_EPOCH_UNIX_MS: i64 = 1_704_067_200_000;
/// Low bits of an HLC stamp that hold the logical counter.
pub const HLC_LOGICAL_BITS: u32 = 22;

/// The physical part of an HLC stamp, in ms since the Unix epoch.
pub fn hlc_physical_ms(hlc: u64) -> i64 {
    (hlc >> HLC_LOGICAL_BITS) as i64 + HLC_EPOCH_UNIX_MS
}

/// An HLC stamp for a physical time (logical counter 0).
pub fn hlc_from_physical_ms(unix_ms: i64) -> u64 {
    let since_epoch = (unix_ms - HLC_EPOCH_UNIX_MS).max(0) as u64;
    since_epoch << HLC_LOGICAL_BITS
}

/// The version of a cell: totally ordered by (hlc, node_id, rmw).
///
/// `rmw` counts the read-modify-writes (compare-and-set through Raft)
/// applied on top of the write `(hlc, node_id)`: a CAS that read the cell of
/// version `b` produces `b.after_rmw()`, which sorts right after `b` and
/// before every write with a larger `(hlc, node_id)` (Gryff's *carstamps*,
/// Burke et al., NSDI 2020). A write concurrent with the CAS that a
/// majority had not seen yet therefore stays ordered after it, which is
/// what keeps quorum writes and CAS linearizable together (see
/// docs/consistency.md). Plain writes have `rmw = 0`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub hlc: u64,
    pub node_id: NodeId,
    pub rmw: u32,
}

impl Version {
    pub const ZERO: Version = Version { hlc: 0, node_id: 0, rmw: 0 };

    /// The version of a plain write (`rmw = 0`).
    pub fn new(hlc: u64, node_id: NodeId) -> Self {
        Version { hlc, node_id, rmw: 0 }
    }

    /// The version of a read-modify-write applied on top of `self`.
    ///
    /// # Panics
    /// After `u32::MAX` read-modify-writes on one write (a key would need
    /// four billion CAS with no plain write between them).
    pub fn after_rmw(self) -> Version {
        let rmw = self.rmw.checked_add(1).expect("read-modify-write counter overflow");
        Version { rmw, ..self }
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}@{}", hlc_physical_ms(self.hlc), self.hlc & ((1 << HLC_LOGICAL_BITS) - 1), self.node_id)?;
        if self.rmw > 0 {
            write!(f, "+{}", self.rmw)?;
        }
        Ok(())
    }
}

/// The protobuf form of a version.
pub fn version_to_proto(v: Version) -> crate::proto::Version {
    crate::proto::Version { hlc: v.hlc, node_id: v.node_id, rmw: v.rmw }
}
