//! Email delivery: templates, mailers (SMTP, dev `.eml` files) and the outbox delivery worker.
//!
//! Requests never send email themselves: they enqueue into the outbox in their own transaction
//! (`store::outbox::enqueue`) and may wake the worker (`MailWaker`), which delivers in the
//! background.

pub mod backoff;
pub mod delivery;
pub mod mailer;
pub mod message;
pub mod templates;

pub use delivery::{DeliveryWorker, MailWaker, RunningWorker};

use crate::config::Config;
use crate::store::Db;
use crate::store::outbox::{QueuedMessage, SqlOutbox};
use mailer::{FileMailer, Mailer, SmtpMailer};
use std::sync::Arc;

/// The worker the configuration asks for: SMTP with `[email.smtp]`, else (dev mode) `.eml` files
/// under `<data_dir>/mail/`.
pub fn worker(config: &Config, db: Db) -> anyhow::Result<DeliveryWorker> {
    let mailer: Arc<dyn Mailer> = match &config.email.smtp {
        Some(smtp) => Arc::new(SmtpMailer::new(smtp)?),
        // Dev mode: production configurations must name a relay (`Config::check`).
        None => Arc::new(FileMailer::new(config.data_dir.join("mail"))),
    };
    DeliveryWorker::new(Arc::new(SqlOutbox::new(db)), mailer, config.email.clone())
}

/// The text `tandem mail-queue` prints: a summary line, then one line per message.
pub fn queue_report((total, messages): &(i64, Vec<QueuedMessage>)) -> String {
    use std::fmt::Write;
    let failing = messages.iter().filter(|m| m.attempts > 0).count();
    let mut out = format!("{total} email(s) waiting for delivery");
    if *total > 0 {
        let _ = write!(
            out,
            "; of the {} oldest, {failing} failed at least once",
            messages.len()
        );
    }
    out.push('\n');
    for m in messages {
        let _ = writeln!(
            out,
            "{id}  {kind}/{locale}  queued {created}  attempts {attempts}  {next}{error}",
            id = m.id,
            kind = m.kind,
            locale = m.locale,
            created = m.created_at,
            attempts = m.attempts,
            next = if m.leased {
                "sending now".to_owned()
            } else {
                format!("next {}", m.next_attempt_at)
            },
            error = m
                .last_error
                .as_deref()
                .map(|e| format!("  last error: {e}"))
                .unwrap_or_default(),
        );
    }
    out
}
