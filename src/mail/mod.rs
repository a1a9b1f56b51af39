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
use crate::store::outbox::{QueueReport, QueuedMessage, SqlOutbox};
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

/// The text `tandem mail-queue` prints: a summary line and one line per message, for the
/// messages waiting and then for the dead letters (if any). Never a recipient or a payload.
pub fn queue_report(report: &QueueReport) -> String {
    use std::fmt::Write;
    let waiting = &report.oldest_waiting;
    let failing = waiting.iter().filter(|m| m.attempts > 0).count();
    let mut out = format!("{} email(s) waiting for delivery", report.waiting);
    if report.waiting > 0 {
        let _ = write!(
            out,
            "; of the {} oldest, {failing} failed at least once",
            waiting.len()
        );
    }
    out.push('\n');
    for m in waiting {
        let next = if m.leased {
            "sending now".to_owned()
        } else {
            format!("next {}", m.next_attempt_at)
        };
        out.push_str(&message_line(m, &next));
    }
    if report.failed > 0 {
        let _ = writeln!(
            out,
            "{} email(s) failed and given up, kept and not retried (`tandem mail-queue --retry-failed` \
             queues them again); the {} latest:",
            report.failed,
            report.latest_failed.len()
        );
        for m in &report.latest_failed {
            let failed = m
                .failed_at
                .map(|at| format!("failed {at}"))
                .unwrap_or_default();
            out.push_str(&message_line(m, &failed));
        }
    }
    out
}

fn message_line(m: &QueuedMessage, state: &str) -> String {
    format!(
        "{id}  {kind}/{locale}  queued {created}  attempts {attempts}  {state}{error}\n",
        id = m.id,
        kind = m.kind,
        locale = m.locale,
        created = m.created_at,
        attempts = m.attempts,
        error = m
            .last_error
            .as_deref()
            .map(|e| format!("  last error: {e}"))
            .unwrap_or_default(),
    )
}
