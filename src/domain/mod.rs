//! The domain: identifiers, states, rules and validation. Plain Rust, no I/O.

pub mod attempts;
pub mod connection;
pub mod etag;
pub mod filter;
pub mod ids;
pub mod invitation;
pub mod rate_limit;
pub mod sealed;
pub mod sync;
pub mod time;
pub mod user;

use std::fmt;

/// A request value that breaks one of the published constraints, naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    pub field: String,
    pub message: String,
}

impl ValidationError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same error reported under an enclosing field, e.g. `audience` + `id` -> `audience.id`.
    pub fn within(mut self, parent: &str) -> Self {
        self.field = if self.field.is_empty() {
            parent.to_owned()
        } else {
            format!("{parent}.{}", self.field)
        };
        self
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for ValidationError {}

/// Checks a free-text value against a maximum length in characters (the seeds' `maxLength`).
pub fn check_text(field: &str, value: &str, min: usize, max: usize) -> Result<(), ValidationError> {
    let len = value.chars().count();
    if len < min {
        return Err(ValidationError::new(
            field,
            format!("must be at least {min} characters long"),
        ));
    }
    if len > max {
        return Err(ValidationError::new(
            field,
            format!("must be at most {max} characters long"),
        ));
    }
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(ValidationError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_length_is_counted_in_characters() {
        assert!(check_text("name", "ñññ", 1, 3).is_ok());
        assert_eq!(check_text("name", "ññññ", 1, 3).unwrap_err().field, "name");
        assert!(check_text("name", "", 1, 3).is_err());
        assert!(check_text("name", "a\u{0}b", 0, 10).is_err());
    }

    #[test]
    fn nested_field_names_are_dotted() {
        let e = ValidationError::new("id", "bad").within("audience");
        assert_eq!(e.field, "audience.id");
        assert_eq!(ValidationError::new("", "bad").within("body").field, "body");
    }
}
