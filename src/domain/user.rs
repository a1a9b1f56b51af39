//! The people behind requests, as the seeds' `userAccountReference` shows them.

/// Who created or last changed a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRef {
    pub id: String,
    pub username: String,
    pub first_name: String,
    pub last_name: String,
}
