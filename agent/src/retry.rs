//! The one backoff of the crate: every control-plane retry (registration, mDNS, swarm
//! join, join acknowledgement, delivery, clock sync, engine connection) waits through a
//! [`Backoff`], capped exponential with "equal jitter" so that a rack of boards that lost
//! their manager together do not knock on it together.

use std::time::Duration;

/// "Equal jitter" backoff: half of `min(cap, base * 2^attempt)` fixed, the other half
/// scaled by `unit` (a random number in `[0, 1)`), so retries of many boards spread out.
pub fn backoff_delay(attempt: u32, base: Duration, cap: Duration, unit: f64) -> Duration {
    let exp = base
        .saturating_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
        .min(cap);
    let half = exp / 2;
    half + half.mul_f64(unit.clamp(0.0, 1.0))
}

/// Consecutive failures of one operation and the delay before its next attempt.
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Backoff {
            base,
            cap: cap.max(base),
            failures: 0,
        }
    }

    /// Counts a failure and returns how long to wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let d = backoff_delay(self.failures, self.base, self.cap, rand::random());
        self.failures = self.failures.saturating_add(1);
        d
    }

    /// Counts a failure and sleeps for the delay; returns the delay slept.
    pub async fn wait(&mut self) -> Duration {
        let d = self.next_delay();
        tokio::time::sleep(d).await;
        d
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// A success: the next failure waits from `base` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Changes the cap (the delivery follows the report interval).
    pub fn set_cap(&mut self, cap: Duration) {
        self.cap = cap.max(self.base);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_and_jitters_within_half() {
        let b = Duration::from_secs(1);
        let cap = Duration::from_secs(60);
        assert_eq!(backoff_delay(0, b, cap, 0.0), Duration::from_millis(500));
        assert_eq!(backoff_delay(0, b, cap, 1.0), Duration::from_secs(1));
        assert_eq!(backoff_delay(3, b, cap, 0.0), Duration::from_secs(4));
        assert_eq!(backoff_delay(10, b, cap, 1.0), cap);
        assert_eq!(backoff_delay(200, b, cap, 0.5), Duration::from_secs(45));
        let d = backoff_delay(4, b, cap, 0.37);
        assert!(
            d >= Duration::from_secs(8) && d <= Duration::from_secs(16),
            "{d:?}"
        );
    }

    #[test]
    fn a_backoff_counts_failures_until_reset() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        for _ in 0..10 {
            assert!(b.next_delay() <= Duration::from_secs(1));
        }
        assert_eq!(b.failures(), 11);
        assert!(b.next_delay() >= Duration::from_millis(500), "at the cap");
        b.reset();
        assert_eq!(b.failures(), 0);
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
