//! The delivery worker: drains the email outbox in the background.
//!
//! Each round claims due messages with a lease, renders and sends them concurrently, and records
//! the outcome: `sent_at` on success; on failure one more attempt, the error, and a later
//! `next_attempt_at` (exponential backoff with jitter, capped). A message refused for good (SMTP
//! 5xx, or one that cannot be rendered or addressed) becomes a dead letter (`failed_at`) after
//! `email.max_refused_attempts`, and any message after `email.max_attempts`; dead letters are
//! kept, never deleted. Leases let several instances share the queue, and let a surviving one
//! take over what a crashed one had claimed.

use super::backoff::retry_delay;
use super::mailer::Mailer;
use super::message;
use super::templates::Templates;
use crate::config::EmailConfig;
use crate::domain::time::Timestamp;
use crate::store::outbox::{AfterFailure, ClaimedMessage, DeliveryQueue};
use anyhow::Context;
use lettre::message::Mailbox;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::task::{JoinHandle, JoinSet};

/// Wakes the worker at once, e.g. right after a transaction that enqueued a message commits.
/// Cheap to clone; a wake-up while the worker is busy is remembered, not lost.
#[derive(Clone, Default)]
pub struct MailWaker(Arc<Notify>);

impl MailWaker {
    pub fn wake(&self) {
        self.0.notify_one();
    }
}

/// A failed attempt, and whether trying again could ever succeed.
struct Failure {
    error: anyhow::Error,
    /// The same attempt would fail the same way: the relay refused the message for good (an
    /// SMTP 5xx reply), or it cannot be rendered or addressed.
    refused: bool,
}

impl Failure {
    fn refused(error: anyhow::Error) -> Self {
        Self {
            error,
            refused: true,
        }
    }

    /// A mailer's error is a refusal when the relay answered with a permanent (5xx) reply;
    /// anything else (no connection, a timeout, a 4xx reply, a full disk) may pass.
    fn from_mailer(error: anyhow::Error) -> Self {
        let refused = error.chain().any(|cause| {
            cause
                .downcast_ref::<lettre::transport::smtp::Error>()
                .is_some_and(lettre::transport::smtp::Error::is_permanent)
        });
        Self { error, refused }
    }
}

/// Longest error text kept in `last_error`.
const MAX_ERROR_CHARS: usize = 1000;

/// Times an outcome is recorded before it is left to the lease, the waits between them doubling
/// from `RECORD_RETRY_FIRST` (3 s in all).
const RECORD_ATTEMPTS: u32 = 5;
const RECORD_RETRY_FIRST: Duration = Duration::from_millis(200);

/// How often delivered messages past their retention are deleted.
const PURGE_EVERY: Duration = Duration::from_secs(3600);

pub struct DeliveryWorker {
    queue: Arc<dyn DeliveryQueue>,
    mailer: Arc<dyn Mailer>,
    templates: Arc<Templates>,
    from: Mailbox,
    settings: EmailConfig,
    /// This instance's lease owner id.
    owner: String,
    waker: MailWaker,
}

/// A running worker; `stop` ends it after the messages in hand are recorded.
pub struct RunningWorker {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl RunningWorker {
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if let Err(err) = self.task.await {
            tracing::error!(error = %err, "the email delivery worker ended abnormally");
        }
    }
}

impl DeliveryWorker {
    pub fn new(
        queue: Arc<dyn DeliveryQueue>,
        mailer: Arc<dyn Mailer>,
        settings: EmailConfig,
    ) -> anyhow::Result<Self> {
        let from = settings
            .from
            .parse()
            .with_context(|| format!("email.from {:?} is not a mailbox", settings.from))?;
        Ok(Self {
            queue,
            mailer,
            templates: Arc::new(Templates::load()?),
            from,
            settings,
            owner: uuid::Uuid::now_v7().to_string(),
            waker: MailWaker::default(),
        })
    }

    pub fn waker(&self) -> MailWaker {
        self.waker.clone()
    }

    pub fn spawn(self) -> RunningWorker {
        let (stop, stopped) = watch::channel(false);
        RunningWorker {
            stop,
            task: tokio::spawn(self.run(stopped)),
        }
    }

    async fn run(self, mut stopped: watch::Receiver<bool>) {
        let this = Arc::new(self);
        let poll = Duration::from_millis(this.settings.poll_interval_ms);
        tracing::info!(owner = %this.owner, "email delivery worker started");
        let mut next_purge = tokio::time::Instant::now();
        let mut more_due = false;
        loop {
            // Waiting first keeps start-up light; a backlog waits at most one poll interval.
            // After a full batch more may be due: go again without waiting.
            if !more_due {
                tokio::select! {
                    () = this.waker.0.notified() => {}
                    () = tokio::time::sleep(poll) => {}
                    changed = stopped.changed() => if changed.is_err() { break },
                }
            }
            if *stopped.borrow() {
                break;
            }
            if tokio::time::Instant::now() >= next_purge {
                this.purge_delivered().await;
                next_purge += PURGE_EVERY;
            }
            more_due = match this.deliver_due().await {
                Ok(claimed) => claimed >= this.settings.batch_size as usize,
                Err(err) => {
                    tracing::warn!(error = %describe(&err), "claiming due email failed");
                    false
                }
            };
        }
        tracing::info!("email delivery worker stopped");
    }

    /// One round: claims a batch and sends it concurrently. Returns how many were claimed.
    async fn deliver_due(self: &Arc<Self>) -> anyhow::Result<usize> {
        let now = Timestamp::now();
        let lease = self.lease();
        let claimed = self
            .queue
            .claim_due(
                &self.owner,
                now,
                now.plus_millis(lease.as_millis() as i64),
                self.settings.batch_size,
            )
            .await
            .context("claiming due messages")?;
        let count = claimed.len();
        let mut sends = JoinSet::new();
        for message in claimed {
            let this = Arc::clone(self);
            sends.spawn(async move { this.deliver(message).await });
        }
        while let Some(done) = sends.join_next().await {
            if let Err(err) = done {
                tracing::error!(error = %err, "an email delivery task ended abnormally");
            }
        }
        Ok(count)
    }

    /// Deletes delivered messages older than `retain_sent_days`: they hold personal data and
    /// are no longer needed.
    async fn purge_delivered(&self) {
        let days = self.settings.retain_sent_days;
        if days == 0 {
            return;
        }
        let before = Timestamp::now().plus_days(-i64::from(days));
        match self.queue.purge_sent(before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, days, "deleted delivered emails past retention"),
            Err(err) => tracing::warn!(error = %err, "deleting delivered emails failed"),
        }
    }

    fn lease(&self) -> Duration {
        Duration::from_secs(self.settings.lease_secs)
    }

    async fn deliver(&self, message: ClaimedMessage) {
        // Sending must end well within the lease, or another instance could take it over and
        // send a second copy.
        let outcome = match tokio::time::timeout(self.lease() / 2, self.send(&message)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Failure::from_mailer(anyhow::anyhow!(
                "sending took longer than half the lease ({} s)",
                self.settings.lease_secs / 2
            ))),
        };
        let sent_at = Timestamp::now();
        let failure = outcome.err().map(|failure| {
            let failures = u32::try_from(message.attempts.saturating_add(1)).unwrap_or(u32::MAX);
            let error: String = describe(&failure.error)
                .chars()
                .take(MAX_ERROR_CHARS)
                .collect();
            let give_up = failures >= self.settings.max_attempts
                || (failure.refused && failures >= self.settings.max_refused_attempts);
            if give_up {
                tracing::error!(
                    message_id = %message.id,
                    kind = %message.kind,
                    attempts = failures,
                    refused = failure.refused,
                    error = %error,
                    "email not sent; given up (see tandem mail-queue)"
                );
                return (error, AfterFailure::GiveUp(Timestamp::now()));
            }
            let delay = retry_delay(
                failures,
                Duration::from_millis(self.settings.retry_min_ms),
                Duration::from_millis(self.settings.retry_max_ms),
                rand::random::<f64>(),
            );
            tracing::warn!(
                message_id = %message.id,
                kind = %message.kind,
                attempts = failures,
                refused = failure.refused,
                retry_in_ms = delay.as_millis() as u64,
                error = %error,
                "email not sent; will retry"
            );
            (
                error,
                AfterFailure::RetryAt(Timestamp::now().plus_millis(delay.as_millis() as i64)),
            )
        });
        if failure.is_none() {
            tracing::info!(message_id = %message.id, kind = %message.kind, "email sent");
        }
        // An outcome left unrecorded keeps the message leased for the whole lease, and a sent
        // one goes out again when the lease runs out: a brief database problem (a connection
        // that took too long to come free) is worth waiting out.
        let mut wait = RECORD_RETRY_FIRST;
        for attempt in 1..=RECORD_ATTEMPTS {
            let recorded = match &failure {
                None => self.queue.mark_sent(&message.id, sent_at).await,
                Some((error, after)) => {
                    self.queue
                        .record_failure(&message.id, &self.owner, error, *after)
                        .await
                }
            };
            match recorded {
                Ok(()) => return,
                Err(err) if attempt == RECORD_ATTEMPTS => {
                    // The lease runs out and the message is claimed again: retried, never lost.
                    tracing::error!(message_id = %message.id, error = %err, "recording an email outcome failed");
                }
                Err(err) => {
                    tracing::warn!(message_id = %message.id, error = %err, "recording an email outcome failed; trying again");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
            }
        }
    }

    async fn send(&self, claimed: &ClaimedMessage) -> Result<(), Failure> {
        let mime = self.build(claimed).map_err(Failure::refused)?;
        self.mailer
            .send(&claimed.id, &mime)
            .await
            .map_err(Failure::from_mailer)
    }

    fn build(&self, claimed: &ClaimedMessage) -> anyhow::Result<lettre::Message> {
        let payload: serde_json::Value =
            serde_json::from_str(&claimed.payload).context("the payload is not JSON")?;
        let rendered = self
            .templates
            .render(&claimed.kind, &claimed.locale, &payload)?;
        message::build(&claimed.id, &self.from, &claimed.recipient, rendered)
    }
}

/// The error and its causes on one line, skipping a cause its parent already quoted (lettre's
/// errors include their source in their own text).
fn describe(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&cause);
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;
    use lettre::Message;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// One invitation email to hand out, whose `mark_sent` fails its first `failing_marks`
    /// calls.
    struct FlakyQueue {
        message: Mutex<Option<ClaimedMessage>>,
        failing_marks: u32,
        marks: AtomicU32,
        marked: Mutex<Option<String>>,
    }

    #[async_trait::async_trait]
    impl DeliveryQueue for FlakyQueue {
        async fn claim_due(
            &self,
            _owner: &str,
            _now: Timestamp,
            _lease_until: Timestamp,
            _limit: u32,
        ) -> Result<Vec<ClaimedMessage>, StoreError> {
            Ok(self.message.lock().unwrap().take().into_iter().collect())
        }

        async fn mark_sent(&self, id: &str, _now: Timestamp) -> Result<(), StoreError> {
            if self.marks.fetch_add(1, Ordering::SeqCst) < self.failing_marks {
                return Err(StoreError::Other(anyhow::anyhow!(
                    "no connection came free"
                )));
            }
            *self.marked.lock().unwrap() = Some(id.to_owned());
            Ok(())
        }

        async fn record_failure(
            &self,
            _id: &str,
            _owner: &str,
            error: &str,
            _after: AfterFailure,
        ) -> Result<(), StoreError> {
            panic!("the email was sent, yet a failure was recorded: {error}")
        }

        async fn purge_sent(&self, _before: Timestamp) -> Result<u64, StoreError> {
            Ok(0)
        }
    }

    #[derive(Default)]
    struct CountingMailer(AtomicU32);

    #[async_trait::async_trait]
    impl Mailer for CountingMailer {
        async fn send(&self, _id: &str, _message: &Message) -> anyhow::Result<()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_delivery_is_recorded_through_brief_database_failures() {
        let id = "01a20f5e-84cb-73cf-a1ce-e61e6073940e";
        let queue = Arc::new(FlakyQueue {
            message: Mutex::new(Some(ClaimedMessage {
                id: id.to_owned(),
                kind: "invitation".to_owned(),
                recipient: "ana@example.com".to_owned(),
                locale: "en".to_owned(),
                payload: serde_json::json!({
                    "invitationId": id,
                    "acceptUrl": "https://bank.example/invitations/accept",
                    "inviterFullName": "Max Pike",
                    "invitationType": "joint",
                    "expiresAt": "2026-12-23T18:05:00.000Z",
                })
                .to_string(),
                attempts: 0,
            })),
            failing_marks: 2,
            marks: AtomicU32::new(0),
            marked: Mutex::new(None),
        });
        let mailer = Arc::new(CountingMailer::default());
        let settings = EmailConfig {
            from: "Example Bank <no-reply@bank.example>".to_owned(),
            ..EmailConfig::default()
        };
        let worker = Arc::new(
            DeliveryWorker::new(Arc::clone(&queue) as _, Arc::clone(&mailer) as _, settings)
                .unwrap(),
        );
        assert_eq!(worker.deliver_due().await.unwrap(), 1);
        assert_eq!(mailer.0.load(Ordering::SeqCst), 1, "sent once");
        assert_eq!(
            queue.marks.load(Ordering::SeqCst),
            3,
            "recorded on the third try"
        );
        assert_eq!(queue.marked.lock().unwrap().as_deref(), Some(id));
    }

    #[test]
    fn errors_read_as_one_line_without_repeats() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let err = anyhow::Error::new(io)
            .context("Connection error: refused")
            .context("sending through the SMTP relay smtp:587");
        assert_eq!(
            describe(&err),
            "sending through the SMTP relay smtp:587: Connection error: refused"
        );
    }
}
