//! Storage adapters: SQL over SQLite or PostgreSQL.

pub mod attempts;
pub mod audiences;
pub mod connections;
pub mod db;
pub mod entitlements;
pub mod invitations;
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
