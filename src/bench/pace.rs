//! [`Pacer`]: spaces one client's requests at a fixed interval, for
//! `kv bench --rate` (a soak at a fraction of peak instead of flat out).
//!
//! The client stays closed-loop: it never has more than one request in
//! flight, and a request slower than the interval delays the next one
//! instead of queueing a burst to catch up (so a stall is not followed by a
//! spike the system never saw in real use). Latencies are measured from
//! the send, as without pacing. Pure: the caller passes the time in.

use std::time::Duration;

use tokio::time::Instant;

/// Smallest interval a client is paced at (1 µs).
pub const MIN_INTERVAL: Duration = Duration::from_micros(1);

#[derive(Clone, Debug)]
pub struct Pacer {
    interval: Duration,
    next: Option<Instant>,
}

impl Pacer {
    pub fn new(interval: Duration) -> Pacer {
        assert!(interval >= MIN_INTERVAL, "pacing interval {interval:?} below {MIN_INTERVAL:?}");
        Pacer { interval, next: None }
    }

    /// The interval of a client among `clients` sharing `rate_per_sec`
    /// requests per second evenly.
    pub fn interval_for(rate_per_sec: f64, clients: usize) -> Duration {
        assert!(rate_per_sec > 0.0 && rate_per_sec.is_finite(), "rate {rate_per_sec} must be positive");
        Duration::from_secs_f64(clients as f64 / rate_per_sec).max(MIN_INTERVAL)
    }

    /// Called before each request at `now`: when to send it (`None`: now).
    /// The slot after it is one interval later, or one interval after `now`
    /// if the client is running late (no catch-up bursts).
    pub fn before_send(&mut self, now: Instant) -> Option<Instant> {
        let slot = self.next.filter(|&t| t > now);
        let sent_at = slot.unwrap_or(now);
        self.next = Some(sent_at + self.interval);
        slot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spaces_requests_one_interval_apart() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut p = Pacer::new(ms(10));
        assert_eq!(p.before_send(t0), None, "the first request goes at once");
        // Answered after 2 ms: wait for the slot at 10 ms.
        assert_eq!(p.before_send(t0 + ms(2)), Some(t0 + ms(10)));
        // Answered after 3 ms: the next slot is 20 ms.
        assert_eq!(p.before_send(t0 + ms(13)), Some(t0 + ms(20)));
    }

    #[test]
    fn a_slow_request_delays_the_next_instead_of_a_burst() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut p = Pacer::new(ms(10));
        p.before_send(t0);
        // The answer took 35 ms (three slots missed): send now, and the
        // one after a full interval later, not three at once.
        assert_eq!(p.before_send(t0 + ms(35)), None);
        assert_eq!(p.before_send(t0 + ms(36)), Some(t0 + ms(45)));
    }

    #[test]
    fn the_rate_is_shared_evenly_by_the_clients() {
        assert_eq!(Pacer::interval_for(1000.0, 4), Duration::from_millis(4));
        assert_eq!(Pacer::interval_for(1e12, 1), MIN_INTERVAL, "clamped to the smallest interval");
    }
}
