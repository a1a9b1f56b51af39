//! The email outbox is transactional: a rolled-back change leaves no message behind.

mod common;

use common::{Backend, TestApp};
use serde_json::json;
use sqlx::Row;
use tandem::store::outbox::{OutboxMessage, enqueue};

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

on_both_backends!(messages_commit_and_roll_back_with_their_transaction);
