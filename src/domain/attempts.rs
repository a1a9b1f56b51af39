//! Counting verification attempts per client address: more than `max_attempts` in `window`
//! blocks the address for `block` (the rule behind verifyInvitation's 429).

use std::net::{IpAddr, Ipv6Addr};

/// The key an address's attempts are counted under. An IPv6 address counts by its /64, the
/// block one subscriber is usually given, so that walking through the addresses of one's own
/// network buys no more attempts; an IPv4-mapped IPv6 address counts as its IPv4 address.
pub fn client_key(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let network = u128::from(v6) & (u128::MAX << 64);
            format!("{}/64", Ipv6Addr::from(network))
        }
    }
}

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
    /// The store applies this rule in one statement (see `store::attempts`); this is its
    /// reference, which the store's tests compare it with.
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

    /// The counts a client's first attempt at `now_ms` leaves.
    pub fn first(limit: AttemptLimit, now_ms: i64) -> Self {
        let mut attempts = Self::default();
        // The verdict is read back from the stored row (`verdict`).
        let _first_verdict = attempts.try_attempt(limit, now_ms);
        attempts
    }

    /// The verdict `try_attempt` gave, read from the counts it left: an attempt that was
    /// counted leaves at least one, a refused one none (blocking resets the count, and nothing
    /// is counted while blocked).
    pub fn verdict(&self, now_ms: i64) -> Result<(), u64> {
        if self.count > 0 {
            Ok(())
        } else {
            Err(secs_until(self.blocked_until_ms, now_ms))
        }
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
    fn the_verdict_can_be_read_from_the_counts_left() {
        let mut a = Attempts::default();
        for now in [0, 1_000, 2_000, 3_000, 50_000, 400_000, 400_001, 460_000] {
            let verdict = a.try_attempt(LIMIT, now);
            assert_eq!(a.verdict(now), verdict, "at {now}");
        }
    }

    #[test]
    fn ipv6_addresses_count_by_their_64_and_mapped_ipv4_as_ipv4() {
        let key = |text: &str| client_key(text.parse().unwrap());
        assert_eq!(key("203.0.113.9"), "203.0.113.9");
        assert_eq!(key("::ffff:203.0.113.9"), "203.0.113.9");
        assert_eq!(key("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64");
        assert_eq!(key("2001:db8:1:2:ffff:ffff:ffff:ffff"), "2001:db8:1:2::/64");
        assert_eq!(key("2001:db8:1:3::"), "2001:db8:1:3::/64");
        assert_eq!(key("::1"), "::/64");
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
