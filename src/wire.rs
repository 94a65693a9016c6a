//! Conversions between internal types and their protobuf forms.

use bytes::Bytes;

use crate::clock::Version;
use crate::level::Level;
use crate::proto;
use crate::store::Cell;

pub use capkv_proto::version::version_to_proto;

pub fn cell_to_peer(key: &Bytes, cell: &Cell) -> proto::peer::Cell {
    proto::peer::Cell {
        key: key.clone(),
        value: cell.value.clone().unwrap_or_default(),
        tombstone: cell.is_tombstone(),
        hlc: cell.version.hlc,
        node_id: cell.version.node_id,
        origin: cell.origin as u32,
        rmw: cell.version.rmw,
        applied_at: 0,
    }
}

/// Decodes a peer cell; `None` for an unknown origin level (a newer peer).
pub fn cell_from_peer(c: proto::peer::Cell) -> Option<(Bytes, Cell)> {
    let origin = Level::from_u8(u8::try_from(c.origin).ok()?)?;
    let version = Version { hlc: c.hlc, node_id: c.node_id, rmw: c.rmw };
    let cell = if c.tombstone { Cell::tombstone(version, origin) } else { Cell::value(c.value, version, origin) };
    Some((c.key, cell))
}

/// A quorum-level replica configuration in its peer form.
pub fn config_to_peer(c: &crate::levels::quorum::ReplicaConfig) -> proto::peer::ReplicaConfig {
    proto::peer::ReplicaConfig { epoch: c.epoch, current: c.current.clone(), next: c.next.clone().unwrap_or_default() }
}

/// Decodes a peer's replica configuration (an empty `next` = not joint);
/// `Err` when it is not a valid configuration.
pub fn config_from_peer(
    c: proto::peer::ReplicaConfig,
) -> Result<crate::levels::quorum::ReplicaConfig, crate::levels::quorum::ReplicaSetError> {
    let config = crate::levels::quorum::ReplicaConfig {
        epoch: c.epoch,
        current: c.current,
        next: if c.next.is_empty() { None } else { Some(c.next) },
    };
    config.validate()?;
    Ok(config)
}
