//! Email delivery from the outbox: over SMTP to a real listener, through relay outages, by
//! several instances at once, and as `.eml` files in dev mode; on SQLite and PostgreSQL.

mod common;
#[path = "common/smtp.rs"]
mod smtp;

use common::{Backend, TestApp, several_instances};
use mail_parser::{MessageParser, MimeHeaders};
use serde_json::json;
use smtp::SmtpServer;
use sqlx::Row;
use std::collections::BTreeMap;
use std::time::Duration;
use tandem::app::Application;
use tandem::config::{Config, SmtpConfig, SmtpTls};
use tandem::store::outbox::{OutboxMessage, enqueue};
use tandem::store::sql::{Param, SqlBuilder};

const SECRET: &str = "correct-horse-battery-staple";
const FROM: &str = "no-reply@bank.example";

fn invitation(recipient: &str, locale: &str) -> OutboxMessage {
    OutboxMessage {
        kind: "invitation".into(),
        recipient: recipient.into(),
        locale: locale.into(),
        payload: json!({
            "invitationId": "0b0fa3d2-1a4b-4c5d-9e8f-001122334455",
            "acceptUrl": "https://bank.example/invitations/accept?invitationId=0b0fa3d2-1a4b-4c5d-9e8f-001122334455",
            "inviterFullName": "Max Pike",
            "inviteeFirstName": "Ana",
            "inviteeLastName": "O'Neil <Núñez>",
            "invitationType": "joint",
            "expiresAt": "2026-12-23T18:05:00.000Z",
            // Must never reach the email, though a caller put it in the payload.
            "sharedSecret": SECRET,
        }),
    }
}

/// Fast polling and retries, so tests take milliseconds rather than minutes.
fn quick_email(config: &mut Config) {
    config.email.from = format!("Example Bank <{FROM}>");
    config.email.poll_interval_ms = 25;
    config.email.retry_min_ms = 50;
    config.email.retry_max_ms = 300;
    config.email.lease_secs = 20;
}

fn smtp_on(port: u16) -> SmtpConfig {
    SmtpConfig {
        host: "127.0.0.1".into(),
        port: Some(port),
        tls: SmtpTls::None,
        username: None,
        password: None,
        timeout_secs: 5,
    }
}

async fn enqueue_one(app: &TestApp, message: &OutboxMessage) -> String {
    let mut tx = app.db.begin().await.unwrap();
    let id = enqueue(&mut tx, message).await.unwrap();
    tx.commit().await.unwrap();
    id.as_str().to_owned()
}

/// One outbox row, as the worker left it.
#[derive(Debug)]
struct OutboxRow {
    attempts: i64,
    sent_at: Option<i64>,
    last_error: Option<String>,
    lease_owner: Option<String>,
    /// Set once delivery is given up (a dead letter).
    failed_at: Option<i64>,
}

async fn outbox(app: &TestApp) -> BTreeMap<String, OutboxRow> {
    sqlx::query(
        "SELECT id, attempts, sent_at, last_error, lease_owner, failed_at \
         FROM email_outbox",
    )
    .fetch_all(&app.db.read)
    .await
    .unwrap()
    .iter()
    .map(|r| {
        (
            r.get("id"),
            OutboxRow {
                attempts: r.get("attempts"),
                sent_at: r.get("sent_at"),
                last_error: r.get("last_error"),
                lease_owner: r.get("lease_owner"),
                failed_at: r.get("failed_at"),
            },
        )
    })
    .collect()
}

/// Polls the outbox until `done` holds, failing after 20 seconds.
async fn wait_for(app: &TestApp, what: &str, done: impl Fn(&BTreeMap<String, OutboxRow>) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let rows = outbox(app).await;
        if done(&rows) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}: {rows:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Queues `count` invitations, to `<prefix><n>@example.com`.
async fn enqueue_many(app: &TestApp, prefix: &str, count: usize) {
    for n in 0..count {
        enqueue_one(app, &invitation(&format!("{prefix}{n}@example.com"), "en")).await;
    }
}

/// Waits until the outbox holds `count` messages, every one of them sent.
async fn wait_until_all_sent(app: &TestApp, count: usize) {
    wait_for(app, &format!("all {count} messages are sent"), |rows| {
        rows.len() == count && rows.values().all(|r| r.sent_at.is_some())
    })
    .await;
}

/// Starts another instance on the test's database; returns its email worker's waker.
async fn start_another_instance(app: &TestApp) -> tandem::mail::MailWaker {
    let instance = Application::build(app.config.clone()).await.unwrap();
    let waker = instance.mail_waker();
    tokio::spawn(instance.run_until(std::future::pending()));
    waker
}

/// What a browser shows for the HTML escapes in the message.
fn unescape(html: &str) -> String {
    html.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// Checks a delivered invitation from its raw bytes: headers, both MIME parts, the link, the
/// escaping, and that the secret is nowhere. Returns the subject.
fn assert_invitation(raw: &[u8], recipient: &str, outbox_id: &str) -> String {
    let text = String::from_utf8_lossy(raw);
    assert!(!text.contains(SECRET), "the secret leaked: {text}");
    let message = MessageParser::default().parse(raw).expect("a MIME message");
    let to = message
        .to()
        .and_then(|a| a.first())
        .and_then(|a| a.address());
    assert_eq!(to, Some(recipient));
    let from = message
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address());
    assert_eq!(from, Some(FROM));
    assert_eq!(
        message.message_id(),
        Some(format!("{outbox_id}@bank.example").as_str())
    );
    let root = message.root_part().content_type().unwrap();
    assert_eq!(
        (root.ctype(), root.subtype()),
        ("multipart", Some("alternative"))
    );
    let parts: Vec<_> = (0..).map_while(|i| message.part(i)).collect();
    let part = |subtype: &str| {
        parts
            .iter()
            .find(|p| {
                p.content_type()
                    .is_some_and(|c| c.ctype() == "text" && c.subtype() == Some(subtype))
            })
            .and_then(|p| p.text_contents())
            .unwrap_or_else(|| panic!("no text/{subtype} part in {text}"))
            .to_owned()
    };
    let (plain, html) = (part("plain"), part("html"));
    let link =
        "https://bank.example/invitations/accept?invitationId=0b0fa3d2-1a4b-4c5d-9e8f-001122334455";
    assert!(plain.contains(link), "{plain}");
    assert!(plain.contains("Ana O'Neil <Núñez>"), "{plain}");
    assert!(
        !html.contains("<Núñez>"),
        "names are escaped in HTML: {html}"
    );
    let shown = unescape(&html);
    assert!(shown.contains(&format!("<a href=\"{link}\"")), "{html}");
    assert!(shown.contains("Ana O'Neil <Núñez>"), "{html}");
    for body in [&plain, &shown] {
        assert!(!body.contains(SECRET));
        assert!(body.contains("Max Pike"));
    }
    message.subject().unwrap_or_default().to_owned()
}

async fn an_smtp_relay_receives_the_rendered_invitation(backend: Backend) {
    let server = SmtpServer::bind(0).await;
    let app = TestApp::spawn_with(backend, |c| {
        quick_email(c);
        c.email.smtp = Some(smtp_on(server.port));
    })
    .await;
    let en = enqueue_one(&app, &invitation("ana@example.com", "en")).await;
    let es = enqueue_one(&app, &invitation("ana.es@example.com", "es-MX")).await;
    wait_for(&app, "both are sent", |rows| {
        rows.values().all(|r| r.sent_at.is_some())
    })
    .await;

    let received = server.received();
    assert_eq!(received.len(), 2, "{received:#?}");
    for (id, recipient, subject) in [
        (
            &en,
            "ana@example.com",
            "Max Pike invited you to become a joint owner of their account",
        ),
        (
            &es,
            "ana.es@example.com",
            "Max Pike le invitó a ser cotitular de su cuenta",
        ),
    ] {
        let message = received
            .iter()
            .find(|m| m.to == [recipient])
            .unwrap_or_else(|| panic!("nothing for {recipient}: {received:#?}"));
        assert_eq!(message.from, FROM);
        assert_eq!(assert_invitation(&message.data, recipient, id), subject);
    }
    for row in outbox(&app).await.values() {
        assert_eq!((row.attempts, row.last_error.as_deref()), (0, None));
        assert_eq!(row.lease_owner, None, "the lease is released");
    }
}

/// A local port nobody listens on (yet).
fn unused_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn an_smtp_outage_delays_delivery_but_loses_and_duplicates_nothing(backend: Backend) {
    let port = unused_port();
    let app = TestApp::spawn_with(backend, |c| {
        quick_email(c);
        c.email.smtp = Some(smtp_on(port));
    })
    .await;
    let recipients: Vec<String> = (0..5).map(|i| format!("invitee{i}@example.com")).collect();
    let mut ids = BTreeMap::new();
    for r in &recipients {
        ids.insert(enqueue_one(&app, &invitation(r, "en")).await, r.clone());
    }
    wait_for(&app, "every message failed twice", |rows| {
        rows.len() == 5 && rows.values().all(|r| r.attempts >= 2)
    })
    .await;
    for row in outbox(&app).await.values() {
        assert_eq!(row.sent_at, None);
        let error = row.last_error.as_deref().unwrap();
        assert!(error.contains(&format!("127.0.0.1:{port}")), "{error}");
        assert!(!error.contains(SECRET));
    }
    // What `tandem mail-queue` shows operators meanwhile.
    let report = tandem::store::outbox::queued(&app.db, 3).await.unwrap();
    assert_eq!((report.waiting, report.oldest_waiting.len()), (5, 3));
    assert_eq!(report.failed, 0, "a relay outage is retried, not given up");
    assert!(
        report
            .oldest_waiting
            .iter()
            .all(|m| m.attempts >= 2 && m.last_error.is_some())
    );
    let text = tandem::mail::queue_report(&report);
    assert!(
        text.starts_with(
            "5 email(s) waiting for delivery; of the 3 oldest, 3 failed at least once\n"
        ),
        "{text}"
    );
    assert!(!text.contains("@example.com"), "no recipients: {text}");

    let server = SmtpServer::bind(port).await;
    wait_for(&app, "every message is sent", |rows| {
        rows.values().all(|r| r.sent_at.is_some())
    })
    .await;
    // Give a duplicate every chance to show up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let received = server.received();
    assert_eq!(
        received.len(),
        5,
        "each message exactly once: {received:#?}"
    );
    for (id, recipient) in &ids {
        let copies: Vec<_> = received
            .iter()
            .filter(|m| m.to == [recipient.as_str()])
            .collect();
        assert_eq!(copies.len(), 1, "{recipient}");
        assert_invitation(&copies[0].data, recipient, id);
    }
    for row in outbox(&app).await.values() {
        assert_eq!(row.last_error, None, "cleared once delivered");
    }
    let report = tandem::store::outbox::queued(&app.db, 3).await.unwrap();
    assert_eq!(
        tandem::mail::queue_report(&report),
        "0 email(s) waiting for delivery\n"
    );
}

async fn several_instances_share_the_queue_and_send_each_message_once(backend: Backend) {
    let server = SmtpServer::bind(0).await;
    let app = TestApp::spawn_with(backend, |c| {
        quick_email(c);
        several_instances(c);
        c.email.batch_size = 3;
        c.email.smtp = Some(smtp_on(server.port));
    })
    .await;
    // A second and a third instance on the same database.
    for _ in 0..2 {
        start_another_instance(&app).await;
    }
    let count = 30;
    enqueue_many(&app, "many", count).await;
    wait_until_all_sent(&app, count).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut recipients: Vec<_> = server
        .received()
        .into_iter()
        .map(|m| m.to.concat())
        .collect();
    recipients.sort();
    let before = recipients.len();
    recipients.dedup();
    assert_eq!((before, recipients.len()), (count, count), "one copy each");
}

async fn dev_mode_writes_eml_files_with_the_same_content(backend: Backend) {
    let app = TestApp::spawn_with(backend, quick_email).await;
    let first = enqueue_one(&app, &invitation("first@example.com", "en")).await;
    wait_for(&app, "the first is sent", |rows| {
        rows.values().all(|r| r.sent_at.is_some())
    })
    .await;
    let second = enqueue_one(&app, &invitation("second@example.com", "fr")).await;
    wait_for(&app, "the second is sent", |rows| {
        rows.values().all(|r| r.sent_at.is_some())
    })
    .await;

    let dir = app.config.data_dir.join("mail");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names.len(), 2, "{names:?}");
    for (name, (id, recipient)) in names.iter().zip([
        (&first, "first@example.com"),
        (&second, "second@example.com"),
    ]) {
        assert!(
            name.ends_with(&format!("-{id}.eml")),
            "sorted by time: {names:?}"
        );
        let raw = std::fs::read(dir.join(name)).unwrap();
        // French falls back to English.
        assert_eq!(
            assert_invitation(&raw, recipient, id),
            "Max Pike invited you to become a joint owner of their account"
        );
    }
}

/// A message that cannot be rendered or addressed would fail the same way every time: it is
/// given up after `max_refused_attempts` (3 by default), kept, and the rest flow meanwhile.
async fn messages_nobody_can_render_or_address_are_given_up_and_the_rest_flow(backend: Backend) {
    let app = TestApp::spawn_with(backend, quick_email).await;
    let mut newsletter = invitation("reader@example.com", "en");
    newsletter.kind = "newsletter".into();
    let unknown = enqueue_one(&app, &newsletter).await;
    let mut broken = invitation("broken@example.com", "en");
    broken.payload = json!({"invitationId": "x", "sharedSecret": SECRET});
    let invalid = enqueue_one(&app, &broken).await;
    let nowhere = enqueue_one(&app, &invitation("not an address", "en")).await;
    // Queued before addresses were checked at create: a display name is not an address, and
    // must never become `To: Evil <evil@example.org>`.
    let named = enqueue_one(&app, &invitation("Evil<evil@example.org>", "en")).await;
    let dotted = enqueue_one(&app, &invitation("a@example..com", "en")).await;
    let given_up = [&unknown, &invalid, &nowhere, &named, &dotted];
    wait_for(&app, "all five are given up", |rows| {
        given_up.iter().all(|id| rows[*id].failed_at.is_some())
    })
    .await;
    let good = enqueue_one(&app, &invitation("ana@example.com", "en")).await;
    wait_for(&app, "the good one is sent", |rows| {
        rows[&good].sent_at.is_some()
    })
    .await;
    // Given up means never tried again.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let rows = outbox(&app).await;
    assert_eq!(rows.len(), 6, "nothing is deleted");
    for id in given_up {
        let row = &rows[id];
        assert_eq!((row.attempts, row.sent_at), (3, None), "{id}: {row:?}");
        assert_eq!(row.lease_owner, None);
    }
    let error = |id: &str| rows[id].last_error.clone().unwrap();
    assert!(
        error(&unknown).contains("newsletter"),
        "{}",
        error(&unknown)
    );
    assert!(
        error(&invalid).contains("acceptUrl") && !error(&invalid).contains(SECRET),
        "{}",
        error(&invalid)
    );
    for id in [&nowhere, &named, &dotted] {
        assert!(
            error(id).contains("recipient is not a valid email address"),
            "{}",
            error(id)
        );
    }
    let files = std::fs::read_dir(app.config.data_dir.join("mail"))
        .unwrap()
        .count();
    assert_eq!(files, 1, "only the good one was written");
}

/// A relay that refuses a recipient for good (550) is not asked again and again: the message
/// is given up after `max_refused_attempts`, `tandem mail-queue` lists it without the address,
/// and `--retry-failed` queues it again.
async fn a_recipient_the_relay_refuses_is_given_up_and_listed(backend: Backend) {
    let server = SmtpServer::refusing("bounce").await;
    let app = TestApp::spawn_with(backend, |c| {
        quick_email(c);
        c.email.max_refused_attempts = 2;
        c.email.smtp = Some(smtp_on(server.port));
    })
    .await;
    let refused = enqueue_one(&app, &invitation("bounce@example.com", "en")).await;
    let good = enqueue_one(&app, &invitation("ana@example.com", "en")).await;
    wait_for(
        &app,
        "the refused one is given up and the good one sent",
        |rows| rows[&refused].failed_at.is_some() && rows[&good].sent_at.is_some(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let row = &outbox(&app).await[&refused];
    assert_eq!((row.attempts, row.sent_at), (2, None), "{row:?}");
    let error = row.last_error.as_deref().unwrap();
    assert!(error.contains("550"), "{error}");
    assert_eq!(server.received().len(), 1);

    let report = tandem::store::outbox::queued(&app.db, 10).await.unwrap();
    assert_eq!((report.waiting, report.failed), (0, 1));
    assert_eq!(report.latest_failed[0].id, refused);
    let text = tandem::mail::queue_report(&report);
    assert!(
        text.starts_with("0 email(s) waiting for delivery\n1 email(s) failed and given up"),
        "{text}"
    );
    let line = text.lines().find(|l| l.starts_with(&refused)).unwrap();
    assert!(line.contains("attempts 2  failed "), "{line}");
    assert!(
        line.contains("last error: ") && line.contains("550"),
        "{line}"
    );
    assert!(!text.contains("bounce@"), "no recipients: {text}");
    assert!(!text.contains(SECRET), "{text}");

    // The operator queues it again (say, after the mailbox was created): tried afresh.
    assert_eq!(
        tandem::store::outbox::retry_failed(&app.db).await.unwrap(),
        1
    );
    wait_for(&app, "it is tried again and given up again", |rows| {
        rows[&refused].failed_at.is_some() && rows[&refused].attempts == 2
    })
    .await;
    let refusals = server.received().len();
    assert_eq!(refusals, 1, "the refused one never went out");
}

/// A relay that stays unreachable is retried with backoff, but not forever: after
/// `max_attempts` the message is given up.
async fn a_message_failing_past_max_attempts_is_given_up(backend: Backend) {
    let port = unused_port();
    let app = TestApp::spawn_with(backend, |c| {
        quick_email(c);
        c.email.max_attempts = 4;
        c.email.smtp = Some(smtp_on(port));
    })
    .await;
    let id = enqueue_one(&app, &invitation("ana@example.com", "en")).await;
    wait_for(&app, "it is given up", |rows| rows[&id].failed_at.is_some()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let row = &outbox(&app).await[&id];
    assert_eq!((row.attempts, row.sent_at), (4, None), "{row:?}");
    let error = row.last_error.as_deref().unwrap();
    assert!(error.contains(&format!("127.0.0.1:{port}")), "{error}");
}

async fn a_crashed_instances_lease_is_taken_over_when_it_expires(backend: Backend) {
    let app = TestApp::spawn_with(backend, quick_email).await;
    let now = tandem::domain::time::Timestamp::now().millis();
    // Claimed by an instance that then died, with a lease still running for an hour.
    let mut tx = app.db.begin().await.unwrap();
    let id = enqueue(&mut tx, &invitation("ana@example.com", "en"))
        .await
        .unwrap();
    tx.execute(SqlBuilder::fixed(
        "UPDATE email_outbox SET lease_owner = 'crashed', lease_expires_at = $1",
        vec![Param::Int(now + 3_600_000)],
    ))
    .await
    .unwrap();
    tx.commit().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let row = &outbox(&app).await[id.as_str()];
    assert_eq!(row.sent_at, None, "a live lease is respected");
    assert_eq!(row.lease_owner.as_deref(), Some("crashed"));

    sqlx::query("UPDATE email_outbox SET lease_expires_at = $1")
        .bind(now - 1)
        .execute(&app.db.write)
        .await
        .unwrap();
    wait_for(&app, "it is taken over and sent", |rows| {
        rows[id.as_str()].sent_at.is_some()
    })
    .await;
    let files = std::fs::read_dir(app.config.data_dir.join("mail"))
        .unwrap()
        .count();
    assert_eq!(files, 1);
}

async fn an_enqueue_wakes_the_worker_before_its_next_poll(backend: Backend) {
    let server = SmtpServer::bind(0).await;
    let app = TestApp::spawn_with(backend, |c| {
        quick_email(c);
        several_instances(c);
        c.email.poll_interval_ms = 600_000;
        c.email.smtp = Some(smtp_on(server.port));
    })
    .await;
    let instance = Application::build(app.config.clone()).await.unwrap();
    let waker = instance.mail_waker();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(instance.run_until(async {
        let _ = stopped.await;
    }));
    // Both workers sleep for ten minutes.
    let id = enqueue_one(&app, &invitation("ana@example.com", "en")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(outbox(&app).await[&id].sent_at, None, "nobody polled");
    waker.wake();
    wait_for(&app, "the woken worker sent it", |rows| {
        rows[&id].sent_at.is_some()
    })
    .await;
    assert_eq!(server.received().len(), 1);

    // Shutting down stops the worker too.
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the instance stops promptly")
        .unwrap()
        .unwrap();
}

/// After a full batch the worker claims the next at once: one wake-up sends a backlog of many
/// batches, none of it waiting for the next poll.
async fn one_wake_up_sends_a_backlog_of_many_batches(backend: Backend) {
    let server = SmtpServer::bind(0).await;
    let app = TestApp::spawn_with(backend, |c| {
        quick_email(c);
        several_instances(c);
        c.email.poll_interval_ms = 600_000;
        c.email.batch_size = 3;
        c.email.smtp = Some(smtp_on(server.port));
    })
    .await;
    // A second instance, whose worker this test can wake.
    let waker = start_another_instance(&app).await;
    let count = 20;
    enqueue_many(&app, "backlog", count).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(server.received().is_empty(), "nobody polled");
    waker.wake();
    wait_until_all_sent(&app, count).await;
    assert_eq!(server.received().len(), count);
}

async fn delivered_messages_are_deleted_after_the_retention_period(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        quick_email(c);
        several_instances(c);
        c.email.retain_sent_days = 7;
    })
    .await;
    let day = 86_400_000;
    let now = tandem::domain::time::Timestamp::now().millis();
    let mut ids = Vec::new();
    for (recipient, sent_at) in [
        ("old@example.com", Some(now - 8 * day)),
        ("recent@example.com", Some(now - 6 * day)),
        ("queued@example.com", None),
    ] {
        let id = enqueue_one(&app, &invitation(recipient, "en")).await;
        sqlx::query("UPDATE email_outbox SET sent_at = $1, created_at = $2 WHERE id = $3")
            .bind(sent_at)
            .bind(now - 9 * day)
            .bind(&id)
            .execute(&app.db.write)
            .await
            .unwrap();
        ids.push(id);
    }
    // Another instance purges on its first round (and hourly after that).
    start_another_instance(&app).await;
    wait_for(&app, "the old delivered message is gone", |rows| {
        !rows.contains_key(&ids[0])
    })
    .await;
    wait_for(&app, "the queued one is delivered", |rows| {
        rows[&ids[2]].sent_at.is_some()
    })
    .await;
    let rows = outbox(&app).await;
    assert!(rows.contains_key(&ids[1]), "within retention");
    assert_eq!(rows.len(), 2);
}

async fn relay_credentials_are_used_and_never_recorded(backend: Backend) {
    let server = SmtpServer::with_login("tandem", "right-password-4711").await;
    let login = |password: &str| {
        let mut smtp = smtp_on(server.port);
        smtp.username = Some("tandem".into());
        smtp.password = Some(password.into());
        smtp
    };
    let wrong = login("wrong-password-0815");
    let app = TestApp::spawn_with(backend, |c| {
        quick_email(c);
        several_instances(c);
        // 535 is a permanent reply: keep trying until the operator's fix below, not give up.
        c.email.max_refused_attempts = c.email.max_attempts;
        c.email.smtp = Some(wrong);
    })
    .await;
    let id = enqueue_one(&app, &invitation("ana@example.com", "en")).await;
    wait_for(&app, "the relay refused twice", |rows| {
        rows[&id].attempts >= 2
    })
    .await;
    let error = outbox(&app).await[&id].last_error.clone().unwrap();
    assert!(error.contains("535"), "{error}");
    assert!(!error.contains("password-0815"), "{error}");
    assert!(server.received().is_empty());

    // The operator fixes the password and restarts: the queued message goes out.
    let mut fixed = app.config.clone();
    fixed.email.smtp = Some(login("right-password-4711"));
    let instance = Application::build(fixed).await.unwrap();
    tokio::spawn(instance.run_until(std::future::pending()));
    wait_for(&app, "it is sent", |rows| rows[&id].sent_at.is_some()).await;
    let received = server.received();
    assert_eq!(received.len(), 1);
    assert_invitation(&received[0].data, "ana@example.com", &id);
}

/// Addresses delivery could not parse are refused at create, naming the field, so they never
/// reach the outbox; a bare address is accepted and delivered to exactly that address.
async fn addresses_the_mailer_cannot_parse_are_refused_at_create(backend: Backend) {
    let server = SmtpServer::bind(0).await;
    let app = TestApp::spawn_with(backend, |c| {
        quick_email(c);
        c.email.smtp = Some(smtp_on(server.port));
    })
    .await;
    let create = |email: &str| {
        app.as_admin(reqwest::Method::POST, "/invitations/invitations")
            .json(&json!({
                "sharedSecret": SECRET,
                "type": "productPromotion",
                "inviterFullName": "Example Bank",
                "emailAddress": email,
            }))
            .send()
    };
    for bad in [
        "a\"b@x.com",
        "a@example..com",
        ".a@x.com",
        "Evil<evil@example.org>",
        "Evil <evil@example.org>",
        "a..b@x.com",
    ] {
        let res = create(bad).await.unwrap();
        assert_eq!(res.status(), 400, "{bad}");
        let body = common::json(res).await;
        assert_eq!(body["_error"]["type"], "invalidValue", "{bad}: {body}");
        let message = body["_error"]["message"].as_str().unwrap();
        assert!(message.contains("emailAddress"), "{bad}: {message}");
    }
    assert!(outbox(&app).await.is_empty(), "nothing was queued");

    let res = create("ana.o'neil+bank@example.com").await.unwrap();
    assert_eq!(res.status(), 201);
    wait_until_all_sent(&app, 1).await;
    let received = server.received();
    assert_eq!(received[0].to, ["ana.o'neil+bank@example.com"]);
}

/// The data directory and what tandem writes in it (the SQLite database with its `-wal` and
/// `-shm`, the dev keys, the `.eml` files) are for the service's user only, whatever the umask.
async fn the_data_directory_and_its_files_are_the_owners_only(backend: Backend) {
    use std::os::unix::fs::PermissionsExt;
    let app = TestApp::spawn_with(backend, quick_email).await;
    enqueue_one(&app, &invitation("ana@example.com", "en")).await;
    wait_until_all_sent(&app, 1).await;
    let mode = |path: &std::path::Path| {
        let metadata =
            std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        metadata.permissions().mode() & 0o777
    };
    let data = &app.config.data_dir;
    for dir in [data.clone(), data.join("dev"), data.join("mail")] {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    }
    let mut files = vec![
        data.join("dev/api-key"),
        data.join("dev/signing-key"),
        data.join("dev/invitation-secret-key"),
    ];
    files.extend(
        std::fs::read_dir(data.join("mail"))
            .unwrap()
            .map(|e| e.unwrap().path()),
    );
    if backend == Backend::Sqlite {
        for suffix in ["", "-wal", "-shm", ".lock"] {
            files.push(data.join(format!("tandem.sqlite3{suffix}")));
        }
    }
    assert!(
        files
            .iter()
            .any(|f| f.extension().is_some_and(|e| e == "eml"))
    );
    for file in files {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
}

/// Production refuses an `http://` OIDC discovery URL and an unencrypted relay, in
/// `check-config` and `serve` alike, naming the setting; the `allow_insecure_*` settings accept
/// them explicitly.
#[test]
fn production_refuses_plain_text_token_keys_and_relays_unless_allowed() {
    let dir = std::env::temp_dir().join(format!("tandem-insecure-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("tandem.toml");
    let write = |auth: &str, email: &str| {
        std::fs::write(
            &file,
            format!(
                "listen = \"127.0.0.1:0\"\ndata_dir = {data:?}\n\
                 [auth]\n{auth}\n\
                 [auth.oidc]\ndiscovery_url = \"http://127.0.0.1:9/.well-known/openid-configuration\"\naudience = \"tandem\"\n\
                 [[auth.api_keys]]\nname = \"web\"\nsha256 = \"{key}\"\n\
                 [invitations]\nsecret_key = \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\n\
                 [email]\n{email}\n\
                 [email.smtp]\nhost = \"127.0.0.1\"\ntls = \"none\"\n",
                data = dir.join("data"),
                key = "ab".repeat(32),
            ),
        )
        .unwrap();
    };
    let run = |command: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
            .args([command, "--config"])
            .arg(&file)
            .env_remove("TANDEM_CONFIG")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    write("", "");
    for command in ["check-config", "serve"] {
        let (ok, _, stderr) = run(command);
        assert!(!ok, "{command}");
        assert!(
            stderr.contains("auth.oidc.discovery_url")
                && stderr.contains("allow_insecure_oidc_http"),
            "{command}: {stderr}"
        );
    }
    write("allow_insecure_oidc_http = true", "");
    for command in ["check-config", "serve"] {
        let (ok, _, stderr) = run(command);
        assert!(!ok, "{command}");
        assert!(
            stderr.contains("email.smtp.tls") && stderr.contains("allow_insecure_smtp"),
            "{command}: {stderr}"
        );
    }
    write(
        "allow_insecure_oidc_http = true",
        "allow_insecure_smtp = true",
    );
    let (ok, stdout, stderr) = run("check-config");
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("configuration is valid (Production mode)"),
        "{stdout}"
    );
    assert!(stdout.contains("allow_insecure_smtp = true"), "{stdout}");
    std::fs::remove_dir_all(&dir).unwrap();
}

on_both_backends!(
    addresses_the_mailer_cannot_parse_are_refused_at_create,
    the_data_directory_and_its_files_are_the_owners_only,
    an_smtp_relay_receives_the_rendered_invitation,
    an_smtp_outage_delays_delivery_but_loses_and_duplicates_nothing,
    several_instances_share_the_queue_and_send_each_message_once,
    dev_mode_writes_eml_files_with_the_same_content,
    messages_nobody_can_render_or_address_are_given_up_and_the_rest_flow,
    a_recipient_the_relay_refuses_is_given_up_and_listed,
    a_message_failing_past_max_attempts_is_given_up,
    a_crashed_instances_lease_is_taken_over_when_it_expires,
    an_enqueue_wakes_the_worker_before_its_next_poll,
    one_wake_up_sends_a_backlog_of_many_batches,
    delivered_messages_are_deleted_after_the_retention_period,
    relay_credentials_are_used_and_never_recorded,
);
