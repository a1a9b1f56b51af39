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

use crate::config::{Config, Mode};
use crate::store::Db;
use crate::store::outbox::SqlOutbox;
use mailer::{FileMailer, Mailer, SmtpMailer};
use std::sync::Arc;

/// The worker the configuration asks for: SMTP with `[email.smtp]`, else `.eml` files under
/// `<data_dir>/mail/`.
pub fn worker(config: &Config, db: Db) -> anyhow::Result<DeliveryWorker> {
    let mailer: Arc<dyn Mailer> = match &config.email.smtp {
        Some(smtp) => Arc::new(SmtpMailer::new(smtp)?),
        None => {
            let dir = config.data_dir.join("mail");
            if config.mode == Mode::Production {
                tracing::warn!(
                    directory = %dir.display(),
                    "no [email.smtp] relay configured: emails are written as files, not sent"
                );
            }
            Arc::new(FileMailer::new(dir))
        }
    };
    DeliveryWorker::new(Arc::new(SqlOutbox::new(db)), mailer, config.email.clone())
}
