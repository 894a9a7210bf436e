//! Exponential backoff with full jitter: the delay before retry `n` is uniform in `[0, min(cap, base·2^(n-1))]`.

use std::time::Duration;

/// Backoff settings of a channel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Backoff {
    /// Upper bound of the first retry's delay.
    pub(crate) base: Duration,
    /// Largest upper bound.
    pub(crate) cap: Duration,
}

impl Backoff {
    /// The upper bound of the delay after `attempt` failed attempts (1-based): `min(cap, base·2^(attempt-1))`.
    pub(crate) fn upper(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(62);
        self.base
            .checked_mul(1u32.checked_shl(exp.min(31)).unwrap_or(u32::MAX))
            .map_or(self.cap, |d| d.min(self.cap))
    }

    /// The jittered delay: `upper(attempt) · unit`, where `unit` is uniform in `[0, 1]`.
    pub(crate) fn delay(&self, attempt: u32, unit: f64) -> Duration {
        self.upper(attempt).mul_f64(unit.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const B: Backoff = Backoff {
        base: Duration::from_secs(1),
        cap: Duration::from_secs(3600),
    };

    #[test]
    fn doubles_then_caps() {
        assert_eq!(B.upper(1), Duration::from_secs(1));
        assert_eq!(B.upper(2), Duration::from_secs(2));
        assert_eq!(B.upper(5), Duration::from_secs(16));
        assert_eq!(B.upper(13), Duration::from_secs(3600));
        assert_eq!(B.upper(u32::MAX), Duration::from_secs(3600));
        assert_eq!(B.delay(3, 0.5), Duration::from_secs(2));
    }

    proptest! {
        #[test]
        fn delay_within_zero_and_cap(attempt in 0u32..1000, unit in 0.0f64..=1.0, base_ms in 1u64..10_000, extra_ms in 0u64..10_000_000) {
            let b = Backoff { base: Duration::from_millis(base_ms), cap: Duration::from_millis(base_ms + extra_ms) };
            let d = b.delay(attempt, unit);
            prop_assert!(d <= b.cap);
        }

        #[test]
        fn upper_bound_never_decreases(attempt in 0u32..1000, base_ms in 1u64..10_000, extra_ms in 0u64..10_000_000) {
            let b = Backoff { base: Duration::from_millis(base_ms), cap: Duration::from_millis(base_ms + extra_ms) };
            prop_assert!(b.upper(attempt) <= b.upper(attempt + 1));
        }
    }
}
