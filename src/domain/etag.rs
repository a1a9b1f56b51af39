//! Entity tags and the conditional request headers `If-Match` / `If-None-Match`.
//!
//! tandem issues strong tags derived from a resource's revision counter. The seeds allow clients to
//! send a tag with or without its surrounding quotes, and weak tags (`W/"..."`).

use super::ValidationError;

/// A strong entity tag for a resource revision, e.g. `"r7"`.
pub fn for_revision(revision: i64) -> String {
    format!("\"r{revision}\"")
}

/// One parsed tag from a conditional header.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tag<'a> {
    Any,
    Strong(&'a str),
    Weak(&'a str),
}

/// A validated `If-Match` or `If-None-Match` header value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition(String);

impl Condition {
    /// Parses a header value by the seeds' `entityTag` rules (3..=512 printable ASCII, no spaces
    /// except between list members). A comma-separated list is accepted as HTTP allows.
    pub fn parse(header: &str, value: &str) -> Result<Self, ValidationError> {
        let invalid = || ValidationError::new(header, "is not a valid entity tag");
        if !(1..=512).contains(&value.len()) || !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(invalid());
        }
        let condition = Self(value.to_owned());
        if condition.tags().any(|t| t.is_none()) {
            return Err(invalid());
        }
        Ok(condition)
    }

    fn tags(&self) -> impl Iterator<Item = Option<Tag<'_>>> {
        self.0.split(',').map(|raw| {
            let raw = raw.trim();
            if raw == "*" {
                return Some(Tag::Any);
            }
            let (weak, rest) = match raw.strip_prefix("W/") {
                Some(rest) => (true, rest),
                None => (false, raw),
            };
            let opaque = rest
                .strip_prefix('"')
                .and_then(|r| r.strip_suffix('"'))
                .unwrap_or(if weak { "" } else { rest });
            let printable = !opaque.is_empty()
                && opaque
                    .bytes()
                    .all(|b| b == 0x21 || (0x23..=0x7e).contains(&b));
            printable.then_some(if weak {
                Tag::Weak(opaque)
            } else {
                Tag::Strong(opaque)
            })
        })
    }

    /// `If-Match`: strong comparison; `*` matches any existing resource.
    pub fn matches_strongly(&self, current: &str) -> bool {
        let current = unquote(current);
        self.tags().flatten().any(|t| match t {
            Tag::Any => true,
            Tag::Strong(o) => o == current,
            Tag::Weak(_) => false,
        })
    }

    /// `If-None-Match`: weak comparison.
    pub fn matches_weakly(&self, current: &str) -> bool {
        let current = unquote(current);
        self.tags().flatten().any(|t| match t {
            Tag::Any => true,
            Tag::Strong(o) | Tag::Weak(o) => o == current,
        })
    }
}

fn unquote(tag: &str) -> &str {
    tag.trim_start_matches("W/").trim_matches('"')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strong_match_with_or_without_quotes() {
        let tag = for_revision(3);
        assert_eq!(tag, "\"r3\"");
        assert!(
            Condition::parse("If-Match", "\"r3\"")
                .unwrap()
                .matches_strongly(&tag)
        );
        assert!(
            Condition::parse("If-Match", "r3")
                .unwrap()
                .matches_strongly(&tag)
        );
        assert!(
            !Condition::parse("If-Match", "\"r4\"")
                .unwrap()
                .matches_strongly(&tag)
        );
        assert!(
            Condition::parse("If-Match", "*")
                .unwrap()
                .matches_strongly(&tag)
        );
        assert!(
            Condition::parse("If-Match", "\"r1\", \"r3\"")
                .unwrap()
                .matches_strongly(&tag)
        );
    }

    #[test]
    fn weak_tags_never_match_if_match_but_do_match_if_none_match() {
        let tag = for_revision(3);
        let weak = Condition::parse("If-None-Match", "W/\"r3\"").unwrap();
        assert!(!weak.matches_strongly(&tag));
        assert!(weak.matches_weakly(&tag));
    }

    #[test]
    fn rejects_malformed_values() {
        for bad in ["", "\"a b\"", "W/r3", "\"\"", "caf\u{e9}", &"a".repeat(513)] {
            assert!(Condition::parse("If-Match", bad).is_err(), "{bad:?}");
        }
    }
}
