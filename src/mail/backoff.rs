//! When to try a failed message again: exponential backoff with jitter, capped.

use std::time::Duration;

/// The delay before the next attempt after `failures` failed ones (1 for the first failure).
///
/// The ceiling doubles per failure from `min` up to `max`; the delay is drawn from the upper half
/// of it (`jitter` in `[0, 1)`), so that messages that failed together (a relay outage) do not
/// all come back in the same instant, yet none waits longer than `max`.
pub fn retry_delay(failures: u32, min: Duration, max: Duration, jitter: f64) -> Duration {
    let doublings = failures.saturating_sub(1).min(31);
    let ceiling = min.saturating_mul(1u32 << doublings).min(max).as_millis() as u64;
    let floor = ceiling / 2;
    // Truncation keeps the result at or below the ceiling.
    let spread = ((ceiling - floor) as f64 * jitter.clamp(0.0, 1.0)) as u64;
    Duration::from_millis(floor + spread)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIN: Duration = Duration::from_secs(10);
    const MAX: Duration = Duration::from_secs(3600);

    #[test]
    fn doubles_per_failure_up_to_the_cap() {
        assert_eq!(retry_delay(1, MIN, MAX, 1.0), MIN);
        assert_eq!(retry_delay(1, MIN, MAX, 0.0), MIN / 2);
        assert_eq!(retry_delay(2, MIN, MAX, 1.0), MIN * 2);
        assert_eq!(retry_delay(4, MIN, MAX, 1.0), MIN * 8);
        assert_eq!(retry_delay(20, MIN, MAX, 1.0), MAX);
        assert_eq!(retry_delay(u32::MAX, MIN, MAX, 0.0), MAX / 2);
    }

    proptest! {
        #[test]
        fn stays_within_half_the_ceiling_and_the_cap(
            failures in 0u32..200,
            jitter in 0.0f64..1.0,
            min_ms in 1u64..100_000,
            extra_ms in 0u64..10_000_000,
        ) {
            let (min, max) = (Duration::from_millis(min_ms), Duration::from_millis(min_ms + extra_ms));
            let delay = retry_delay(failures, min, max, jitter);
            prop_assert!(delay <= max);
            prop_assert!(delay.as_millis() >= min.as_millis() / 2);
            let ceiling = min.saturating_mul(1u32 << failures.saturating_sub(1).min(31)).min(max);
            prop_assert!(
                delay.as_millis() >= ceiling.as_millis() / 2 && delay <= ceiling,
                "{delay:?} {ceiling:?}"
            );
        }

        #[test]
        fn never_shrinks_as_failures_grow(failures in 1u32..100) {
            prop_assert!(retry_delay(failures + 1, MIN, MAX, 0.5) >= retry_delay(failures, MIN, MAX, 0.5));
        }
    }
}
