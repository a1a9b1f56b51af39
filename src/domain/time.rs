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
        // Lists show three timestamps per item; the `time` crate's formatter interprets its
        // format description on every call, several times the cost of writing the digits.
        if let Some(text) = self.four_digit_year_rfc3339() {
            return text.as_str().to_owned();
        }
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000)
            .ok()
            .and_then(|t| t.format(WIRE_FORMAT).ok())
            .unwrap_or_else(|| "1970-01-01T00:00:00.000Z".to_owned())
    }

    /// Years 0000-9999, with the civil date from Howard Hinnant's `civil_from_days`; `None`
    /// outside them. On the stack, so that a response can show it without allocating.
    fn four_digit_year_rfc3339(self) -> Option<Rfc3339Text> {
        if !(MIN_FOUR_DIGIT_YEAR..=MAX_FOUR_DIGIT_YEAR).contains(&self.0) {
            return None;
        }
        let days = self.0.div_euclid(86_400_000);
        let ms_of_day = self.0.rem_euclid(86_400_000);
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let day_of_era = z.rem_euclid(146_097);
        let year_of_era =
            (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
        let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
        let mp = (5 * day_of_year + 2) / 153;
        let day = day_of_year - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = year_of_era + era * 400 + i64::from(month <= 2);
        let mut out = [0u8; 24];
        let mut put = |at: usize, value: i64, width: usize| {
            let mut v = value;
            for i in (at..at + width).rev() {
                out[i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, year, 4);
        put(5, month, 2);
        put(8, day, 2);
        put(11, ms_of_day / 3_600_000, 2);
        put(14, ms_of_day / 60_000 % 60, 2);
        put(17, ms_of_day / 1000 % 60, 2);
        put(20, ms_of_day % 1000, 3);
        for (at, separator) in [
            (4, b'-'),
            (7, b'-'),
            (10, b'T'),
            (13, b':'),
            (16, b':'),
            (19, b'.'),
            (23, b'Z'),
        ] {
            out[at] = separator;
        }
        Some(Rfc3339Text(out))
    }
}

/// A timestamp of years 0000-9999 as its 24 ASCII characters.
struct Rfc3339Text([u8; 24]);

impl Rfc3339Text {
    fn as_str(&self) -> &str {
        // Only ASCII digits and separators are ever written into it.
        std::str::from_utf8(&self.0).expect("an RFC 3339 timestamp is ASCII")
    }
}

/// 0000-01-01T00:00:00.000Z and 9999-12-31T23:59:59.999Z in Unix milliseconds.
const MIN_FOUR_DIGIT_YEAR: i64 = -62_167_219_200_000;
const MAX_FOUR_DIGIT_YEAR: i64 = 253_402_300_799_999;

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.four_digit_year_rfc3339() {
            Some(text) => s.serialize_str(text.as_str()),
            None => s.serialize_str(&self.to_rfc3339()),
        }
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

    /// The `time` crate's rendering of the same instant, which the fast path must match.
    fn formatted_by_time(ms: i64) -> String {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .unwrap()
            .format(WIRE_FORMAT)
            .unwrap()
    }

    #[test]
    fn the_four_digit_year_range_ends_where_its_constants_say() {
        assert_eq!(
            formatted_by_time(MIN_FOUR_DIGIT_YEAR),
            "0000-01-01T00:00:00.000Z"
        );
        assert_eq!(
            formatted_by_time(MAX_FOUR_DIGIT_YEAR),
            "9999-12-31T23:59:59.999Z"
        );
        for ms in [
            MIN_FOUR_DIGIT_YEAR,
            MAX_FOUR_DIGIT_YEAR,
            -1,
            951_782_400_000,
            4_107_542_400_000,
        ] {
            assert_eq!(
                Timestamp::from_millis(ms).to_rfc3339(),
                formatted_by_time(ms),
                "{ms}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn the_fast_formatter_agrees_with_the_time_crate(
            ms in MIN_FOUR_DIGIT_YEAR..=MAX_FOUR_DIGIT_YEAR
        ) {
            proptest::prop_assert_eq!(Timestamp::from_millis(ms).to_rfc3339(), formatted_by_time(ms));
        }

        /// The wire form (written from the stack) is the text form, in and beyond 0000-9999.
        #[test]
        fn serialized_as_its_rfc3339_text(
            ms in proptest::prop_oneof![
                MIN_FOUR_DIGIT_YEAR..=MAX_FOUR_DIGIT_YEAR,
                proptest::num::i64::ANY
            ]
        ) {
            let t = Timestamp::from_millis(ms);
            proptest::prop_assert_eq!(
                serde_json::to_string(&t).unwrap(),
                format!("\"{}\"", t.to_rfc3339())
            );
        }
    }

    #[test]
    fn arithmetic() {
        let t = Timestamp::from_millis(1000);
        assert_eq!(t.plus_millis(500).millis(), 1500);
        assert_eq!(t.plus_days(1).millis(), 1000 + 86_400_000);
    }
}
