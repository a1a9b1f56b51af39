//! Counting verification attempts per client address: more than `max_attempts` in `window`
//! blocks the address for `block` (the rule behind verifyInvitation's 429).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptLimit {
    pub max_attempts: u32,
    pub window_ms: i64,
    pub block_ms: i64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Attempts {
    pub window_start_ms: i64,
    pub count: u32,
    pub blocked_until_ms: i64,
}

impl Attempts {
    /// Counts one attempt at `now_ms`, or refuses it with the seconds until the block ends.
    pub fn try_attempt(&mut self, limit: AttemptLimit, now_ms: i64) -> Result<(), u64> {
        if now_ms < self.blocked_until_ms {
            return Err(secs_until(self.blocked_until_ms, now_ms));
        }
        if now_ms - self.window_start_ms >= limit.window_ms {
            self.window_start_ms = now_ms;
            self.count = 0;
        }
        if self.count >= limit.max_attempts {
            self.blocked_until_ms = now_ms + limit.block_ms;
            self.count = 0;
            return Err(secs_until(self.blocked_until_ms, now_ms));
        }
        self.count += 1;
        Ok(())
    }
}

fn secs_until(until_ms: i64, now_ms: i64) -> u64 {
    (((until_ms - now_ms).max(0) + 999) / 1000).max(1) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: AttemptLimit = AttemptLimit {
        max_attempts: 3,
        window_ms: 60_000,
        block_ms: 300_000,
    };

    #[test]
    fn blocks_after_the_threshold_for_the_block_period() {
        let mut a = Attempts::default();
        for _ in 0..3 {
            assert!(a.try_attempt(LIMIT, 1_000).is_ok());
        }
        assert_eq!(a.try_attempt(LIMIT, 1_000), Err(300));
        assert_eq!(a.try_attempt(LIMIT, 100_000), Err(201), "still blocked");
        assert!(a.try_attempt(LIMIT, 301_000).is_ok(), "block over");
    }

    #[test]
    fn a_new_window_starts_afresh() {
        let mut a = Attempts::default();
        for _ in 0..3 {
            a.try_attempt(LIMIT, 0).unwrap();
        }
        assert!(a.try_attempt(LIMIT, 60_000).is_ok());
    }
}
