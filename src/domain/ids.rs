//! Resource identifiers as the seeds define them: `^[-_:.~$a-zA-Z0-9]{6,48}$`.

use super::ValidationError;
use std::fmt;

/// An opaque resource id that matches the seeds' `resourceId` pattern. It cannot hold anything else.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceId(String);

impl ResourceId {
    pub const MIN_LEN: usize = 6;
    pub const MAX_LEN: usize = 48;
    pub const PATTERN: &'static str = "^[-_:.~$a-zA-Z0-9]{6,48}$";

    pub fn parse(field: &str, value: &str) -> Result<Self, ValidationError> {
        if Self::is_valid(value) {
            Ok(Self(value.to_owned()))
        } else {
            Err(ValidationError::new(
                field,
                format!("must match the pattern {}", Self::PATTERN),
            ))
        }
    }

    pub fn is_valid(value: &str) -> bool {
        (Self::MIN_LEN..=Self::MAX_LEN).contains(&value.len())
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_:.~$".contains(&b))
    }

    /// A fresh id: a UUID v7 (36 characters, inside the pattern), so ids sort in creation order
    /// even within one millisecond.
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }

    /// For values read back from storage, which only ever holds validated ids.
    pub fn from_trusted(value: String) -> Self {
        debug_assert!(Self::is_valid(&value), "stored id {value:?} is invalid");
        Self(value)
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_the_seed_examples() {
        for id in ["0399abed-fd3d", "590c0c441f3241de9526", "a:b.c~d$e_f"] {
            assert!(ResourceId::parse("id", id).is_ok(), "{id}");
        }
    }

    #[test]
    fn rejects_short_long_and_foreign_characters() {
        for id in ["abc", &"a".repeat(49), "abc def", "abcdef/", "ábcdefg", ""] {
            let err = ResourceId::parse("customerAudienceConnectionId", id).unwrap_err();
            assert_eq!(err.field, "customerAudienceConnectionId");
        }
    }

    #[test]
    fn generated_ids_are_valid() {
        assert!(ResourceId::is_valid(ResourceId::generate().as_str()));
    }

    proptest! {
        #[test]
        fn parse_agrees_with_the_pattern(s in "\\PC{0,60}") {
            let by_hand = (6..=48).contains(&s.len())
                && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_:.~$".contains(c));
            prop_assert_eq!(ResourceId::is_valid(&s), by_hand);
        }

        #[test]
        fn pattern_strings_are_accepted(s in "[-_:.~$a-zA-Z0-9]{6,48}") {
            prop_assert!(ResourceId::parse("id", &s).is_ok());
        }
    }
}
