//! Storage adapters: SQL over SQLite or PostgreSQL.

pub mod attempts;
pub mod audiences;
pub mod connections;
pub mod db;
pub mod entitlements;
pub mod invitations;
mod migrations;
pub mod outbox;
mod postgres;
pub mod record;
pub mod row_cache;
pub mod sql;
mod sqlite;
pub mod sync;

pub use db::{Backend, Db, Tx};

/// Failures of a storage operation that callers must tell apart.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint refused the write (e.g. a second connection for one audience+provider).
    #[error("a conflicting record already exists")]
    Duplicate,
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl StoreError {
    /// The same failure for another waiter on one statement: anyhow's errors cannot be cloned,
    /// so the copy carries the whole chain as its message.
    pub fn copy_for_another(&self) -> StoreError {
        match self {
            StoreError::Duplicate => StoreError::Duplicate,
            StoreError::Other(err) => StoreError::Other(anyhow::anyhow!("{err:#}")),
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        let unique = matches!(
            &err,
            rusqlite::Error::SqliteFailure(failure, _)
                if matches!(
                    failure.extended_code,
                    rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                        | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                )
        );
        if unique {
            StoreError::Duplicate
        } else {
            StoreError::Other(anyhow::Error::new(err).context("database error"))
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        if db::is_unique_violation(&err) {
            StoreError::Duplicate
        } else {
            StoreError::Other(anyhow::Error::new(err).context("database error"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::StoreError;
    use anyhow::Context;

    #[test]
    fn a_copy_keeps_the_kind_and_the_whole_chain() {
        assert!(matches!(
            StoreError::Duplicate.copy_for_another(),
            StoreError::Duplicate
        ));
        let original: StoreError = Err::<(), _>(anyhow::anyhow!("connection reset"))
            .context("reading invitations")
            .unwrap_err()
            .into();
        let copy = original.copy_for_another();
        assert_eq!(format!("{copy:#}"), "reading invitations: connection reset");
        assert_eq!(format!("{copy:#}"), format!("{original:#}"));
    }
}
