//! The email outbox: messages written in the caller's transaction, delivered later by the mail
//! worker, so that a committed change never loses its email and a rolled-back one never sends.

use crate::domain::ids::ResourceId;
use crate::domain::time::Timestamp;
use sqlx::AnyConnection;

/// A message to deliver: the template (`kind`) renders `payload` in `locale` for `recipient`.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxMessage {
    pub kind: String,
    pub recipient: String,
    pub locale: String,
    pub payload: serde_json::Value,
}

/// Adds a message inside the caller's transaction (pass `&mut *tx`); returns its id.
pub async fn enqueue(
    conn: &mut AnyConnection,
    message: &OutboxMessage,
) -> Result<ResourceId, sqlx::Error> {
    let id = ResourceId::generate();
    let now = Timestamp::now().millis();
    sqlx::query(
        "INSERT INTO email_outbox (id, kind, recipient, locale, payload, created_at, next_attempt_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id.as_str())
    .bind(&message.kind)
    .bind(&message.recipient)
    .bind(&message.locale)
    .bind(message.payload.to_string())
    .bind(now)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(id)
}
