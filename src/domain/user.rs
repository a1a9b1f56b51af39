//! The people behind requests, as the seeds' `userAccountReference` shows them.
//!
//! Tokens carry whatever names the identity provider holds, while the seed's schema allows a
//! `username` of 5 to 20 characters and names of at most 56. Stored values stay whole, for the
//! record; what the API shows is fitted to the published schema, so that a client validating
//! responses against it accepts them. `id` (the token's subject) still tells users apart.

/// The seed's `customerUsername` length, in characters.
const USERNAME_CHARS: (usize, usize) = (5, 20);
/// The seed's longest `firstName` and `lastName`, in characters.
const NAME_MAX_CHARS: usize = 56;

/// Who created or last changed a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRef {
    pub id: String,
    pub username: String,
    pub first_name: String,
    pub last_name: String,
}

impl UserRef {
    /// The username as the API shows it: 5 to 20 characters.
    pub fn shown_username(&self) -> String {
        fitted(&self.username, USERNAME_CHARS.0, USERNAME_CHARS.1)
    }

    pub fn shown_first_name(&self) -> String {
        fitted(&self.first_name, 0, NAME_MAX_CHARS)
    }

    pub fn shown_last_name(&self) -> String {
        fitted(&self.last_name, 0, NAME_MAX_CHARS)
    }
}

/// `value` fitted to `min..=max` characters: a longer one is cut and ends with `…` (so that a
/// reader sees it was shortened), a shorter one is padded with `_`.
fn fitted(value: &str, min: usize, max: usize) -> String {
    let chars = value.chars().count();
    if chars > max {
        let mut cut: String = value.chars().take(max - 1).collect();
        cut.push('…');
        cut
    } else if chars < min {
        let mut padded = value.to_owned();
        padded.extend(std::iter::repeat_n('_', min - chars));
        padded
    } else {
        value.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn user(username: &str) -> UserRef {
        UserRef {
            id: "user-1".into(),
            username: username.into(),
            first_name: "Ada".into(),
            last_name: "Lovelace".into(),
        }
    }

    #[test]
    fn usernames_outside_the_schema_are_fitted_and_others_kept() {
        assert_eq!(user("ab").shown_username(), "ab___");
        assert_eq!(user("").shown_username(), "_____");
        assert_eq!(user("bbillings").shown_username(), "bbillings");
        assert_eq!(
            user("exactly-twenty-chars").shown_username(),
            "exactly-twenty-chars"
        );
        assert_eq!(
            user("a-very-long-staff-username-28").shown_username(),
            "a-very-long-staff-u…"
        );
    }

    proptest! {
        #[test]
        fn a_shown_username_always_fits_the_schema(name in "\\PC{0,40}") {
            let shown = user(&name).shown_username();
            let chars = shown.chars().count();
            prop_assert!((5..=20).contains(&chars), "{shown:?}");
            if (5..=20).contains(&name.chars().count()) {
                prop_assert_eq!(shown, name);
            }
        }

        #[test]
        fn shown_names_fit_the_schema(name in "\\PC{0,80}") {
            let mut u = user("bbillings");
            u.first_name = name.clone();
            u.last_name = name;
            prop_assert!(u.shown_first_name().chars().count() <= 56);
            prop_assert!(u.shown_last_name().chars().count() <= 56);
        }
    }
}
