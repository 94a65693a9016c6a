//! Which replicas a quorum read asks first, and when it asks the rest.
//!
//! Why it exists: with [`ReadFanout::Majority`](super::ReadFanout) a read
//! phase asks only a majority (this node and one peer, of three) and holds
//! the others back. That saves a message and a peer's read per operation —
//! on a machine whose cores the nodes share, the work that bounds
//! throughput — but only pays if a held-back replica is asked soon when the
//! chosen peer is slow, paused or gone. This file decides both:
//!
//! - **the order**: this node first (its answer costs no message), then the
//!   peers in turn, so the load spreads; peers that recently failed or let a
//!   read hedge go last for [`AVOID_SLOW_PEER_MS`], so a dead or paused peer
//!   stops being asked first at once. When every peer has been marked (a
//!   healthy one can let a read hedge in a latency spike), the one marked
//!   longest ago goes first: a stalled peer is marked again by each read
//!   that still tries it, so it stays last.
//! - **the hedge delay**: [`HEDGE_DELAY_FACTOR`] times a moving average of
//!   how long read phases took here, clamped to
//!   [`MIN_HEDGE_DELAY_US`]..=[`MAX_HEDGE_DELAY_US`]. Under load the
//!   average rises with the queueing, so a busy cluster does not hedge every
//!   read (which would cost more than asking everyone at once).
//!
//! What it promises: [`ReadPlanner::order`] names every member exactly once;
//! [`ReadPlanner::hedge_delay`] stays within its bounds. It never affects
//! safety: ABD is correct with any majority.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::clock::NodeId;

/// The shortest hedge delay: below it a hedge would race ordinary replies.
pub const MIN_HEDGE_DELAY_US: u64 = 1_000;
/// The longest hedge delay: a read whose peer stalls waits at most this
/// long (plus the held-back replica's reply) for the other one.
pub const MAX_HEDGE_DELAY_US: u64 = 50_000;
/// The hedge delay in multiples of the average read phase.
pub const HEDGE_DELAY_FACTOR: u64 = 4;
/// How long a peer that failed or let a read hedge is asked last.
pub const AVOID_SLOW_PEER_MS: u64 = 1_000;
/// The moving average's weight of a new sample: 1 / 2^EWMA_SHIFT.
const EWMA_SHIFT: u32 = 4;

/// Shared by every quorum operation of a node.
#[derive(Debug, Default)]
pub struct ReadPlanner {
    /// Turns the rotation of peers.
    next: AtomicUsize,
    /// Moving average of read-phase durations, in µs (0: none seen yet).
    read_phase_avg_us: AtomicU64,
    /// Peers asked last until the instant given.
    avoided: Mutex<BTreeMap<NodeId, Instant>>,
    /// Whether `avoided` may be non-empty (spares the lock when not).
    any_avoided: AtomicBool,
}

impl ReadPlanner {
    pub fn new() -> ReadPlanner {
        ReadPlanner::default()
    }

    /// The order in which a read should ask `members`: `me` first (if a
    /// member), then the other members rotated by one per call, those
    /// avoided at `now` last.
    pub fn order(&self, me: NodeId, members: &[NodeId], now: Instant) -> Vec<NodeId> {
        let mut peers: Vec<NodeId> = members.iter().copied().filter(|&m| m != me).collect();
        if !peers.is_empty() {
            let turn = self.next.fetch_add(1, Ordering::Relaxed) % peers.len();
            peers.rotate_left(turn);
        }
        if self.any_avoided.load(Ordering::Relaxed) {
            let mut avoided = self.avoided.lock().expect("read planner lock");
            avoided.retain(|_, until| *until > now);
            self.any_avoided.store(!avoided.is_empty(), Ordering::Relaxed);
            // Peers not avoided first; among avoided ones, the one marked
            // longest ago (a stalled peer is marked again by every read
            // that tries it; a healthy one hedged once stays behind it).
            // A stable sort keeps the rotation among equals.
            peers.sort_by_key(|p| avoided.get(p).copied());
        }
        let mut order = Vec::with_capacity(members.len());
        if members.contains(&me) {
            order.push(me);
        }
        order.extend(peers);
        debug_assert_eq!(order.len(), members.len(), "every member once");
        order
    }

    /// Asks `peers` last for the next [`AVOID_SLOW_PEER_MS`] from `now`.
    pub fn avoid(&self, peers: &[NodeId], now: Instant) {
        if peers.is_empty() {
            return;
        }
        let until = now + Duration::from_millis(AVOID_SLOW_PEER_MS);
        let mut avoided = self.avoided.lock().expect("read planner lock");
        for &p in peers {
            avoided.insert(p, until);
        }
        self.any_avoided.store(true, Ordering::Relaxed);
    }

    /// Records how long one read phase took (from its start to its
    /// majority, including any hedge).
    pub fn observe_read_phase(&self, took: Duration) {
        let sample = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).min(MAX_HEDGE_DELAY_US);
        let avg = self.read_phase_avg_us.load(Ordering::Relaxed);
        // Racing updates may lose a sample: harmless for an average.
        let next = if avg == 0 { sample.max(1) } else { avg - (avg >> EWMA_SHIFT) + (sample >> EWMA_SHIFT) };
        self.read_phase_avg_us.store(next.max(1), Ordering::Relaxed);
    }

    /// How long a read waits for its first majority before asking the
    /// replicas it held back.
    pub fn hedge_delay(&self) -> Duration {
        let avg = self.read_phase_avg_us.load(Ordering::Relaxed);
        let us = avg.saturating_mul(HEDGE_DELAY_FACTOR).clamp(MIN_HEDGE_DELAY_US, MAX_HEDGE_DELAY_US);
        Duration::from_micros(us)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_node_comes_first_and_the_peers_take_turns() {
        let p = ReadPlanner::new();
        let now = Instant::now();
        let firsts: Vec<Vec<NodeId>> = (0..4).map(|_| p.order(2, &[1, 2, 3], now)).collect();
        assert_eq!(firsts, vec![vec![2, 1, 3], vec![2, 3, 1], vec![2, 1, 3], vec![2, 3, 1]]);
        // Not a member (a node outside the replica set coordinates).
        assert_eq!(p.order(9, &[1, 2, 3], now).len(), 3);
        assert_eq!(p.order(1, &[1], now), vec![1]);
    }

    #[test]
    fn an_avoided_peer_goes_last_until_its_time_is_up() {
        let p = ReadPlanner::new();
        let now = Instant::now();
        p.avoid(&[3], now);
        for _ in 0..4 {
            assert_eq!(p.order(1, &[1, 2, 3], now), vec![1, 2, 3]);
        }
        // Both marked: the one marked longest ago goes first.
        p.avoid(&[2], now + Duration::from_millis(10));
        p.avoid(&[3], now + Duration::from_millis(20));
        for _ in 0..4 {
            assert_eq!(p.order(1, &[1, 2, 3], now + Duration::from_millis(30)), vec![1, 2, 3]);
        }
        let later = now + Duration::from_millis(AVOID_SLOW_PEER_MS + 21);
        let orders: Vec<Vec<NodeId>> = (0..2).map(|_| p.order(1, &[1, 2, 3], later)).collect();
        assert!(orders.contains(&vec![1, 3, 2]), "3 is asked first again once its time is up: {orders:?}");
        assert!(!p.any_avoided.load(Ordering::Relaxed), "expired entries are dropped");
    }

    #[test]
    fn the_hedge_delay_follows_the_read_phase_average_within_bounds() {
        let p = ReadPlanner::new();
        assert_eq!(p.hedge_delay(), Duration::from_micros(MIN_HEDGE_DELAY_US), "nothing seen yet");
        for _ in 0..200 {
            p.observe_read_phase(Duration::from_micros(2_000));
        }
        let d = p.hedge_delay().as_micros() as u64;
        assert!((7_000..=8_000).contains(&d), "about 4 x 2 ms: {d} µs");
        for _ in 0..200 {
            p.observe_read_phase(Duration::from_secs(5));
        }
        assert_eq!(p.hedge_delay(), Duration::from_micros(MAX_HEDGE_DELAY_US));
        for _ in 0..400 {
            p.observe_read_phase(Duration::from_micros(50));
        }
        assert_eq!(p.hedge_delay(), Duration::from_micros(MIN_HEDGE_DELAY_US));
    }
}
