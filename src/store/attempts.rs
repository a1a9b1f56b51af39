//! Verification attempts per client address in the database, so that every instance counts
//! against the same allowance and a restart forgets nothing.

use super::record::{FromRecord, Record};
use super::sql::{SqlBuilder, params};
use super::{Backend, Db, StoreError};
use crate::domain::attempts::{AttemptLimit, Attempts};
use async_trait::async_trait;

#[async_trait]
pub trait AttemptCounter: Send + Sync {
    /// Counts one attempt by `client` at `now_ms`; `Ok(Err(secs))` when it is refused.
    async fn try_attempt(
        &self,
        client: &str,
        limit: AttemptLimit,
        now_ms: i64,
    ) -> Result<Result<(), u64>, StoreError>;
    /// Forgets clients whose window and block ended before `before_ms`.
    async fn prune(&self, before_ms: i64) -> Result<u64, StoreError>;
}

pub struct SqlAttempts {
    db: Db,
}

impl SqlAttempts {
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

impl FromRecord for Attempts {
    fn from_record(row: &impl Record) -> Result<Self, StoreError> {
        Ok(Attempts {
            window_start_ms: row.column("window_start")?,
            count: u32::try_from(row.column::<i64>("attempts")?).unwrap_or(u32::MAX),
            blocked_until_ms: row.column("blocked_until")?,
        })
    }
}

#[async_trait]
impl AttemptCounter for SqlAttempts {
    async fn try_attempt(
        &self,
        client: &str,
        limit: AttemptLimit,
        now_ms: i64,
    ) -> Result<Result<(), u64>, StoreError> {
        let mut tx = self.db.begin().await?;
        let select = match self.db.backend {
            Backend::Postgres => {
                "SELECT window_start, attempts, blocked_until FROM verification_attempts \
                 WHERE client = $1 FOR UPDATE"
            }
            // SQLite: the transaction holds the database's write lock (BEGIN IMMEDIATE).
            Backend::Sqlite => {
                "SELECT window_start, attempts, blocked_until FROM verification_attempts \
                 WHERE client = $1"
            }
        };
        let mut attempts = tx
            .fetch_optional::<Attempts>(SqlBuilder::fixed(select, params![client]))
            .await?
            .unwrap_or_default();
        let before = attempts;
        let verdict = attempts.try_attempt(limit, now_ms);
        if attempts != before {
            tx.execute(SqlBuilder::fixed(
                "INSERT INTO verification_attempts (client, window_start, attempts, blocked_until) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (client) DO UPDATE SET \
                 window_start = excluded.window_start, attempts = excluded.attempts, \
                 blocked_until = excluded.blocked_until",
                params![
                    client,
                    attempts.window_start_ms,
                    i64::from(attempts.count),
                    attempts.blocked_until_ms,
                ],
            ))
            .await?;
        }
        tx.commit().await?;
        Ok(verdict)
    }

    async fn prune(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.db
            .execute(SqlBuilder::fixed(
                "DELETE FROM verification_attempts WHERE window_start < $1 AND blocked_until < $1",
                params![before_ms],
            ))
            .await
    }
}
