//! Timestamps: stored as milliseconds since the Unix epoch, shown as RFC 3339 UTC with milliseconds.

use std::fmt;
use time::{OffsetDateTime, format_description::FormatItem, macros::format_description};

const WIRE_FORMAT: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// An instant with millisecond precision, e.g. `2024-09-28T10:31:41.375Z` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub fn now() -> Self {
        Self((OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64)
    }

    pub fn from_millis(ms: i64) -> Self {
        Self(ms)
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    pub fn plus_millis(self, ms: i64) -> Self {
        Self(self.0.saturating_add(ms))
    }

    pub fn plus_days(self, days: i64) -> Self {
        self.plus_millis(days.saturating_mul(86_400_000))
    }

    pub fn to_rfc3339(self) -> String {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000)
            .ok()
            .and_then(|t| t.format(WIRE_FORMAT).ok())
            .unwrap_or_else(|| "1970-01-01T00:00:00.000Z".to_owned())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_the_seeds() {
        // 2024-09-28T10:31:41.375Z
        let t = Timestamp::from_millis(1_727_519_501_375);
        assert_eq!(t.to_rfc3339(), "2024-09-28T10:31:41.375Z");
        assert_eq!(
            Timestamp::from_millis(0).to_rfc3339(),
            "1970-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn length_is_inside_the_seed_bounds() {
        let s = Timestamp::now().to_rfc3339();
        assert!((20..=30).contains(&s.len()), "{s}");
    }

    #[test]
    fn arithmetic() {
        let t = Timestamp::from_millis(1000);
        assert_eq!(t.plus_millis(500).millis(), 1500);
        assert_eq!(t.plus_days(1).millis(), 1000 + 86_400_000);
    }
}
