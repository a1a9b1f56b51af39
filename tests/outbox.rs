//! The email outbox is transactional: a rolled-back change leaves no message behind.

mod common;

use common::{Backend, TestApp};
use serde_json::json;
use sqlx::Row;
use tandem::domain::time::Timestamp;
use tandem::store::outbox::{DeliveryQueue, OutboxMessage, SqlOutbox, enqueue};

fn message(to: &str) -> OutboxMessage {
    OutboxMessage {
        kind: "invitation".into(),
        recipient: to.into(),
        locale: "en".into(),
        payload: json!({"invitationId": "inv-123456"}),
    }
}

async fn messages_commit_and_roll_back_with_their_transaction(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut tx = app.db.begin().await.unwrap();
    enqueue(&mut tx, &message("kept@example.com"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut tx = app.db.begin().await.unwrap();
    enqueue(&mut tx, &message("dropped@example.com"))
        .await
        .unwrap();
    drop(tx); // rolls back

    let rows =
        sqlx::query("SELECT recipient, kind, locale, payload, attempts, sent_at FROM email_outbox")
            .fetch_all(&app.db.read)
            .await
            .unwrap();
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.get::<String, _>("recipient"), "kept@example.com");
    assert_eq!(row.get::<String, _>("kind"), "invitation");
    assert_eq!(row.get::<String, _>("locale"), "en");
    let payload: serde_json::Value =
        serde_json::from_str(&row.get::<String, _>("payload")).unwrap();
    assert_eq!(payload["invitationId"], "inv-123456");
    assert_eq!(row.get::<i64, _>("attempts"), 0);
    assert_eq!(row.get::<Option<i64>, _>("sent_at"), None);
}

/// A claim leases exactly the batch it was asked for while more is due, each message once.
async fn a_claim_leases_at_most_its_limit(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.email.poll_interval_ms = 600_000).await;
    for i in 0..10 {
        let mut tx = app.db.begin().await.unwrap();
        enqueue(&mut tx, &message(&format!("due{i}@example.com")))
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    let queue = SqlOutbox::new(app.db.clone());
    let now = Timestamp::now();
    let mut claimed = Vec::new();
    for expected in [4, 4, 2, 0] {
        let batch = queue
            .claim_due("claimer", now, now.plus_millis(60_000), 4)
            .await
            .unwrap();
        assert_eq!(batch.len(), expected);
        claimed.extend(batch.into_iter().map(|m| m.id));
    }
    claimed.sort();
    claimed.dedup();
    assert_eq!(claimed.len(), 10, "every message leased once");
}

on_both_backends!(
    messages_commit_and_roll_back_with_their_transaction,
    a_claim_leases_at_most_its_limit,
);
