//! The email outbox: messages written in the caller's transaction, delivered later by the mail
//! worker, so that a committed change never loses its email and a rolled-back one never sends.

use super::record::{FromRecord, Record};
use super::sql::{SqlBuilder, params};
use super::{StoreError, Tx};
use crate::domain::ids::ResourceId;
use crate::domain::time::Timestamp;

/// A message to deliver: the template (`kind`) renders `payload` in `locale` for `recipient`.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxMessage {
    pub kind: String,
    pub recipient: String,
    pub locale: String,
    pub payload: serde_json::Value,
}

/// Adds a message inside the caller's transaction; returns its id.
pub async fn enqueue(tx: &mut Tx, message: &OutboxMessage) -> Result<ResourceId, StoreError> {
    let id = ResourceId::generate();
    let now = Timestamp::now().millis();
    tx.execute(SqlBuilder::fixed(
        "INSERT INTO email_outbox (id, kind, recipient, locale, payload, created_at, next_attempt_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        params![
            id.as_str(),
            &message.kind,
            &message.recipient,
            &message.locale,
            message.payload.to_string(),
            now,
            now,
        ],
    ))
    .await?;
    Ok(id)
}

// ---- Delivery: claiming, sending, retrying ----------------------------------------------------

/// A message one worker holds a lease on.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedMessage {
    pub id: String,
    pub kind: String,
    pub recipient: String,
    pub locale: String,
    /// The stored JSON text; the worker parses it (a bad one is a failure, never a crash).
    pub payload: String,
    /// Failed attempts so far.
    pub attempts: i64,
}

/// What becomes of a message after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AfterFailure {
    /// Tried again from this time on.
    RetryAt(Timestamp),
    /// A dead letter, failed at this time: never tried again unless an operator queues it again
    /// (`tandem mail-queue --retry-failed`), and never deleted.
    GiveUp(Timestamp),
}

/// The queue the delivery worker drains.
#[async_trait::async_trait]
pub trait DeliveryQueue: Send + Sync {
    /// Leases up to `limit` unsent messages that are due, and those whose lease has expired
    /// (an instance that crashed mid-send), to `owner` until `lease_until`. Failed messages
    /// (dead letters) are never claimed.
    async fn claim_due(
        &self,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> Result<Vec<ClaimedMessage>, StoreError>;

    /// Records a delivery. Applies even if the lease was lost meanwhile: the message did go
    /// out, and recording it keeps anyone else from sending it again.
    async fn mark_sent(&self, id: &str, now: Timestamp) -> Result<(), StoreError>;

    /// Records a failed attempt and whether and when to try again; releases the lease. A no-op
    /// if `owner` no longer holds the lease (another instance took the message over).
    async fn record_failure(
        &self,
        id: &str,
        owner: &str,
        error: &str,
        after: AfterFailure,
    ) -> Result<(), StoreError>;

    /// Deletes messages delivered before `before`; returns how many.
    async fn purge_sent(&self, before: Timestamp) -> Result<u64, StoreError>;
}

/// The outbox table through the shared pools.
pub struct SqlOutbox {
    db: crate::store::Db,
}

impl SqlOutbox {
    pub fn new(db: crate::store::Db) -> Self {
        Self { db }
    }
}

impl FromRecord for ClaimedMessage {
    fn from_record(row: &impl Record) -> Result<Self, StoreError> {
        Ok(ClaimedMessage {
            id: row.column("id")?,
            kind: row.column("kind")?,
            recipient: row.column("recipient")?,
            locale: row.column("locale")?,
            payload: row.column("payload")?,
            attempts: row.column("attempts")?,
        })
    }
}

#[async_trait::async_trait]
impl DeliveryQueue for SqlOutbox {
    async fn claim_due(
        &self,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> Result<Vec<ClaimedMessage>, StoreError> {
        // PostgreSQL: concurrent instances skip each other's rows instead of waiting and then
        // claiming the same ones. SQLite: the single writer connection already serializes.
        let lock = match self.db.backend {
            crate::store::Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            crate::store::Backend::Sqlite => "",
        };
        // The due ids are picked once, in a materialized CTE. Written as `WHERE id IN (SELECT
        // ... LIMIT n FOR UPDATE SKIP LOCKED)`, one claim on PostgreSQL updated and returned 47
        // messages for a limit of 20: nothing bounds how often the planner evaluates such a
        // subquery within one statement, and a later evaluation may pick other rows.
        let sql = format!(
            "WITH due AS MATERIALIZED (SELECT id FROM email_outbox \
                 WHERE sent_at IS NULL AND failed_at IS NULL AND next_attempt_at <= $3 \
                   AND (lease_expires_at IS NULL OR lease_expires_at <= $3) \
                 ORDER BY next_attempt_at, id LIMIT $4{lock}) \
             UPDATE email_outbox SET lease_owner = $1, lease_expires_at = $2 \
             WHERE id IN (SELECT id FROM due) \
             RETURNING id, kind, recipient, locale, payload, attempts"
        );
        self.db
            .execute_returning(SqlBuilder::fixed(
                &sql,
                params![owner, lease_until.millis(), now.millis(), i64::from(limit)],
            ))
            .await
    }

    async fn mark_sent(&self, id: &str, now: Timestamp) -> Result<(), StoreError> {
        self.db
            .execute(SqlBuilder::fixed(
                "UPDATE email_outbox SET sent_at = $1, lease_owner = NULL, lease_expires_at = NULL, \
                 last_error = NULL WHERE id = $2 AND sent_at IS NULL",
                params![now.millis(), id],
            ))
            .await?;
        Ok(())
    }

    async fn record_failure(
        &self,
        id: &str,
        owner: &str,
        error: &str,
        after: AfterFailure,
    ) -> Result<(), StoreError> {
        let (next_attempt_at, failed_at) = match after {
            AfterFailure::RetryAt(next) => (next, None),
            AfterFailure::GiveUp(now) => (now, Some(now.millis())),
        };
        self.db
            .execute(SqlBuilder::fixed(
                "UPDATE email_outbox SET attempts = attempts + 1, last_error = $1, \
                 next_attempt_at = $2, failed_at = $3, lease_owner = NULL, lease_expires_at = NULL \
                 WHERE id = $4 AND lease_owner = $5 AND sent_at IS NULL",
                params![error, next_attempt_at.millis(), failed_at, id, owner],
            ))
            .await?;
        Ok(())
    }

    async fn purge_sent(&self, before: Timestamp) -> Result<u64, StoreError> {
        self.db
            .execute(SqlBuilder::fixed(
                "DELETE FROM email_outbox WHERE sent_at IS NOT NULL AND sent_at < $1",
                params![before.millis()],
            ))
            .await
    }
}

// ---- Watching the queue -----------------------------------------------------------------------

/// An undelivered message, as operators see it (`tandem mail-queue`). The recipient and the
/// payload are left out: they are personal data and not needed to see whether mail flows.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedMessage {
    pub id: String,
    pub kind: String,
    pub locale: String,
    pub created_at: Timestamp,
    pub attempts: i64,
    pub next_attempt_at: Timestamp,
    /// Held by a worker right now.
    pub leased: bool,
    pub last_error: Option<String>,
    /// Set for a dead letter: when delivery was given up.
    pub failed_at: Option<Timestamp>,
}

/// The undelivered messages: those still being tried and the dead letters.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueReport {
    /// Messages waiting for delivery (being tried).
    pub waiting: i64,
    /// Dead letters: given up, kept until an operator queues them again.
    pub failed: i64,
    /// The oldest waiting messages, oldest first.
    pub oldest_waiting: Vec<QueuedMessage>,
    /// The latest dead letters, latest first.
    pub latest_failed: Vec<QueuedMessage>,
}

const WAITING: &str = "sent_at IS NULL AND failed_at IS NULL";
const FAILED: &str = "sent_at IS NULL AND failed_at IS NOT NULL";

/// How many messages wait for delivery and how many failed, with up to `limit` of each.
pub async fn queued(db: &crate::store::Db, limit: u32) -> Result<QueueReport, sqlx::Error> {
    Ok(QueueReport {
        waiting: count(db, WAITING).await?,
        failed: count(db, FAILED).await?,
        oldest_waiting: listed(db, WAITING, "created_at, id", limit).await?,
        latest_failed: listed(db, FAILED, "failed_at DESC, id", limit).await?,
    })
}

/// Queues every dead letter again, as if new (no attempts yet, due now); returns how many.
/// Their `last_error` stays until the next attempt.
pub async fn retry_failed(db: &crate::store::Db) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE email_outbox SET failed_at = NULL, attempts = 0, next_attempt_at = $1 WHERE {FAILED}"
    )))
    .bind(Timestamp::now().millis())
    .execute(&db.write)
    .await?;
    Ok(done.rows_affected())
}

async fn count(db: &crate::store::Db, condition: &str) -> Result<i64, sqlx::Error> {
    use sqlx::Row;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) AS n FROM email_outbox WHERE {condition}"
    )))
    .fetch_one(&db.read)
    .await?
    .try_get("n")
}

async fn listed(
    db: &crate::store::Db,
    condition: &str,
    order: &str,
    limit: u32,
) -> Result<Vec<QueuedMessage>, sqlx::Error> {
    use sqlx::Row;
    let now = Timestamp::now().millis();
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT id, kind, locale, created_at, attempts, next_attempt_at, lease_expires_at, \
         last_error, failed_at FROM email_outbox WHERE {condition} ORDER BY {order} LIMIT $1"
    )))
    .bind(i64::from(limit))
    .fetch_all(&db.read)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(QueuedMessage {
                id: row.try_get("id")?,
                kind: row.try_get("kind")?,
                locale: row.try_get("locale")?,
                created_at: Timestamp::from_millis(row.try_get("created_at")?),
                attempts: row.try_get("attempts")?,
                next_attempt_at: Timestamp::from_millis(row.try_get("next_attempt_at")?),
                leased: row
                    .try_get::<Option<i64>, _>("lease_expires_at")?
                    .is_some_and(|until| until > now),
                last_error: row.try_get("last_error")?,
                failed_at: row
                    .try_get::<Option<i64>, _>("failed_at")?
                    .map(Timestamp::from_millis),
            })
        })
        .collect()
}
