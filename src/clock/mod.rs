//! Hybrid logical clock and version stamps.
//!
//! Every write in capkv carries a [`Version`] = (HLC stamp, writer node id).
//! Versions are totally ordered and unique per writer, so "keep the larger
//! version" (last-writer-wins) makes every replica converge.
//!
//! The HLC comes from `hlc-gen`. Its physical source is the node's
//! [`WallTime`] (the system clock, or a simulated one when several nodes
//! run in one process) plus a per-clock offset ([`Clock::set_offset_ms`])
//! that the clock-skew nemesis sets through the admin RPC; a real
//! deployment leaves it at 0. No process-wide state: two nodes in one
//! process have two clocks.
//!
//! Drift policy: a stamp arriving from a peer that is more than
//! `max_drift_ms` ahead of our physical clock does **not** advance our clock
//! (one node with a wrong clock must not drag the cluster into the future).
//! The data it carries is still stored — LWW convergence needs every replica
//! to keep the largest version — and local writes to a key always take a
//! version above the key's current one ([`Clock::next_after`]), so a write
//! acknowledged on a node is never shadowed on that node by a stamp from
//! the future.
//!
//! Range policy (issue 19): stamps come from peers, which nothing
//! authenticates, so the clock's `u64` arithmetic must never be within a
//! caller's reach of overflow. No stamp at or above [`MAX_STAMP_HLC`] is
//! taken in (observed, forced, or used as a floor for a new stamp): that
//! leaves 2^63 stamps of room above anything this clock holds. The peer
//! services refuse earlier, at [`MAX_PEER_STAMP_AHEAD_MS`] ahead of the
//! local clock ([`Clock::check_peer_stamp`]), and the admin offset is bounded by
//! [`MAX_CLOCK_OFFSET_MS`]. What is left fails with a [`ClockError`],
//! never a panic.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use hlc_gen::source::ManualClock;
use hlc_gen::{HlcGenerator, HlcTimestamp};

pub use capkv_proto::version::{
    hlc_from_physical_ms, hlc_physical_ms, NodeId, Version, HLC_EPOCH_UNIX_MS, HLC_LOGICAL_BITS,
};

/// No stamp at or above this is taken in (see the module docs). Its
/// physical part is in 2093.
pub const MAX_STAMP_HLC: u64 = 1 << 63;
/// The clock offset the admin hook may set, either way. The clock-skew
/// nemesis uses at most a minute; two hours leaves room for experiments
/// while a skewed node's stamps stay well inside [`MAX_PEER_STAMP_AHEAD_MS`].
pub const MAX_CLOCK_OFFSET_MS: i64 = 2 * 3_600_000;
/// How far ahead of the local clock a stamp sent by a peer may be: beyond
/// two nodes skewed apart by [`MAX_CLOCK_OFFSET_MS`] each, with a wide
/// margin for real clock error. Further ahead is a bug or an attack.
pub const MAX_PEER_STAMP_AHEAD_MS: i64 = 24 * 3_600_000;
const _: () = assert!(2 * MAX_CLOCK_OFFSET_MS < MAX_PEER_STAMP_AHEAD_MS);

/// Why the clock refused a stamp or an offset.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClockError {
    #[error("stamp {hlc} is out of the clock's range (stamps must be below {MAX_STAMP_HLC})")]
    OutOfRange { hlc: u64 },
    #[error(
        "stamp {hlc} is {ahead_ms} ms ahead of this node's clock; at most {MAX_PEER_STAMP_AHEAD_MS} ms is accepted"
    )]
    TooFarAhead { hlc: u64, ahead_ms: i64 },
    #[error("clock offset {offset_ms} ms is beyond ±{MAX_CLOCK_OFFSET_MS} ms")]
    OffsetOutOfRange { offset_ms: i64 },
}

/// Where a node reads wall-clock time from, in ms since the Unix epoch.
/// Real nodes read the system clock ([`SystemWallTime`]); a simulation of
/// several nodes in one process gives each its own ([`TokioWallTime`]).
/// Nothing in the node reads the system clock except through this.
pub trait WallTime: Send + Sync + 'static {
    fn unix_ms(&self) -> i64;
}

/// The operating system's clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemWallTime;

impl WallTime for SystemWallTime {
    fn unix_ms(&self) -> i64 {
        system_unix_ms()
    }
}

/// The system clock in ms since the Unix epoch (0 before 1970). For tests
/// and tools; a node reads [`Clock::wall_ms`].
pub fn system_unix_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A wall clock that follows tokio's clock: `start_unix_ms` plus the tokio
/// time elapsed since it was made. Under a paused tokio clock (simulation)
/// it moves only when the simulation advances time.
#[derive(Debug)]
pub struct TokioWallTime {
    start_unix_ms: i64,
    start: tokio::time::Instant,
    /// The machine's clock error: a simulation sets it to skew this clock
    /// (under the node, unlike [`Clock::set_offset_ms`], so it survives the
    /// node's restarts as a machine's wrong clock would).
    skew_ms: AtomicI64,
}

impl TokioWallTime {
    pub fn new(start_unix_ms: i64) -> Self {
        TokioWallTime { start_unix_ms, start: tokio::time::Instant::now(), skew_ms: AtomicI64::new(0) }
    }

    /// From now on this clock reads `skew_ms` away from the true time.
    pub fn set_skew_ms(&self, skew_ms: i64) {
        self.skew_ms.store(skew_ms, Ordering::SeqCst);
    }
}

impl WallTime for TokioWallTime {
    fn unix_ms(&self) -> i64 {
        self.start_unix_ms
            .saturating_add(self.start.elapsed().as_millis() as i64)
            .saturating_add(self.skew_ms.load(Ordering::SeqCst))
    }
}

/// The node's hybrid logical clock.
pub struct Clock {
    node_id: NodeId,
    wall: Arc<dyn WallTime>,
    /// Added to the wall clock: the clock-skew nemesis's hook, per node.
    offset_ms: AtomicI64,
    // hlc-gen offers custom clock sources only through `ManualClock`: we set
    // it from `wall_ms()` before every use. Interleaved setters may
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
    /// A clock on the system's wall clock.
    pub fn new(node_id: NodeId, max_drift_ms: u64) -> Self {
        Clock::with_wall(node_id, max_drift_ms, Arc::new(SystemWallTime))
    }

    /// A clock reading wall time from `wall`.
    pub fn with_wall(node_id: NodeId, max_drift_ms: u64, wall: Arc<dyn WallTime>) -> Self {
        assert!(node_id > 0, "node ids start at 1");
        Clock {
            node_id,
            wall,
            offset_ms: AtomicI64::new(0),
            hlc: HlcGenerator::manual(0),
            max_drift_ms: max_drift_ms as i64,
            drift_rejections: AtomicU64::new(0),
            last_issued: AtomicU64::new(0),
        }
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// Wall clock in ms since the Unix epoch, plus this node's offset.
    pub fn wall_ms(&self) -> i64 {
        self.wall.unix_ms().saturating_add(self.offset_ms())
    }

    pub fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::SeqCst)
    }

    /// Sets this node's clock offset; returns the previous one. Refuses
    /// offsets beyond ±[`MAX_CLOCK_OFFSET_MS`].
    pub fn set_offset_ms(&self, offset_ms: i64) -> Result<i64, ClockError> {
        if !(-MAX_CLOCK_OFFSET_MS..=MAX_CLOCK_OFFSET_MS).contains(&offset_ms) {
            return Err(ClockError::OffsetOutOfRange { offset_ms });
        }
        Ok(self.offset_ms.swap(offset_ms, Ordering::SeqCst))
    }

    /// Whether a stamp sent by a peer is acceptable: below [`MAX_STAMP_HLC`]
    /// and at most [`MAX_PEER_STAMP_AHEAD_MS`] ahead of this node's wall clock.
    pub fn check_peer_stamp(&self, hlc: u64) -> Result<(), ClockError> {
        if hlc >= MAX_STAMP_HLC {
            return Err(ClockError::OutOfRange { hlc });
        }
        let ahead_ms = hlc_physical_ms(hlc).saturating_sub(self.wall_ms());
        if ahead_ms > MAX_PEER_STAMP_AHEAD_MS {
            return Err(ClockError::TooFarAhead { hlc, ahead_ms });
        }
        Ok(())
    }

    /// A fresh stamp for a local event; strictly greater than every stamp
    /// this clock handed out or observed before.
    pub fn now(&self) -> u64 {
        // Cannot fail: nothing at or above MAX_STAMP_HLC is taken in, so
        // the last stamp is below MAX_STAMP_HLC plus the stamps issued
        // since, far from u64::MAX.
        self.issue_above(0).expect("the clock ran out of stamps with a zero floor")
    }

    /// A fresh version for a local write of this node.
    pub fn fresh_version(&self) -> Version {
        Version::new(self.now(), self.node_id)
    }

    /// A fresh version of this node strictly greater than `floor`; an error
    /// when `floor` is out of the clock's range (a stamp no healthy node
    /// issues).
    pub fn next_after(&self, floor: Version) -> Result<Version, ClockError> {
        let v = Version::new(self.issue_above(floor.hlc)?, self.node_id);
        assert!(v > floor, "issued version {v} not above floor {floor}");
        Ok(v)
    }

    /// Issues a stamp > `floor_hlc`, > every stamp issued before, and >= the
    /// HLC's next stamp.
    fn issue_above(&self, floor_hlc: u64) -> Result<u64, ClockError> {
        if floor_hlc >= MAX_STAMP_HLC {
            return Err(ClockError::OutOfRange { hlc: floor_hlc });
        }
        self.tick_source();
        // hlc-gen has no stamp left when its logical counter is full within
        // one millisecond (a peer's stamp can fill it) or the physical time
        // is past its range; the next stamp above its state does as well.
        let hlc_next = match self.hlc.next_timestamp() {
            Some(ts) => ts.as_u64(),
            None => self.hlc.timestamp().as_u64().saturating_add(1),
        };
        let above_floor = floor_hlc + 1; // floor_hlc < MAX_STAMP_HLC
        let mut issued = 0;
        self.last_issued
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
                issued = hlc_next.max(above_floor).max(last.checked_add(1)?);
                Some(issued)
            })
            .map(|_| issued)
            .map_err(|last| ClockError::OutOfRange { hlc: last })
    }

    /// Takes note of a stamp seen on a message from a peer. Returns false
    /// (and does not move the clock) when it is further ahead of our
    /// physical clock than the allowed drift.
    pub fn observe(&self, hlc: u64) -> bool {
        if hlc == 0 {
            return true;
        }
        if hlc >= MAX_STAMP_HLC {
            tracing::warn!(hlc, "stamp out of the clock's range; not advancing the local clock");
            return false;
        }
        let ahead_ms = hlc_physical_ms(hlc) - self.wall_ms();
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
        self.force(hlc).expect("checked against MAX_STAMP_HLC above");
        true
    }

    /// Moves the clock to at least `hlc`, without a drift check. Used at
    /// start-up with the persisted stamp reservation, so a restarted node
    /// never re-issues a stamp even if the wall clock went backwards.
    pub fn force(&self, hlc: u64) -> Result<(), ClockError> {
        if hlc >= MAX_STAMP_HLC {
            return Err(ClockError::OutOfRange { hlc });
        }
        self.last_issued.fetch_max(hlc, Ordering::SeqCst);
        self.tick_source();
        if let Ok(ts) = HlcTimestamp::try_from(hlc) {
            // max_drift is 0, so update() cannot fail on drift.
            let _ = self.hlc.update(&ts);
        }
        Ok(())
    }

    /// The latest stamp issued or observed, without advancing.
    pub fn current(&self) -> u64 {
        self.hlc.timestamp().as_u64().max(self.last_issued.load(Ordering::SeqCst))
    }

    pub fn drift_rejections(&self) -> u64 {
        self.drift_rejections.load(Ordering::Relaxed)
    }

    fn tick_source(&self) {
        self.hlc.set_current_timestamp(self.wall_ms());
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
        let future = hlc_from_physical_ms(system_unix_ms() + 3_600_000);
        assert!(!c.observe(future));
        assert!(c.now() < future);
        let near = hlc_from_physical_ms(system_unix_ms() + 200);
        assert!(c.observe(near));
        assert!(c.now() > near);
    }

    #[test]
    fn concurrent_next_after_never_repeats() {
        // Many threads lifting above the same far-future floor must still get
        // distinct stamps: (stamp, node) is the identity of a write.
        let c = std::sync::Arc::new(Clock::new(1, 1_000));
        let floor = Version::new(hlc_from_physical_ms(system_unix_ms() + 3_600_000), 9);
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || (0..1000).map(|_| c.next_after(floor).unwrap().hlc).collect::<Vec<_>>())
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
        let floor = Version::new(hlc_from_physical_ms(system_unix_ms() + 3_600_000), 3);
        let v = c.next_after(floor).unwrap();
        assert!(v > floor);
        assert_eq!(v.node_id, 2);
    }

    #[test]
    fn a_floor_out_of_range_is_an_error_and_the_clock_goes_on() {
        // Issue 19, item 8: `floor_hlc + 1` overflowed for a cell stamped
        // u64::MAX and the writer thread died on the assert.
        let c = Clock::new(1, 1_000);
        for hlc in [u64::MAX, u64::MAX - 1, MAX_STAMP_HLC] {
            assert_eq!(c.next_after(Version::new(hlc, 2)), Err(ClockError::OutOfRange { hlc }));
        }
        let below = Version::new(MAX_STAMP_HLC - 1, 2);
        assert!(c.next_after(below).unwrap() > below);
        // The clock still has room: plain stamps keep increasing.
        let (a, b) = (c.now(), c.now());
        assert!(b > a && a > below.hlc);
    }

    #[test]
    fn out_of_range_stamps_are_not_taken_in() {
        let c = Clock::new(1, 0);
        assert!(!c.observe(u64::MAX));
        assert_eq!(c.force(u64::MAX), Err(ClockError::OutOfRange { hlc: u64::MAX }));
        assert!(c.now() < MAX_STAMP_HLC);
    }

    #[test]
    fn a_full_logical_counter_does_not_stop_the_clock() {
        // A peer stamp within the drift bound but with the logical counter
        // nearly full leaves hlc-gen no next stamp in that millisecond.
        let c = Clock::new(1, 60_000);
        let full = hlc_from_physical_ms(system_unix_ms() + 30_000) | ((1 << HLC_LOGICAL_BITS) - 2);
        assert!(c.observe(full));
        // The premise: hlc-gen has no next stamp here (the clock used to
        // `expect` one, killing whichever thread asked).
        c.tick_source();
        assert!(c.hlc.next_timestamp().is_none());
        let mut last = c.current();
        for _ in 0..10 {
            let t = c.now();
            assert!(t > last);
            last = t;
        }
    }

    #[test]
    fn peer_stamps_are_bounded_ahead_of_the_local_clock() {
        let c = Clock::new(1, 500);
        assert_eq!(c.check_peer_stamp(u64::MAX), Err(ClockError::OutOfRange { hlc: u64::MAX }));
        let day_and_more = hlc_from_physical_ms(c.wall_ms() + MAX_PEER_STAMP_AHEAD_MS + 60_000);
        assert!(matches!(c.check_peer_stamp(day_and_more), Err(ClockError::TooFarAhead { .. })));
        let skewed = hlc_from_physical_ms(c.wall_ms() + 2 * MAX_CLOCK_OFFSET_MS);
        assert_eq!(c.check_peer_stamp(skewed), Ok(()));
        assert_eq!(c.check_peer_stamp(0), Ok(()));
    }

    #[test]
    fn clock_offsets_are_bounded_and_per_clock() {
        let c = Clock::new(1, 500);
        for offset_ms in [MAX_CLOCK_OFFSET_MS + 1, -MAX_CLOCK_OFFSET_MS - 1, i64::MIN, i64::MAX, 24 * 3_600_000] {
            assert_eq!(c.set_offset_ms(offset_ms), Err(ClockError::OffsetOutOfRange { offset_ms }));
        }
        assert_eq!(c.offset_ms(), 0);
        assert_eq!(c.set_offset_ms(-60_000), Ok(0));
        // Another node's clock in the same process is not skewed with it.
        let other = Clock::new(2, 500);
        assert_eq!(other.offset_ms(), 0);
        assert!(other.wall_ms() - c.wall_ms() >= 59_000, "offset not applied to the skewed clock");
        assert_eq!(c.set_offset_ms(0), Ok(-60_000));
    }

    #[tokio::test(start_paused = true)]
    async fn a_tokio_wall_clock_moves_only_with_tokio_time() {
        let start = 1_800_000_000_000;
        let c = Clock::with_wall(1, 500, Arc::new(TokioWallTime::new(start)));
        assert_eq!(c.wall_ms(), start);
        let before = c.now();
        tokio::time::advance(std::time::Duration::from_millis(1_500)).await;
        assert_eq!(c.wall_ms(), start + 1_500);
        let after = c.now();
        assert_eq!(hlc_physical_ms(before), start);
        assert_eq!(hlc_physical_ms(after), start + 1_500);
    }
}
