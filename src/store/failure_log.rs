//! How a streak of failing writes is logged: its first failure at once,
//! then one summary line per [`SUMMARY_INTERVAL_MS`] while it lasts, and
//! one line when writes succeed again.
//!
//! Why: when the disk fills, every write batch fails, thousands a second
//! under load. One ERROR line each (as before) buried the cause in noise
//! and, on the same full disk, grew the log file too. An operator needs the
//! first error, how long it lasted, and when it ended.
//!
//! Pure: the caller passes the time in and logs what it is told to.

use std::time::{Duration, Instant};

/// While failures go on, at most one summary line per this interval.
pub const SUMMARY_INTERVAL_MS: u64 = 10_000;

/// What to log for a failure.
#[derive(Debug, PartialEq, Eq)]
pub enum OnFailure {
    /// The first of a streak: log it with its error.
    First,
    /// A summary is due: this many failed since the last line.
    Summary { failed_since_last: u64 },
    /// Counted, not logged.
    Quiet,
}

/// A streak that ended: how many writes failed in it, over how long.
#[derive(Debug, PartialEq, Eq)]
pub struct Recovered {
    pub failed: u64,
    pub lasted: Duration,
}

#[derive(Debug, Default)]
pub struct FailureLog {
    streak: Option<Streak>,
}

#[derive(Debug)]
struct Streak {
    began: Instant,
    failed: u64,
    last_line: Instant,
    failed_since_last: u64,
}

impl FailureLog {
    pub fn failed(&mut self, now: Instant) -> OnFailure {
        let Some(s) = &mut self.streak else {
            self.streak = Some(Streak { began: now, failed: 1, last_line: now, failed_since_last: 0 });
            return OnFailure::First;
        };
        s.failed += 1;
        s.failed_since_last += 1;
        if now.saturating_duration_since(s.last_line) < Duration::from_millis(SUMMARY_INTERVAL_MS) {
            return OnFailure::Quiet;
        }
        s.last_line = now;
        OnFailure::Summary { failed_since_last: std::mem::take(&mut s.failed_since_last) }
    }

    /// A write succeeded: `Some` if it ended a streak.
    pub fn succeeded(&mut self, now: Instant) -> Option<Recovered> {
        let s = self.streak.take()?;
        Some(Recovered { failed: s.failed, lasted: now.saturating_duration_since(s.began) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streak_logs_its_first_failure_then_one_summary_per_interval_then_its_end() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut log = FailureLog::default();
        assert_eq!(log.succeeded(t0), None, "no streak, nothing to report");
        assert_eq!(log.failed(ms(0)), OnFailure::First);
        for i in 1..1000 {
            assert_eq!(log.failed(ms(i)), OnFailure::Quiet);
        }
        // 999 quiet ones, then the one that makes the summary due.
        assert_eq!(log.failed(ms(SUMMARY_INTERVAL_MS)), OnFailure::Summary { failed_since_last: 1000 });
        assert_eq!(log.failed(ms(SUMMARY_INTERVAL_MS + 1)), OnFailure::Quiet);
        assert_eq!(log.failed(ms(2 * SUMMARY_INTERVAL_MS)), OnFailure::Summary { failed_since_last: 2 });
        assert_eq!(
            log.succeeded(ms(2 * SUMMARY_INTERVAL_MS + 5)),
            Some(Recovered { failed: 1003, lasted: Duration::from_millis(2 * SUMMARY_INTERVAL_MS + 5) })
        );
        assert_eq!(log.succeeded(ms(30_000)), None);
        // The next failure starts a new streak.
        assert_eq!(log.failed(ms(40_000)), OnFailure::First);
    }
}
