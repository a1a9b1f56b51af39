//! Audience synchronization rules: membership diffs, retry back-off, run triggers and the
//! member list format of `tandem audiences import`.

use super::ValidationError;
use super::connection::ConnectionState;
use super::time::Timestamp;
use std::collections::BTreeSet;

/// Why a sync run started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The first run of a new connection: it creates (or links) the provider resource.
    Created,
    /// The provider's interval elapsed.
    Scheduled,
    /// An admin activated the connection.
    Activated,
    /// A previous run failed with a retryable error.
    Retry,
}

impl Trigger {
    pub const ALL: [Trigger; 4] = [Self::Created, Self::Scheduled, Self::Activated, Self::Retry];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Scheduled => "scheduled",
            Self::Activated => "activated",
            Self::Retry => "retry",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == value)
    }
}

/// When a connection syncs next, why, and how many runs in a row have failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub next_sync_at: Timestamp,
    pub trigger: Trigger,
    pub consecutive_failures: i64,
}

/// What a run concluded for its connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunVerdict {
    /// Everything was pushed; sync again at `next_sync_at`.
    Synced { next_sync_at: Timestamp },
    /// A retryable failure; retry at `next_sync_at`.
    Retry { next_sync_at: Timestamp },
    /// A permanent failure or too many retryable ones: the connection becomes `failed`.
    Fail { reason: String },
}

/// How a finished run changes its connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    pub schedule: Schedule,
    pub state: ConnectionState,
    /// `Some(new reason)` when the state reason changes (`Some(None)` clears it).
    pub state_reason: Option<Option<String>>,
    /// The run succeeded: `lastSyncedAt` moves.
    pub synced: bool,
}

/// Applies a run's verdict to the connection as it is now (`state`, `current` schedule).
/// The engine moves only `pending -> active | failed` and `active -> failed`, so an admin's
/// concurrent deactivation or failure stands; and when the schedule differs from the one the
/// run was claimed with (`claimed_next_sync_at`), an admin activated the connection meanwhile
/// and that schedule (due now, failures reset) stands too.
pub fn settle(
    state: ConnectionState,
    current: &Schedule,
    claimed_next_sync_at: Timestamp,
    verdict: &RunVerdict,
) -> Settlement {
    let rescheduled = current.next_sync_at != claimed_next_sync_at;
    let mut settlement = Settlement {
        schedule: current.clone(),
        state,
        state_reason: None,
        synced: false,
    };
    match verdict {
        RunVerdict::Synced { next_sync_at } => {
            settlement.synced = true;
            if !rescheduled {
                settlement.schedule = Schedule {
                    next_sync_at: *next_sync_at,
                    trigger: Trigger::Scheduled,
                    consecutive_failures: 0,
                };
            }
            if state == ConnectionState::Pending {
                settlement.state = ConnectionState::Active;
                settlement.state_reason = Some(None);
            }
        }
        RunVerdict::Retry { next_sync_at } if !rescheduled => {
            settlement.schedule = Schedule {
                next_sync_at: *next_sync_at,
                trigger: Trigger::Retry,
                consecutive_failures: current.consecutive_failures + 1,
            };
        }
        RunVerdict::Fail { reason } if !rescheduled => {
            settlement.schedule.trigger = Trigger::Scheduled;
            settlement.schedule.consecutive_failures += 1;
            if matches!(state, ConnectionState::Pending | ConnectionState::Active) {
                settlement.state = ConnectionState::Failed;
                settlement.state_reason = Some(Some(reason.clone()));
            }
        }
        RunVerdict::Retry { .. } | RunVerdict::Fail { .. } => {}
    }
    settlement
}

/// The changes that bring a provider's copy of an audience from `current` to `desired`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberDiff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

impl MemberDiff {
    pub fn between(current: &BTreeSet<String>, desired: &BTreeSet<String>) -> Self {
        Self {
            added: desired.difference(current).cloned().collect(),
            removed: current.difference(desired).cloned().collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }

    pub fn len(&self) -> usize {
        self.added.len() + self.removed.len()
    }
}

/// Exponential back-off with "equal jitter": the delay after the `failures`-th consecutive
/// failure is between half and all of `base * 2^(failures-1)` (capped at `cap`), so that
/// connections failing together do not retry together. `jitter` is a random number in [0, 1).
/// A provider's `Retry-After` is a lower bound.
pub fn backoff_millis(
    failures: u32,
    base_ms: u64,
    cap_ms: u64,
    jitter: f64,
    retry_after_ms: Option<u64>,
) -> u64 {
    let exponent = failures.saturating_sub(1).min(40);
    let full = base_ms.saturating_mul(1u64 << exponent).min(cap_ms);
    let jitter = jitter.clamp(0.0, 1.0);
    let delay = full / 2 + ((full - full / 2) as f64 * jitter) as u64;
    delay.max(retry_after_ms.unwrap_or(0))
}

/// A `Retry-After` value: delay-seconds, or an HTTP-date (`Sun, 06 Nov 1994 08:49:37 GMT`)
/// turned into the time left from `now_ms`. None when it is neither.
pub fn parse_retry_after(value: &str, now_ms: i64) -> Option<u64> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(secs.saturating_mul(1000));
    }
    let at =
        time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc2822).ok()?;
    let at_ms = (at.unix_timestamp_nanos() / 1_000_000) as i64;
    Some(u64::try_from(at_ms - now_ms).unwrap_or(0))
}

/// The longest customer id accepted (the seeds' `externalResourceId` bound).
pub const MAX_CUSTOMER_ID_LEN: usize = 256;

/// A customer id is 1..=256 printable characters without spaces, commas, semicolons or quotes.
pub fn check_customer_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.chars().count() > MAX_CUSTOMER_ID_LEN {
        return Err(format!(
            "a customer id is 1 to {MAX_CUSTOMER_ID_LEN} characters"
        ));
    }
    if let Some(bad) = id
        .chars()
        .find(|c| c.is_control() || c.is_whitespace() || matches!(c, ',' | '"' | ';'))
    {
        return Err(format!(
            "{bad:?} is not allowed in a customer id (one id per line)"
        ));
    }
    Ok(())
}

/// Parses a member list: one customer id per line; blank lines and lines starting with `#` are
/// skipped, surrounding whitespace is trimmed, repeated ids count once. An id must be 1..=256
/// printable characters without spaces, commas or quotes (a CSV with more columns is refused
/// rather than misread).
pub fn parse_member_list(text: &str) -> Result<BTreeSet<String>, ValidationError> {
    let mut members = BTreeSet::new();
    for (index, line) in text.lines().enumerate() {
        let id = line.trim();
        if id.is_empty() || id.starts_with('#') {
            continue;
        }
        check_customer_id(id)
            .map_err(|why| ValidationError::new(format!("line {}", index + 1), why))?;
        members.insert(id.to_owned());
    }
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn diff_adds_the_new_and_removes_the_gone() {
        let d = MemberDiff::between(&set(&["a", "b", "c"]), &set(&["b", "c", "d", "e"]));
        assert_eq!(d.added, vec!["d", "e"]);
        assert_eq!(d.removed, vec!["a"]);
        assert_eq!(d.len(), 3);
        assert!(MemberDiff::between(&set(&["a"]), &set(&["a"])).is_empty());
    }

    #[test]
    fn backoff_grows_to_the_cap_and_honours_retry_after() {
        assert_eq!(backoff_millis(1, 100, 10_000, 0.0, None), 50);
        assert_eq!(backoff_millis(1, 100, 10_000, 0.999_999, None), 99);
        assert_eq!(backoff_millis(3, 100, 10_000, 0.0, None), 200);
        assert_eq!(backoff_millis(60, 100, 10_000, 0.0, None), 5_000);
        assert_eq!(backoff_millis(1, 100, 10_000, 0.0, Some(3_000)), 3_000);
    }

    #[test]
    fn retry_after_takes_seconds_or_an_http_date() {
        assert_eq!(parse_retry_after("120", 0), Some(120_000));
        // 1994-11-06T08:49:37Z
        let at = 784_111_777_000;
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", at - 5_000),
            Some(5_000)
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", at + 1),
            Some(0)
        );
        assert_eq!(parse_retry_after("soon", 0), None);
        assert_eq!(parse_retry_after("-3", 0), None);
    }

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    fn schedule(next: i64, trigger: Trigger, failures: i64) -> Schedule {
        Schedule {
            next_sync_at: at(next),
            trigger,
            consecutive_failures: failures,
        }
    }

    #[test]
    fn a_first_success_activates_and_schedules_the_next_run() {
        let s = settle(
            ConnectionState::Pending,
            &schedule(0, Trigger::Created, 2),
            at(0),
            &RunVerdict::Synced {
                next_sync_at: at(900),
            },
        );
        assert_eq!(s.state, ConnectionState::Active);
        assert_eq!(s.state_reason, Some(None));
        assert!(s.synced);
        assert_eq!(s.schedule, schedule(900, Trigger::Scheduled, 0));
    }

    #[test]
    fn failures_count_up_and_fail_only_the_engines_own_states() {
        let current = schedule(5, Trigger::Scheduled, 1);
        let retry = settle(
            ConnectionState::Active,
            &current,
            at(5),
            &RunVerdict::Retry {
                next_sync_at: at(50),
            },
        );
        assert_eq!(retry.schedule, schedule(50, Trigger::Retry, 2));
        assert_eq!(retry.state, ConnectionState::Active);
        assert!(!retry.synced);
        let fail = RunVerdict::Fail {
            reason: "401".into(),
        };
        let failed = settle(ConnectionState::Active, &current, at(5), &fail);
        assert_eq!(failed.state, ConnectionState::Failed);
        assert_eq!(failed.state_reason, Some(Some("401".into())));
        assert_eq!(failed.schedule.consecutive_failures, 2);
        // An admin deactivated it during the run: that stands.
        let kept = settle(ConnectionState::Inactive, &current, at(5), &fail);
        assert_eq!(kept.state, ConnectionState::Inactive);
        assert_eq!(kept.state_reason, None);
    }

    #[test]
    fn an_activation_during_the_run_keeps_its_immediate_resync() {
        let activated = schedule(7, Trigger::Activated, 0);
        for verdict in [
            RunVerdict::Synced {
                next_sync_at: at(900),
            },
            RunVerdict::Retry {
                next_sync_at: at(50),
            },
            RunVerdict::Fail { reason: "x".into() },
        ] {
            let s = settle(ConnectionState::Active, &activated, at(5), &verdict);
            assert_eq!(s.schedule, activated, "{verdict:?}");
            assert_eq!(s.state, ConnectionState::Active, "{verdict:?}");
        }
    }

    #[test]
    fn triggers_round_trip() {
        for t in Trigger::ALL {
            assert_eq!(Trigger::parse(t.as_str()), Some(t));
        }
        assert_eq!(Trigger::parse("manual"), None);
    }

    #[test]
    fn member_lists_skip_blanks_and_comments_and_name_the_bad_line() {
        let members = parse_member_list("# customers\nc-1\r\n\n  c-2  \nc-1\n").unwrap();
        assert_eq!(members, set(&["c-1", "c-2"]));
        assert_eq!(
            parse_member_list("c-1\nc-2,Smith\n").unwrap_err().field,
            "line 2"
        );
        assert_eq!(
            parse_member_list(&"x".repeat(257)).unwrap_err().field,
            "line 1"
        );
        assert!(parse_member_list("").unwrap().is_empty());
    }

    proptest! {
        #[test]
        fn applying_a_diff_reaches_the_desired_set(
            current in proptest::collection::btree_set("[a-e]{1,2}", 0..20),
            desired in proptest::collection::btree_set("[a-e]{1,2}", 0..20),
        ) {
            let d = MemberDiff::between(&current, &desired);
            let mut applied = current.clone();
            for r in &d.removed {
                prop_assert!(applied.remove(r));
            }
            for a in &d.added {
                prop_assert!(applied.insert(a.clone()));
            }
            prop_assert_eq!(applied, desired);
        }

        #[test]
        fn backoff_stays_within_its_bounds(failures in 1u32..100, base in 1u64..10_000, jitter in 0.0f64..1.0) {
            let cap = base * 50;
            let d = backoff_millis(failures, base, cap, jitter, None);
            prop_assert!(d <= cap);
            prop_assert!(d >= base.min(cap) / 2);
        }

        #[test]
        fn parsed_member_lists_round_trip(ids in proptest::collection::btree_set("[-_.:a-zA-Z0-9]{1,40}", 0..50)) {
            let text: String = ids.iter().map(|id| format!("{id}\n")).collect();
            prop_assert_eq!(parse_member_list(&text).unwrap(), ids);
        }

        #[test]
        fn member_list_parsing_never_panics(text in "\\PC{0,200}") {
            let _ = parse_member_list(&text);
        }
    }
}
