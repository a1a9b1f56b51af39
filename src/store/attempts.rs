//! Verification attempts per client address in the database, so that every instance counts
//! against the same allowance and a restart forgets nothing.

use super::record::{FromRecord, Record};
use super::sql::{SqlBuilder, params};
use super::{Db, StoreError};
use crate::domain::attempts::{AttemptLimit, Attempts};
use async_trait::async_trait;
use std::sync::LazyLock;

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

/// One attempt, counted in one statement: the insert of a new client's first attempt, or the
/// update of its row under the row's lock, so that concurrent attempts from one address (even
/// its very first ones, before any row exists to lock) each count against what the others
/// left. The update is `Attempts::try_attempt` in SQL: while blocked nothing changes (the count
/// stays 0); a finished window starts again at `now`; past the allowance the address is
/// blocked and its count reset to 0. Parameters: client, the first attempt's row ($2-$4),
/// now, window, allowance, block.
static COUNT_ATTEMPT: LazyLock<String> = LazyLock::new(|| {
    // The window's count before this attempt: the stored one while the window lasts, else 0.
    let count = "(CASE WHEN $5 - a.window_start < $6 THEN a.attempts ELSE 0 END)";
    format!(
        "INSERT INTO verification_attempts AS a (client, window_start, attempts, blocked_until) \
         VALUES ($1, $2, $3, $4) \
         ON CONFLICT (client) DO UPDATE SET \
         window_start = CASE WHEN $5 < a.blocked_until OR $5 - a.window_start < $6 \
             THEN a.window_start ELSE $5 END, \
         attempts = CASE WHEN $5 < a.blocked_until THEN 0 \
             WHEN {count} >= $7 THEN 0 ELSE {count} + 1 END, \
         blocked_until = CASE WHEN $5 < a.blocked_until THEN a.blocked_until \
             WHEN {count} >= $7 THEN $5 + $8 ELSE a.blocked_until END \
         RETURNING window_start, attempts, blocked_until"
    )
});

#[async_trait]
impl AttemptCounter for SqlAttempts {
    async fn try_attempt(
        &self,
        client: &str,
        limit: AttemptLimit,
        now_ms: i64,
    ) -> Result<Result<(), u64>, StoreError> {
        let first = Attempts::first(limit, now_ms);
        let counted = self
            .db
            .execute_returning::<Attempts>(SqlBuilder::fixed(
                &COUNT_ATTEMPT,
                params![
                    client,
                    first.window_start_ms,
                    i64::from(first.count),
                    first.blocked_until_ms,
                    now_ms,
                    limit.window_ms,
                    i64::from(limit.max_attempts),
                    limit.block_ms,
                ],
            ))
            .await?
            .pop()
            .ok_or_else(|| {
                StoreError::from(anyhow::anyhow!(
                    "counting a verification attempt returned no row"
                ))
            })?;
        Ok(counted.verdict(now_ms))
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
