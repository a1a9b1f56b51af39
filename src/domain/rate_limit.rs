//! A token bucket: the rule behind the per-client rate limit (429 with `Retry-After`).

/// Tokens refill continuously at `per_second` up to `burst`; each request takes one.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: f64,
    updated_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    pub per_second: f64,
    pub burst: f64,
}

impl TokenBucket {
    pub fn full(limit: Limit, now_ms: i64) -> Self {
        Self {
            tokens: limit.burst,
            updated_ms: now_ms,
        }
    }

    /// Takes a token, or says how many whole seconds until one is available.
    pub fn try_take(&mut self, limit: Limit, now_ms: i64) -> Result<(), u64> {
        let elapsed = (now_ms - self.updated_ms).max(0) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * limit.per_second).min(limit.burst);
        self.updated_ms = now_ms.max(self.updated_ms);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - self.tokens) / limit.per_second;
            Err(wait.ceil().max(1.0) as u64)
        }
    }

    /// A bucket that has refilled completely carries no state worth keeping.
    pub fn is_idle(&self, limit: Limit, now_ms: i64) -> bool {
        let elapsed = (now_ms - self.updated_ms).max(0) as f64 / 1000.0;
        self.tokens + elapsed * limit.per_second >= limit.burst
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Limit = Limit {
        per_second: 2.0,
        burst: 3.0,
    };

    #[test]
    fn allows_a_burst_then_refuses_with_a_retry_after() {
        let mut b = TokenBucket::full(LIMIT, 0);
        for _ in 0..3 {
            assert!(b.try_take(LIMIT, 0).is_ok());
        }
        assert_eq!(b.try_take(LIMIT, 0), Err(1));
    }

    #[test]
    fn refills_over_time_up_to_the_burst() {
        let mut b = TokenBucket::full(LIMIT, 0);
        for _ in 0..3 {
            b.try_take(LIMIT, 0).unwrap();
        }
        assert!(
            b.try_take(LIMIT, 500).is_ok(),
            "half a second refills one token"
        );
        assert!(b.try_take(LIMIT, 500).is_err());
        assert!(b.is_idle(LIMIT, 60_000));
        for _ in 0..3 {
            assert!(b.try_take(LIMIT, 60_000).is_ok());
        }
        assert!(
            b.try_take(LIMIT, 60_000).is_err(),
            "never more than the burst"
        );
    }

    #[test]
    fn slow_rates_ask_for_a_longer_wait() {
        let slow = Limit {
            per_second: 0.1,
            burst: 1.0,
        };
        let mut b = TokenBucket::full(slow, 0);
        b.try_take(slow, 0).unwrap();
        assert_eq!(b.try_take(slow, 0), Err(10));
    }
}
