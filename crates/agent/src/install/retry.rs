//! Backoff between retried requests: exponential, capped, with jitter so a fleet of
//! agents that lost the same image server does not come back in lock-step.

use std::time::Duration;

/// How often and how patiently network failures are retried.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Consecutive failures without any new byte before giving up.
    pub max_attempts: u32,
    /// Delay before the first retry (before jitter).
    pub base: Duration,
    /// Upper bound of any delay.
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            base: Duration::from_millis(500),
            max: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// Delay before retry number `attempt` (1-based), given `unit` drawn uniformly from
    /// [0, 1): half of the exponential step is fixed, the other half random ("equal
    /// jitter"), so the delay is never zero and never above `max`.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let step = exp.min(self.max);
        let half = step / 2;
        half + half.mul_f64(unit.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_exponentially_with_bounded_jitter() {
        let p = RetryPolicy {
            max_attempts: 5,
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        assert_eq!(p.delay(1, 0.0), Duration::from_millis(50));
        assert_eq!(p.delay(1, 1.0), Duration::from_millis(100));
        assert_eq!(p.delay(3, 0.0), Duration::from_millis(200));
        assert_eq!(p.delay(3, 0.5), Duration::from_millis(300));
        assert_eq!(p.delay(30, 1.0), Duration::from_secs(1), "capped at max");
        assert_eq!(
            p.delay(30, 0.0),
            Duration::from_millis(500),
            "never below half the cap"
        );
    }
}
