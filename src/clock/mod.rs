//! Hybrid logical clock and version stamps.
//!
//! Every write in capkv carries a [`Version`] = (HLC stamp, writer node id).
//! Versions are totally ordered and unique per writer, so "keep the larger
//! version" (last-writer-wins) makes every replica converge.
//!
//! The HLC comes from `hlc-gen`. Its physical source is the wall clock plus a
//! process-wide offset ([`set_offset_ms`]) that the clock-skew nemesis sets
//! through the admin RPC; a real deployment leaves it at 0.
//!
//! Drift policy: a stamp arriving from a peer that is more than
//! `max_drift_ms` ahead of our physical clock does **not** advance our clock
//! (one node with a wrong clock must not drag the cluster into the future).
//! The data it carries is still stored — LWW convergence needs every replica
//! to keep the largest version — and local writes to a key always take a
//! version above the key's current one ([`Clock::next_after`]), so a write
//! acknowledged on a node is never shadowed on that node by a stamp from
//! the future.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use hlc_gen::source::ManualClock;
use hlc_gen::{HlcGenerator, HlcTimestamp};

/// Node identifier as configured in `--cluster` (1, 2, 3, ...).
pub type NodeId = u32;

/// Milliseconds since the Unix epoch at hlc-gen's custom epoch (2024-01-01).
const HLC_EPOCH_UNIX_MS: i64 = 1_704_067_200_000;
/// Low bits of an HLC stamp that hold the logical counter.
const HLC_LOGICAL_BITS: u32 = 22;

/// Clock offset added to the wall clock, for the clock-skew nemesis.
static OFFSET_MS: AtomicI64 = AtomicI64::new(0);

/// Sets the process-wide clock offset; returns the previous one.
pub fn set_offset_ms(offset_ms: i64) -> i64 {
    OFFSET_MS.swap(offset_ms, Ordering::SeqCst)
}

pub fn offset_ms() -> i64 {
    OFFSET_MS.load(Ordering::SeqCst)
}

/// Wall clock in ms since the Unix epoch, plus the configured offset.
pub fn wall_clock_ms() -> i64 {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    now + offset_ms()
}

/// The physical part of an HLC stamp, in ms since the Unix epoch.
pub fn hlc_physical_ms(hlc: u64) -> i64 {
    (hlc >> HLC_LOGICAL_BITS) as i64 + HLC_EPOCH_UNIX_MS
}

/// An HLC stamp for a physical time (logical counter 0).
pub fn hlc_from_physical_ms(unix_ms: i64) -> u64 {
    let since_epoch = (unix_ms - HLC_EPOCH_UNIX_MS).max(0) as u64;
    since_epoch << HLC_LOGICAL_BITS
}

/// The version of a cell: totally ordered by (hlc, node_id).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub hlc: u64,
    pub node_id: NodeId,
}

impl Version {
    pub const ZERO: Version = Version { hlc: 0, node_id: 0 };

    pub fn new(hlc: u64, node_id: NodeId) -> Self {
        Version { hlc, node_id }
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}@{}", hlc_physical_ms(self.hlc), self.hlc & ((1 << HLC_LOGICAL_BITS) - 1), self.node_id)
    }
}

/// The node's hybrid logical clock.
pub struct Clock {
    node_id: NodeId,
    // hlc-gen offers custom clock sources only through `ManualClock`: we set
    // it from `wall_clock_ms()` before every use. Interleaved setters may
    // move the source back by a millisecond; the HLC absorbs that.
    // max_drift 0: hlc-gen never refuses; the drift check is ours (see module docs).
    hlc: HlcGenerator<ManualClock>,
    max_drift_ms: i64,
    drift_rejections: AtomicU64,
    /// Every stamp this clock issues is > the previous one: uniqueness of
    /// (stamp, node id) versions rests on this, even when a stamp is lifted
    /// above a floor the HLC itself has not reached.
    last_issued: AtomicU64,
}

impl Clock {
    pub fn new(node_id: NodeId, max_drift_ms: u64) -> Self {
        assert!(node_id > 0, "node ids start at 1");
        Clock {
            node_id,
            hlc: HlcGenerator::manual(0),
            max_drift_ms: max_drift_ms as i64,
            drift_rejections: AtomicU64::new(0),
            last_issued: AtomicU64::new(0),
        }
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// A fresh stamp for a local event; strictly greater than every stamp
    /// this clock handed out or observed before.
    pub fn now(&self) -> u64 {
        self.issue_above(0)
    }

    /// A fresh version for a local write of this node.
    pub fn fresh_version(&self) -> Version {
        Version::new(self.now(), self.node_id)
    }

    /// A fresh version of this node strictly greater than `floor`.
    pub fn next_after(&self, floor: Version) -> Version {
        let v = Version::new(self.issue_above(floor.hlc), self.node_id);
        assert!(v > floor, "issued version {v} not above floor {floor}");
        v
    }

    /// Issues a stamp > `floor_hlc`, > every stamp issued before, and >= the
    /// HLC's next stamp.
    fn issue_above(&self, floor_hlc: u64) -> u64 {
        self.tick_source();
        let hlc_next = self
            .hlc
            .next_timestamp()
            .expect("HLC overflow: the logical counter or the physical time is out of range")
            .as_u64();
        let mut issued = 0;
        self.last_issued
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
                issued = hlc_next.max(floor_hlc + 1).max(last + 1);
                Some(issued)
            })
            .expect("closure always returns Some");
        issued
    }

    /// Takes note of a stamp seen on a message from a peer. Returns false
    /// (and does not move the clock) when it is further ahead of our
    /// physical clock than the allowed drift.
    pub fn observe(&self, hlc: u64) -> bool {
        if hlc == 0 {
            return true;
        }
        let ahead_ms = hlc_physical_ms(hlc) - wall_clock_ms();
        if self.max_drift_ms > 0 && ahead_ms > self.max_drift_ms {
            let n = self.drift_rejections.fetch_add(1, Ordering::Relaxed);
            if n.is_power_of_two() {
                tracing::warn!(
                    ahead_ms,
                    max_drift_ms = self.max_drift_ms,
                    rejections = n + 1,
                    "peer clock stamp too far ahead; not advancing the local clock"
                );
            }
            return false;
        }
        self.force(hlc);
        true
    }

    /// Moves the clock to at least `hlc`, without a drift check. Used at
    /// start-up with the persisted stamp reservation, so a restarted node
    /// never re-issues a stamp even if the wall clock went backwards.
    pub fn force(&self, hlc: u64) {
        self.last_issued.fetch_max(hlc, Ordering::SeqCst);
        self.tick_source();
        if let Ok(ts) = HlcTimestamp::try_from(hlc) {
            // max_drift is 0, so update() cannot fail on drift.
            let _ = self.hlc.update(&ts);
        }
    }

    /// The latest stamp issued or observed, without advancing.
    pub fn current(&self) -> u64 {
        self.hlc.timestamp().as_u64().max(self.last_issued.load(Ordering::SeqCst))
    }

    pub fn drift_rejections(&self) -> u64 {
        self.drift_rejections.load(Ordering::Relaxed)
    }

    fn tick_source(&self) {
        self.hlc.set_current_timestamp(wall_clock_ms());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_strictly_increasing() {
        let c = Clock::new(1, 500);
        let mut last = 0;
        for _ in 0..10_000 {
            let t = c.now();
            assert!(t > last);
            last = t;
        }
    }

    #[test]
    fn physical_part_round_trips() {
        let ms = 1_800_000_000_123;
        assert_eq!(hlc_physical_ms(hlc_from_physical_ms(ms)), ms);
    }

    #[test]
    fn far_future_stamp_does_not_move_clock() {
        let c = Clock::new(1, 1_000);
        let future = hlc_from_physical_ms(wall_clock_ms() + 3_600_000);
        assert!(!c.observe(future));
        assert!(c.now() < future);
        let near = hlc_from_physical_ms(wall_clock_ms() + 200);
        assert!(c.observe(near));
        assert!(c.now() > near);
    }

    #[test]
    fn concurrent_next_after_never_repeats() {
        // Many threads lifting above the same far-future floor must still get
        // distinct stamps: (stamp, node) is the identity of a write.
        let c = std::sync::Arc::new(Clock::new(1, 1_000));
        let floor = Version::new(hlc_from_physical_ms(wall_clock_ms() + 3_600_000), 9);
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || (0..1000).map(|_| c.next_after(floor).hlc).collect::<Vec<_>>())
            })
            .collect();
        let mut all: Vec<u64> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n);
        assert!(c.now() > all[n - 1]);
    }

    #[test]
    fn next_after_exceeds_floor() {
        let c = Clock::new(2, 1_000);
        let floor = Version::new(hlc_from_physical_ms(wall_clock_ms() + 3_600_000), 3);
        let v = c.next_after(floor);
        assert!(v > floor);
        assert_eq!(v.node_id, 2);
    }
}
