//! Verification attempts per client address in the database, so that every instance counts
//! against the same allowance and a restart forgets nothing.

use super::{Backend, Db, StoreError};
use crate::domain::attempts::{AttemptLimit, Attempts};
use async_trait::async_trait;
use sqlx::Row;

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

#[async_trait]
impl AttemptCounter for SqlAttempts {
    async fn try_attempt(
        &self,
        client: &str,
        limit: AttemptLimit,
        now_ms: i64,
    ) -> Result<Result<(), u64>, StoreError> {
        let mut tx = self.db.write.begin().await?;
        let select = match self.db.backend {
            Backend::Postgres => {
                "SELECT window_start, attempts, blocked_until FROM verification_attempts \
                 WHERE client = $1 FOR UPDATE"
            }
            // SQLite: all writes share one connection, so the transaction is the lock.
            Backend::Sqlite => {
                "SELECT window_start, attempts, blocked_until FROM verification_attempts \
                 WHERE client = $1"
            }
        };
        let mut attempts = match sqlx::query(select)
            .bind(client)
            .fetch_optional(&mut *tx)
            .await?
        {
            Some(row) => Attempts {
                window_start_ms: row.try_get("window_start")?,
                count: u32::try_from(row.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX),
                blocked_until_ms: row.try_get("blocked_until")?,
            },
            None => Attempts::default(),
        };
        let before = attempts;
        let verdict = attempts.try_attempt(limit, now_ms);
        if attempts != before {
            sqlx::query(
                "INSERT INTO verification_attempts (client, window_start, attempts, blocked_until) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (client) DO UPDATE SET \
                 window_start = excluded.window_start, attempts = excluded.attempts, \
                 blocked_until = excluded.blocked_until",
            )
            .bind(client)
            .bind(attempts.window_start_ms)
            .bind(i64::from(attempts.count))
            .bind(attempts.blocked_until_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(verdict)
    }

    async fn prune(&self, before_ms: i64) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM verification_attempts WHERE window_start < $1 AND blocked_until < $1",
        )
        .bind(before_ms)
        .execute(&self.db.write)
        .await?;
        Ok(done.rows_affected())
    }
}
