//! The per-client rate limit: one token bucket per (API key client, token subject).

use crate::domain::rate_limit::{Limit, TokenBucket};
use crate::domain::time::Timestamp;
use std::collections::HashMap;
use std::sync::Mutex;

pub struct RateLimiter {
    limit: Option<Limit>,
    buckets: Mutex<HashMap<String, TokenBucket>>,
}

/// Past this many tracked clients, buckets that have refilled are forgotten.
const PRUNE_ABOVE: usize = 10_000;

impl RateLimiter {
    /// `per_second == 0` disables the limit.
    pub fn new(per_second: f64, burst: u32) -> Self {
        let limit = (per_second > 0.0).then(|| Limit {
            per_second,
            burst: f64::from(burst.max(1)),
        });
        Self {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from the client's allowance, or says how long to wait.
    pub fn check(&self, client: &str) -> Result<(), u64> {
        let Some(limit) = self.limit else {
            return Ok(());
        };
        let now = Timestamp::now().millis();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > PRUNE_ABOVE {
            buckets.retain(|_, b| !b.is_idle(limit, now));
        }
        if let Some(bucket) = buckets.get_mut(client) {
            return bucket.try_take(limit, now);
        }
        let mut bucket = TokenBucket::full(limit, now);
        let result = bucket.try_take(limit, now);
        buckets.insert(client.to_owned(), bucket);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_have_separate_allowances() {
        let limiter = RateLimiter::new(1.0, 2);
        assert!(limiter.check("a").is_ok());
        assert!(limiter.check("a").is_ok());
        assert!(limiter.check("a").is_err());
        assert!(limiter.check("b").is_ok());
    }

    #[test]
    fn zero_disables() {
        let limiter = RateLimiter::new(0.0, 1);
        for _ in 0..100 {
            assert!(limiter.check("a").is_ok());
        }
    }
}
