//! A cell: what a node keeps for one user key.
//!
//! `{value | tombstone, version, origin level}`. Replicas merge cells with
//! [`Cell::merge`], last-writer-wins by version. Because the merge picks the
//! maximum of a total order, it is commutative, associative and idempotent
//! (a join-semilattice), so replicas converge whatever order and however
//! often cells arrive. The property tests below check exactly that.
//!
//! Encoding (value of the `cells` column family, big-endian):
//! `[format u8 = 1][flags u8][hlc u64][node_id u32][value bytes]` for a
//! plain write's version (`rmw = 0`), and
//! `[format u8 = 2][flags u8][hlc u64][node_id u32][rmw u32][value bytes]`
//! for a read-modify-write's (so cells written before format 2 existed read
//! as they are, and plain cells cost no more);
//! flags bit 0 = tombstone, bits 1..=2 = origin level, bits 3..=7 zero
//! (a cell with other bits set is refused, not misread).

use bytes::Bytes;

use crate::clock::Version;
use crate::level::Level;

/// Format of a cell whose version has `rmw = 0`.
const FORMAT_PLAIN: u8 = 1;
/// Format of a cell whose version has `rmw > 0` (four more header bytes).
const FORMAT_RMW: u8 = 2;
const PLAIN_HEADER_BYTES: usize = 1 + 1 + 8 + 4;
const RMW_HEADER_BYTES: usize = PLAIN_HEADER_BYTES + 4;
const FLAG_TOMBSTONE: u8 = 1;
/// Where the origin level sits in the flags byte.
const ORIGIN_SHIFT: u32 = 1;
const ORIGIN_MASK: u8 = 0b11;
const FLAGS_KNOWN: u8 = FLAG_TOMBSTONE | (ORIGIN_MASK << ORIGIN_SHIFT);
// Every level must fit the origin bits, and none may be 0 (0 is no level):
// a fourth level needs a new cell format, and this stops the build until
// it has one.
const _: () = {
    let mut i = 0;
    while i < Level::ALL.len() {
        let l = Level::ALL[i] as u8;
        assert!(l != 0 && l <= ORIGIN_MASK, "a level does not fit the cell's origin bits");
        i += 1;
    }
};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Cell {
    /// `None` is a tombstone: the key was deleted at `version`.
    pub value: Option<Bytes>,
    pub version: Version,
    pub origin: Level,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("cell too short: {0} bytes")]
    Truncated(usize),
    #[error("unknown cell format {0}")]
    Format(u8),
    #[error("unknown origin level {0}")]
    Origin(u8),
    #[error("unknown cell flags {0:#010b}")]
    Flags(u8),
}

impl Cell {
    pub fn value(value: Bytes, version: Version, origin: Level) -> Self {
        Cell { value: Some(value), version, origin }
    }

    pub fn tombstone(version: Version, origin: Level) -> Self {
        Cell { value: None, version, origin }
    }

    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }

    /// The total order merge is the maximum of: version first; equal versions
    /// (which a correct cluster never produces for different contents) are
    /// ordered by content so the merge stays deterministic even then.
    fn order_key(&self) -> (Version, Option<&[u8]>, Level) {
        (self.version, self.value.as_deref(), self.origin)
    }

    /// True when `self` wins over `other` in a merge.
    pub fn supersedes(&self, other: &Cell) -> bool {
        self.order_key() > other.order_key()
    }

    /// Last-writer-wins merge: the larger of the two.
    pub fn merge(self, other: Cell) -> Cell {
        if other.supersedes(&self) {
            other
        } else {
            self
        }
    }

    pub fn encoded_len(&self) -> usize {
        Self::header_bytes(self.version) + self.value.as_ref().map_or(0, |v| v.len())
    }

    fn header_bytes(version: Version) -> usize {
        if version.rmw == 0 {
            PLAIN_HEADER_BYTES
        } else {
            RMW_HEADER_BYTES
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out
    }

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let mut flags = (self.origin as u8) << ORIGIN_SHIFT;
        if self.value.is_none() {
            flags |= FLAG_TOMBSTONE;
        }
        assert_eq!(flags & !FLAGS_KNOWN, 0, "cell flags {flags:#010b} out of the format");
        let start = out.len();
        out.push(if self.version.rmw == 0 { FORMAT_PLAIN } else { FORMAT_RMW });
        out.push(flags);
        out.extend_from_slice(&self.version.hlc.to_be_bytes());
        out.extend_from_slice(&self.version.node_id.to_be_bytes());
        if self.version.rmw > 0 {
            out.extend_from_slice(&self.version.rmw.to_be_bytes());
        }
        if let Some(v) = &self.value {
            out.extend_from_slice(v);
        }
        assert_eq!(out.len() - start, self.encoded_len(), "cell encoding length");
    }

    pub fn decode(bytes: &[u8]) -> Result<Cell, DecodeError> {
        let (version, flags) = Self::decode_header(bytes)?;
        let origin = Level::from_u8((flags >> ORIGIN_SHIFT) & ORIGIN_MASK).ok_or(DecodeError::Origin(flags))?;
        let header = Self::header_bytes(version);
        let value = if flags & FLAG_TOMBSTONE != 0 { None } else { Some(Bytes::copy_from_slice(&bytes[header..])) };
        Ok(Cell { value, version, origin })
    }

    /// Reads only the version and the tombstone flag (anti-entropy digests
    /// need no value).
    pub fn decode_version(bytes: &[u8]) -> Result<(Version, bool), DecodeError> {
        let (version, flags) = Self::decode_header(bytes)?;
        Ok((version, flags & FLAG_TOMBSTONE != 0))
    }

    fn decode_header(bytes: &[u8]) -> Result<(Version, u8), DecodeError> {
        let header = match bytes.first() {
            Some(&FORMAT_PLAIN) => PLAIN_HEADER_BYTES,
            Some(&FORMAT_RMW) => RMW_HEADER_BYTES,
            Some(&other) => return Err(DecodeError::Format(other)),
            None => return Err(DecodeError::Truncated(0)),
        };
        if bytes.len() < header {
            return Err(DecodeError::Truncated(bytes.len()));
        }
        if bytes[1] & !FLAGS_KNOWN != 0 {
            return Err(DecodeError::Flags(bytes[1]));
        }
        let hlc = u64::from_be_bytes(bytes[2..10].try_into().expect("8 bytes"));
        let node_id = u32::from_be_bytes(bytes[10..14].try_into().expect("4 bytes"));
        let rmw = if header == RMW_HEADER_BYTES {
            let rmw = u32::from_be_bytes(bytes[14..18].try_into().expect("4 bytes"));
            // Format 2 exists only for rmw > 0: one encoding per cell.
            if rmw == 0 {
                return Err(DecodeError::Format(FORMAT_RMW));
            }
            rmw
        } else {
            0
        };
        Ok((Version { hlc, node_id, rmw }, bytes[1]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_level() -> impl Strategy<Value = Level> {
        prop_oneof![Just(Level::Eventual), Just(Level::Quorum), Just(Level::Linearizable)]
    }

    // Small domains so equal versions (the tie-break path) are common.
    fn arb_cell() -> impl Strategy<Value = Cell> {
        (0u64..4, 0u32..3, 0u32..3, proptest::option::of(proptest::collection::vec(any::<u8>(), 0..3)), arb_level())
            .prop_map(|(hlc, node_id, rmw, value, origin)| Cell {
                value: value.map(Bytes::from),
                version: Version { hlc, node_id, rmw },
                origin,
            })
    }

    proptest! {
        #[test]
        fn merge_is_commutative(a in arb_cell(), b in arb_cell()) {
            prop_assert_eq!(a.clone().merge(b.clone()), b.merge(a));
        }

        #[test]
        fn merge_is_associative(a in arb_cell(), b in arb_cell(), c in arb_cell()) {
            let left = a.clone().merge(b.clone()).merge(c.clone());
            let right = a.merge(b.merge(c));
            prop_assert_eq!(left, right);
        }

        #[test]
        fn merge_is_idempotent(a in arb_cell(), b in arb_cell()) {
            prop_assert_eq!(a.clone().merge(a.clone()), a.clone());
            let ab = a.clone().merge(b.clone());
            prop_assert_eq!(ab.clone().merge(b), ab);
        }

        #[test]
        fn merge_keeps_the_larger_version(a in arb_cell(), b in arb_cell()) {
            let m = a.clone().merge(b.clone());
            prop_assert_eq!(m.version, a.version.max(b.version));
        }

        #[test]
        fn encoding_round_trips(c in arb_cell(), hlc in any::<u64>(), node in any::<u32>(), rmw in any::<u32>()) {
            let c = Cell { version: Version { hlc, node_id: node, rmw }, ..c };
            let bytes = c.encode();
            prop_assert_eq!(bytes.len(), c.encoded_len());
            prop_assert_eq!(Cell::decode(&bytes).unwrap(), c.clone());
            prop_assert_eq!(Cell::decode_version(&bytes).unwrap(), (c.version, c.is_tombstone()));
        }
    }

    #[test]
    fn decode_rejects_garbage() {
        assert_eq!(Cell::decode(&[1, 2]), Err(DecodeError::Truncated(2)));
        let mut bytes = Cell::tombstone(Version::new(1, 1), Level::Eventual).encode();
        bytes[0] = 9;
        assert_eq!(Cell::decode(&bytes), Err(DecodeError::Format(9)));
        // Origin 0 is no level; bits above the origin are not in format 1.
        let mut bytes = Cell::tombstone(Version::new(1, 1), Level::Eventual).encode();
        bytes[1] = FLAG_TOMBSTONE;
        assert_eq!(Cell::decode(&bytes), Err(DecodeError::Origin(FLAG_TOMBSTONE)));
        for high in [0b1000, 0b1000_0000] {
            let mut bytes = Cell::value(Bytes::from_static(b"v"), Version::new(1, 1), Level::Quorum).encode();
            bytes[1] |= high;
            assert_eq!(Cell::decode(&bytes), Err(DecodeError::Flags(bytes[1])));
            assert_eq!(Cell::decode_version(&bytes), Err(DecodeError::Flags(bytes[1])));
        }
    }

    #[test]
    fn every_level_round_trips_as_origin() {
        for level in Level::ALL {
            for cell in [
                Cell::tombstone(Version::new(7, 2), level),
                Cell::value(Bytes::from_static(b"x"), Version::new(7, 2), level),
            ] {
                assert_eq!(Cell::decode(&cell.encode()).unwrap(), cell);
            }
        }
    }

    #[test]
    fn rmw_versions_use_format_2_and_plain_ones_stay_format_1() {
        let plain = Cell::value(Bytes::from_static(b"v"), Version::new(9, 1), Level::Quorum);
        let rmw = Cell { version: Version::new(9, 1).after_rmw(), ..plain.clone() };
        assert_eq!(plain.encode()[0], FORMAT_PLAIN);
        assert_eq!(rmw.encode()[0], FORMAT_RMW);
        assert_eq!(rmw.encode().len(), plain.encode().len() + 4);
        assert_eq!(Cell::decode(&rmw.encode()).unwrap(), rmw);
        // A format-2 cell claiming rmw = 0 is not a valid encoding.
        let mut bytes = rmw.encode();
        bytes[14..18].copy_from_slice(&0u32.to_be_bytes());
        assert_eq!(Cell::decode(&bytes), Err(DecodeError::Format(FORMAT_RMW)));
        // Truncated inside the longer header.
        assert_eq!(Cell::decode(&rmw.encode()[..16]), Err(DecodeError::Truncated(16)));
        // The rmw result sorts right after its base, before the next write.
        assert!(rmw.supersedes(&plain));
        let next = Cell { version: Version::new(9, 2), ..plain.clone() };
        assert!(next.supersedes(&rmw));
    }

    #[test]
    fn an_empty_value_is_not_a_tombstone() {
        let c = Cell::value(Bytes::new(), Version::new(5, 1), Level::Quorum);
        assert!(!Cell::decode(&c.encode()).unwrap().is_tombstone());
    }
}
